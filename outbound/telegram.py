"""Telegram delivery: staff answers and notifications to a customer's chat with the bot.

An outbox row for Telegram has the chat id as its recipient (the customer's Telegram id:
a private chat's id is the user's). What goes out is the words alone (`content`; the
mail form with its separator and quoted history is for email), as plain text split into
messages of at most 4096 characters at line breaks, then the files as documents.

Telegram's answers map onto the outbox's outcomes: 429 is temporary and carries the wait
Telegram asked for; a blocked bot or an unknown chat makes the customer unreachable here,
and the message goes by their next channel (or is parked with the reason); network
trouble and Telegram's 5xx are temporary.
"""

from __future__ import annotations

import logging

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import (
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
)

from helpgate.config.schema import Config, TelegramConfig
from helpgate.outbound.base import DeliveryResult, Outgoing
from helpgate.outbound.notify import SHARE_CONTACT

log = logging.getLogger("helpgate.telegram")
# sendMessage takes at most 4096 characters, counted as Telegram counts (UTF-16 units).
MAX_TEXT = 4096


def transport(config: Config) -> TelegramTransport | None:
    """The Telegram transport, when a bot token is configured ([telegram] token)."""
    return TelegramTransport(config.telegram) if config.telegram.token else None


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Parts of at most `limit` characters, cut at line breaks where a line fits, a line
    longer than that cut where it must."""
    parts: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while _units(line) > limit:       # one line longer than a message
            cut = limit
            while _units(line[:cut]) > limit:
                cut -= 1
            if current:
                parts.append(current)
                current = ""
            parts.append(line[:cut])
            line = line[cut:]
        if _units(current + line) > limit:
            parts.append(current)
            current = ""
        current += line
    if current:
        parts.append(current)
    # A break at the end of a part is invisible in a chat; an all-blank part is refused.
    return [part.rstrip("\n") for part in parts if part.strip()]


def keyboard(buttons) -> InlineKeyboardMarkup | ReplyKeyboardMarkup | None:
    """Rows of (label, data) -> inline buttons; pressing one sends us a callback query
    with the data (channels/telegram/parse.py reads it as a ChatAction). The button that
    asks for the phone number is a keyboard button instead (Telegram allows
    request_contact only there): pressing it sends the account's contact card."""
    if not buttons:
        return None
    if any(data == SHARE_CONTACT for row in buttons for _, data in row):
        return ReplyKeyboardMarkup(keyboard=[
            [KeyboardButton(text=label, request_contact=True) for label, data in row
             if data == SHARE_CONTACT] for row in buttons], resize_keyboard=True,
            one_time_keyboard=True)
    return InlineKeyboardMarkup(inline_keyboard=[
        [InlineKeyboardButton(text=label[:64], callback_data=data[:64]) for label, data in row]
        for row in buttons])


class TelegramTransport:
    channel = "telegram"

    def __init__(self, config: TelegramConfig) -> None:
        self.config = config
        api = TelegramAPIServer.from_base(config.api_base_url)
        self.bot = Bot(config.token, session=AiohttpSession(api=api))

    async def send(self, message: Outgoing) -> DeliveryResult:
        chat_id = message.recipient
        parts = split_text(message.content or message.text)
        done = 0
        markup = keyboard(message.buttons)
        try:
            for index, part in enumerate(parts):
                # The buttons go under the last part, where the question is.
                await self.bot.send_message(
                    chat_id, part, reply_markup=markup if index == len(parts) - 1 else None)
                done += 1
            for file in message.attachments:
                await self.bot.send_document(
                    chat_id, BufferedInputFile(file.data, filename=file.filename))
                done += 1
        except TelegramRetryAfter as exc:
            result = DeliveryResult.retry(
                f"Telegram rate limit: retry after {exc.retry_after} s",
                retry_after=float(exc.retry_after))
        except TelegramForbiddenError as exc:
            # For good: the message goes by the customer's next channel (outbound/outbox.py).
            return DeliveryResult.unreachable_here(
                f"the customer blocked the bot or left the chat ({exc.message})")
        except TelegramEntityTooLarge as exc:
            result = DeliveryResult.failed(f"a file is too large for Telegram ({exc.message})")
        except TelegramBadRequest as exc:
            if "chat not found" in exc.message.lower():
                return DeliveryResult.unreachable_here(
                    f"chat {chat_id} not found: the customer never started the bot or "
                    f"blocked it ({exc.message})")
            result = DeliveryResult.failed(f"Telegram refused the message: {exc.message}")
        except (TelegramNetworkError, TelegramServerError, aiohttp.ClientError,
                TimeoutError) as exc:
            result = DeliveryResult.retry(f"Telegram unreachable: {exc}")
        except TelegramAPIError as exc:
            result = DeliveryResult.failed(f"Telegram refused the message: {exc.message}")
        else:
            return DeliveryResult.ok()
        if done and result.temporary:
            # Part of it is in the chat already, and the outbox keeps no progress within a
            # row: retrying would send those parts twice. Parked with what happened;
            # `helpgate outbox retry ID` sends it whole again if staff so decide.
            total = len(parts) + len(message.attachments)
            return DeliveryResult.failed(
                f"{done} of {total} parts delivered, then: {result.error}; not retried, so "
                "that nothing is sent twice")
        return result

    async def close(self) -> None:
        await self.bot.session.close()
