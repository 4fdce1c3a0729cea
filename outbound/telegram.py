"""Telegram delivery: staff answers and notifications to a customer's chat with the bot.

An outbox row for Telegram has the chat id as its recipient (the customer's Telegram id:
a private chat's id is the user's). A post in a ticket's staff topic (kind "topic") goes
to the staff group, in the ticket's topic: made on the first post (named by the row's
subject), made again when Telegram says it is gone (staff deleted it). Every message
that goes out is named in the result (chat, message id) for the outbox to record.

What goes out is the words alone (`content`; the mail form with its separator and
quoted history is for email), as plain text split into messages of at most 4096
characters at line breaks, then the files as documents.

Telegram's answers map onto the outbox's outcomes: 429 is temporary and carries the wait
Telegram asked for; a blocked bot or an unknown chat makes the customer unreachable here,
and the message goes by their next channel (or is parked with the reason); network
trouble and Telegram's 5xx are temporary.
"""

from __future__ import annotations

import dataclasses
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
from helpgate.outbound.base import Outgoing
from helpgate.outbound.notify import SHARE_CONTACT
from helpgate.ticketstore.outbox import DeliveryResult

log = logging.getLogger("helpgate.telegram")
# sendMessage takes at most 4096 characters, counted as Telegram counts (UTF-16 units).
MAX_TEXT = 4096
# A forum topic's name: at most 128 characters.
MAX_TOPIC_NAME = 128
# The outbox kind of a post in a ticket's staff topic (outbound/staff_topics.py).
TOPIC = "topic"
# What Telegram answers when a post names a topic that was deleted.
TOPIC_GONE = ("message thread not found", "topic_deleted", "topic_id_invalid")


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
        if message.kind == TOPIC:
            return await self._post_in_topic(message)
        return await self._send(message, message.recipient, None)

    async def _post_in_topic(self, message: Outgoing) -> DeliveryResult:
        """A post in the ticket's staff topic: the topic is made when the ticket has none
        there yet, and made again when Telegram says staff deleted it."""
        made = None
        thread = message.thread_id
        if thread is None:
            made, failed = await self._make_topic(message)
            if failed is not None:
                return failed
            thread = made[1]
        result = await self._send(message, message.recipient, thread)
        if made is None and result.error and not result.posted and _topic_gone(result.error):
            log.info("telegram: topic %s of the staff group is gone; making it again", thread)
            made, failed = await self._make_topic(message)
            if failed is not None:
                return failed
            result = await self._send(message, message.recipient, made[1])
        return dataclasses.replace(result, topic=made) if made else result

    async def _make_topic(self, message: Outgoing
                          ) -> tuple[tuple[int, int] | None, DeliveryResult | None]:
        try:
            topic = await self.bot.create_forum_topic(message.recipient,
                                                      topic_name(message.subject or ""))
        except TelegramRetryAfter as exc:
            return None, DeliveryResult.retry(
                f"Telegram rate limit: retry after {exc.retry_after} s",
                retry_after=float(exc.retry_after))
        except (TelegramNetworkError, TelegramServerError, aiohttp.ClientError,
                TimeoutError) as exc:
            return None, DeliveryResult.retry(f"Telegram unreachable: {exc}")
        except TelegramAPIError as exc:
            return None, DeliveryResult.failed(
                f"cannot make a topic in the staff group {message.recipient} ({exc.message}): "
                "it must be a supergroup with Topics on, and the bot an administrator "
                "allowed to manage topics (`helpgate telegram check` tells)")
        return (int(message.recipient), topic.message_thread_id), None

    async def _send(self, message: Outgoing, chat_id: str, thread: int | None
                    ) -> DeliveryResult:
        parts = split_text(message.content or message.text)
        posted: list[tuple[int, int]] = []
        staff = message.kind == TOPIC
        markup = keyboard(message.buttons)
        try:
            for index, part in enumerate(parts):
                # The buttons go under the last part, where the question is.
                sent = await self.bot.send_message(
                    chat_id, part, message_thread_id=thread,
                    reply_markup=markup if index == len(parts) - 1 else None)
                posted.append((sent.chat.id, sent.message_id))
            for file in message.attachments:
                sent = await self.bot.send_document(
                    chat_id, BufferedInputFile(file.data, filename=file.filename),
                    message_thread_id=thread)
                posted.append((sent.chat.id, sent.message_id))
        except TelegramRetryAfter as exc:
            result = DeliveryResult.retry(
                f"Telegram rate limit: retry after {exc.retry_after} s",
                retry_after=float(exc.retry_after))
        except TelegramForbiddenError as exc:
            if staff:
                result = DeliveryResult.failed(
                    f"the bot may not post in the staff group {chat_id} ({exc.message}): "
                    "add it to the group again, as an administrator")
            else:
                # For good: the message goes by the customer's next channel
                # (outbound/outbox.py).
                return DeliveryResult.unreachable_here(
                    f"the customer blocked the bot or left the chat ({exc.message})")
        except TelegramEntityTooLarge as exc:
            result = DeliveryResult.failed(f"a file is too large for Telegram ({exc.message})")
        except TelegramBadRequest as exc:
            if "chat not found" in exc.message.lower() and not staff:
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
            return DeliveryResult.ok(tuple(posted))
        if posted and result.temporary:
            # Part of it is in the chat already, and the outbox keeps no progress within a
            # row: retrying would send those parts twice. Parked with what happened;
            # `helpgate outbox retry ID` sends it whole again if staff so decide.
            total = len(parts) + len(message.attachments)
            result = DeliveryResult.failed(
                f"{len(posted)} of {total} parts delivered, then: {result.error}; not "
                "retried, so that nothing is sent twice")
        return dataclasses.replace(result, posted=tuple(posted))

    async def close(self) -> None:
        await self.bot.session.close()


def topic_name(name: str) -> str:
    """A topic's name as Telegram takes it: 1-128 characters."""
    name = " ".join(name.split()) or "#"
    while _units(name) > MAX_TOPIC_NAME:
        name = name[:-1]
    return name


def _topic_gone(error: str) -> bool:
    """Telegram's answer to a post in a topic someone deleted."""
    error = error.lower()
    return any(sign in error for sign in TOPIC_GONE)
