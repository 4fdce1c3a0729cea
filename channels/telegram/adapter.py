"""The Telegram bot as an inbound adapter: polling or webhook, nothing lost or doubled.

Polling runs its own loop rather than aiogram's `Dispatcher.start_polling`, whose offset
moves on before the handlers have finished: here an update is confirmed to Telegram (by
asking with a higher offset) only after the pipeline has committed it and the cursor
(`telegram:<bot id>`) has moved. A crash in between delivers the batch again, and the
dedupe key (`update:N`) makes that a duplicate, not a second comment.

Webhook mode answers Telegram's POST with 200 only once the update is stored; an error
answers 500, so Telegram sends it again. Posts without our secret get 401.

Each update is kept as an envelope (channels/telegram/parse.py) holding the update and
its files, downloaded here (up to the Bot API's 20 MB); a file that is too big or cannot
be fetched leaves a line in the message saying so, never a lost message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hmac
import logging
import os
from collections.abc import Callable

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import Update
from aiohttp import web

from helpgate.channels.base import ChannelStartError, Services
from helpgate.channels.telegram import parse, staff
from helpgate.config.schema import Config, TelegramConfig, Texts

log = logging.getLogger("helpgate.telegram")
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# After a failure (network, Telegram down, the database away) the loop waits this long,
# doubling up to the most.
MIN_BACKOFF, MAX_BACKOFF = 0.5, 30.0
DOWNLOADS = 8
# Errors of Telegram or the way to it that pass: the batch is fetched again later.
PASSING = (TelegramNetworkError, TelegramServerError, TelegramRetryAfter, aiohttp.ClientError,
           TimeoutError)
BIND_FIXES = {
    errno.EADDRINUSE: "another program listens there: stop it, or set another "
                      "telegram.webhook_port",
    errno.EACCES: "ports below 1024 need privileges: set telegram.webhook_port to 1024 or "
                  "above (and let the reverse proxy forward to it)",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's: set "
                         "telegram.webhook_host",
}
BAD_TOKEN = ("telegram: the Bot API refused telegram.token (401 Unauthorized): copy the "
             "token again from @BotFather (/mybots -> API Token)")


def _default_texts(words: str) -> Texts:
    config = Config()
    return config.text(config.customer_language(words))


def _default_greeting(language_code: str) -> Texts:
    return Config().text("ru" if language_code.startswith("ru") else "en")


class TelegramAdapter:
    """One bot. `start()` checks the token and starts polling or the webhook server;
    `stop()` lets the batch in hand be stored, then closes."""

    def __init__(self, config: TelegramConfig, services: Services,
                 max_size: int = 50 * 1024 * 1024,
                 texts: Callable[[str], Texts] | None = None,
                 greeting: Callable[[str], Texts] | None = None) -> None:
        self.config = config
        self.services = services
        # At most this many bytes of files are downloaded for one update.
        self.max_size = max_size
        # The texts in the customer's language (judged from their words), for the line
        # that says a file could not be received.
        self.texts = texts or _default_texts
        # The texts for a customer who has written nothing yet, by their Telegram
        # language_code (the greeting after /start).
        self.greeting = greeting or _default_greeting
        self.bot_id = int(config.token.split(":", 1)[0])
        self.cursor_key = f"telegram:{self.bot_id}"
        self.min_backoff = MIN_BACKOFF
        self.port: int | None = None          # webhook mode: the port bound
        self.username: str | None = None
        self.bot: Bot | None = None
        self._stopping = asyncio.Event()
        self._loop: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        self._ready = False
        # At most this many files are fetched at once.
        self._downloads = asyncio.Semaphore(DOWNLOADS)

    @property
    def name(self) -> str:
        who = f"@{self.username}" if self.username else f"bot {self.bot_id}"
        return f"telegram {who} ({self.config.mode})"

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        api = TelegramAPIServer.from_base(self.config.api_base_url)
        self.bot = Bot(self.config.token, session=AiohttpSession(api=api))
        self._stopping.clear()
        try:
            await self._hello()
        except TelegramUnauthorizedError:
            await self._close_bot()
            raise ChannelStartError(BAD_TOKEN) from None
        except PASSING as exc:  # Telegram unreachable now: the loop keeps trying
            log.warning("telegram: cannot reach the Bot API at start (%s); retrying", exc)
        if self.config.mode == "webhook":
            try:
                await self._listen()
            except BaseException:
                await self._close_bot()
                raise
            if not self._ready:
                self._loop = asyncio.create_task(self._until_ready(), name=self.name)
        else:
            self._loop = asyncio.create_task(self._poll(), name=self.name)

    async def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None:
            await self._loop
            self._loop = None
        if self._runner is not None:
            # Requests being stored finish and get their answer before the server closes.
            await self._runner.cleanup()
            self._runner = None
        await self._close_bot()

    async def _close_bot(self) -> None:
        if self.bot is not None:
            await self.bot.session.close()
            self.bot = None

    async def _hello(self) -> None:
        """Who we are; in polling mode no webhook may be set (it blocks getUpdates with
        409), in webhook mode ours is."""
        me = await self.bot.get_me()
        self.username = me.username
        log.info("telegram: bot @%s; %s", me.username,
                 "reads all group messages" if me.can_read_all_group_messages
                 else "privacy mode: in groups sees only commands and replies to it")
        if self.config.mode == "webhook":
            await self.bot.set_webhook(self.config.webhook_url,
                                       secret_token=self.config.webhook_secret,
                                       allowed_updates=parse.ALLOWED_UPDATES)
        else:
            await self.bot.delete_webhook(drop_pending_updates=False)
        self._ready = True
        await self._staff_hello(me)

    async def _staff_hello(self, me) -> None:
        """What the bot may do in the staff group, in the log; it never stops the start
        (the bot serves customers without it)."""
        try:
            await staff.report(self.bot, me, self.config.staff_chat_id)
        except (TelegramAPIError, *PASSING) as exc:
            log.warning("telegram: cannot look at the staff group %s: %s",
                        self.config.staff_chat_id, exc)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _until_ready(self) -> None:
        """Webhook mode when Telegram was away at start: set the webhook once it is back."""
        backoff = self.min_backoff
        while not self._ready and not self._stopping.is_set():
            await self._pause(backoff)
            try:
                await self._hello()
            except (*PASSING, TelegramAPIError) as exc:
                log.warning("telegram: setting the webhook failed (%s); retrying", exc)
                backoff = min(backoff * 2, MAX_BACKOFF)

    # ---- polling ---------------------------------------------------------------------

    async def _poll(self) -> None:
        backoff = self.min_backoff
        cursor: int | None = None
        loaded = False
        while not self._stopping.is_set():
            try:
                if not self._ready:
                    await self._hello()
                if not loaded:
                    kept = await self.services.cursors.get(self.cursor_key)
                    cursor, loaded = (kept[1] if kept else None), True
                updates = await self._next_batch(cursor)
                if updates:   # stored before the next getUpdates confirms them
                    await self._store([self._as_dict(u) for u in updates])
                    cursor = updates[-1].update_id
                    await self.services.cursors.set(self.cursor_key, None, cursor)
                backoff = self.min_backoff
            except Exception as exc:
                expected = isinstance(exc, (*PASSING, TelegramAPIError))
                log.log(logging.WARNING if expected else logging.ERROR,
                        "telegram: %s: %s; trying again in %.1f s", type(exc).__name__, exc,
                        backoff, exc_info=not expected)
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _next_batch(self, cursor: int | None) -> list[Update]:
        """The next updates, or [] once stopping: a long poll in progress is given up
        (what it would have returned stays unconfirmed at Telegram)."""
        timeout = self.config.polling_timeout
        call = asyncio.ensure_future(self.bot.get_updates(
            offset=None if cursor is None else cursor + 1, timeout=timeout,
            allowed_updates=parse.ALLOWED_UPDATES, request_timeout=timeout + 15))
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({call, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not call.done():
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await call
            return []
        return call.result()

    @staticmethod
    def _as_dict(update: Update) -> dict:
        # The update as Telegram sent it: aiogram keeps every field it was given.
        return update.model_dump(mode="json", exclude_unset=True, by_alias=True)

    # ---- storing ---------------------------------------------------------------------

    async def _store(self, updates: list[dict]) -> None:
        """Updates -> envelopes -> the pipeline; returns once they are committed."""
        kept: list[tuple[dict, bool]] = []     # (update, written in the staff group)
        queries = []
        for update in updates:
            kind = parse.update_kind(update)
            if kind == "callback_query":
                queries.append(update[kind]["id"])
            if staff.in_staff_chat(update, self.config.staff_chat_id):
                if self._staff_wanted(update):
                    kept.append((update, True))
                continue
            reason = parse.unhandled(update)
            if reason is not None:
                log.info("telegram: update %s skipped: %s is not handled yet",
                         update.get("update_id"), reason)
                continue
            message = update[kind]
            if kind in parse.MESSAGE_KINDS and message["chat"].get("type") in parse.GROUPS \
                    and not parse.addressed(message, self.bot_id, self.username):
                continue   # a group's talk among its members, not to the bot
            if parse.command(message) == ("start", "") and "message" in update:
                await self._greet(message)  # pressing Start asks nothing yet
                continue
            kept.append((update, False))
        # The batch's files are fetched side by side (a few at a time), not one by one.
        # (A task group: when one fails, the rest are cancelled and the batch is fetched
        # again.)
        try:
            async with asyncio.TaskGroup() as group:
                fetching = [group.create_task(self._files(update)) for update, _ in kept]
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        raws = [staff.envelope(update, task.result()) if in_staff
                else parse.envelope(update, task.result(), self.username)
                for (update, in_staff), task in zip(kept, fetching, strict=True)]
        if raws:
            messages = await self.services.parse_many(parse.CHANNEL, raws)
            await self.services.ingest(messages, self.config.ticket_type)
        for query_id in queries:
            await self._answer_query(query_id)

    async def _answer_query(self, query_id: str) -> None:
        """Stop the pressed button's spinner once the press is stored (the bot's answer
        follows as a message). A query answered late or twice (a batch fetched again
        after a crash) is refused by Telegram: nothing is lost by that."""
        try:
            await self.bot.answer_callback_query(query_id)
        except (TelegramAPIError, *PASSING) as exc:
            log.debug("telegram: callback query %s not answered: %s", query_id, exc)

    @staticmethod
    def _staff_wanted(update: dict) -> bool:
        """Whether a message in the staff group is a staff action to keep."""
        reason = staff.unhandled(update)
        if reason is not None:
            log.info("telegram: update %s of the staff group skipped: %s",
                     update.get("update_id"), reason)
        return reason is None

    async def _greet(self, message: dict) -> None:
        """Answer /start with what to do; a greeting that fails is only logged (the
        customer's next message is what matters, and it is stored as any)."""
        code = (message.get("from") or {}).get("language_code") or ""
        try:
            await self.bot.send_message(message["chat"]["id"],
                                        self.greeting(code).bot_greeting)
        except (TelegramAPIError, *PASSING) as exc:
            log.warning("telegram: no greeting to %s: %s", message["chat"]["id"], exc)

    async def _files(self, update: dict) -> dict[str, dict]:
        message = update[parse.update_kind(update)]
        words = message.get("text") or message.get("caption") or ""
        budget = self.max_size
        files: dict[str, dict] = {}
        for ref in parse.files_of(message):
            entry = {"name": ref["name"], "mime": ref["mime"]}
            size = ref.get("file_size") or 0
            limit = min(parse.DOWNLOAD_LIMIT, budget)
            if size > limit:
                entry.update(too_big=size, note=parse.too_big_note(
                    ref["name"], size, self.texts(words)))
            else:
                try:
                    data = await self._download(ref["file_id"])
                except PASSING:
                    raise      # Telegram away: the whole batch is fetched again
                except TelegramAPIError as exc:
                    if "too big" in exc.message.lower():
                        entry.update(too_big=size or parse.DOWNLOAD_LIMIT + 1,
                                     note=parse.too_big_note(ref["name"], size, self.texts(words)))
                    else:
                        entry.update(failed=exc.message, note=parse.failed_note(
                            ref["name"], exc.message, self.texts(words)))
                else:
                    budget -= len(data)
                    entry["data_b64"] = base64.b64encode(data).decode("ascii")
            files[ref["file_unique_id"]] = entry
        return files

    async def _download(self, file_id: str) -> bytes:
        async with self._downloads:
            file = await self.bot.get_file(file_id)
            data = await self.bot.download_file(file.file_path, timeout=120)
            return data.read()

    # ---- webhook ---------------------------------------------------------------------

    async def _listen(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(self.config.webhook_path, self._on_post)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=30)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.webhook_host, self.config.webhook_port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            fix = BIND_FIXES.get(exc.errno, "check telegram.webhook_host and webhook_port")
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ChannelStartError(
                f"cannot listen on {self.config.webhook_host}:{self.config.webhook_port} "
                f"(telegram webhook): {reason}; {fix}") from None
        self.port = self._runner.addresses[0][1]
        log.info("%s listening on %s:%s%s", self.name, self.config.webhook_host, self.port,
                 self.config.webhook_path)

    async def _on_post(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self.config.webhook_secret.encode()):
            log.warning("telegram: webhook post from %s without our secret refused",
                        request.remote)
            return web.Response(status=401, text="unauthorized")
        try:
            update = await request.json()
            int(update["update_id"])
        except (ValueError, TypeError, KeyError):
            return web.Response(status=400, text="not a Telegram update")
        try:
            await self._store([update])
        except Exception as exc:  # not stored: Telegram sends it again later
            log.warning("telegram: update %s not stored (%s: %s); Telegram will resend it",
                        update.get("update_id"), type(exc).__name__, exc)
            return web.Response(status=500, text="try again")
        return web.Response(text="ok")
