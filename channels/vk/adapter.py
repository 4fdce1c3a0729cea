"""A VK community bot read into helpgate (R-CH-4): long poll or the Callback API.

Long poll, in this order, which is what makes it safe:

1. ask VK for the events after the cursor (`a_check` with the stored ts);
2. fetch their files and keep each event as a raw record (channels/vk/parse.py);
3. store them through the pipeline — committed before anything else happens;
4. move the cursor ("vk:<group_id>") to the ts VK gave with the events.

VK keeps events addressable by ts for a while, so a crash or a network failure between
any two steps only makes VK deliver the same events again, and their dedupe key (the
event_id) drops them. The library's VkBotLongPoll keeps ts only in memory, so the loop is
our own: the a_check request goes through aiohttp (a stop cancels a parked poll at once);
API calls go through vk-api in worker threads.

Callback API: VK POSTs each event to our server and re-sends it until it gets "ok". The
secret is checked first (a mismatch stores nothing), the event is stored, and only then
"ok" is answered; a failure answers 500, so VK sends it again.

Only a user's messages in a dialog with the community (message_new, message_edit) and
their presses of the bot's buttons (message_event with our payload) are stored. Other
events (typing, allow/deny, the community's own messages) and group chats are skipped
without storing: they carry no customer's words, and keeping each as a quarantined
record would bury the real problems an admin must look at.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hmac
import logging
import mimetypes
import os

import aiohttp
import requests
import vk_api
from aiohttp import web

from helpgate.channels.base import ChannelStartError, Services
from helpgate.channels.vk import api
from helpgate.channels.vk.parse import CHANNEL, envelope, is_customer_message, message_of
from helpgate.config.schema import VkConfig, format_size

log = logging.getLogger("helpgate.vk")
# Seconds VK may hold a long poll request open before answering with no events.
WAIT = 25
MAX_BACKOFF = 60.0
# How long stopping waits for the batch in hand before cancelling it.
STOP_GRACE = 20.0
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=15)
# What to change when a VK error stops the start, by error code.
START_FIXES = {
    5: "VK refused the token (error 5): set [vk] token to a valid community access token",
    15: "VK denies access to the community (error 15): check [vk] group_id and the "
        "token's rights (messages, docs, manage)",
    100: "VK rejects the request (error 100): check [vk] group_id",
    27: "the token is not a community token (error 27): set [vk] token to a community "
        "access token",
}


class LongPollFailed(Exception):
    """The long poll server answered something unusable (no JSON, no ts)."""


class VkAdapter:
    """One VK community, read until stopped; see the module docstring."""

    def __init__(self, config: VkConfig, services: Services, max_size: int) -> None:
        self.config = config
        self.services = services
        # The files of one message are fetched up to this many bytes in all; the rest are
        # named in its text.
        self.max_size = max_size
        self.key = f"vk:{config.group_id}"
        self.wait = WAIT
        self.backoff_start = 1.0
        self.port: int | None = None  # the callback server's port once listening
        self.api: api.BoundedVkApi | None = None
        self._http: aiohttp.ClientSession | None = None
        self._server: dict | None = None  # long poll: {"key", "server"}
        self.ts: int | None = None
        self._names: dict[str, str] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        self._in_flight: set[asyncio.Task] = set()
        self.polling = asyncio.Event()  # set once the long poll loop runs (tests, health)

    @property
    def name(self) -> str:
        return f"vk {self.config.group_id} ({self.config.mode})"

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.api = api.session(self.config)
        self._http = aiohttp.ClientSession()
        try:
            if self.config.mode == "callback":
                await self._check_token()
                await self._listen()
            else:
                await self._first_server()
                self._task = asyncio.create_task(self._poll_loop(), name=self.name)
        except BaseException:
            await self._close()
            raise

    async def stop(self) -> None:
        """Finish the batch in hand (nothing VK was told "ok" about is left unstored),
        cancel a parked poll, close the server and the sessions."""
        self._stop.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._in_flight:
            await asyncio.wait(list(self._in_flight))
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE)
            except TimeoutError:
                log.warning("%s: the batch in hand did not finish within %s s of stopping; "
                            "VK will deliver it again", self.name, STOP_GRACE)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        await self._close()

    async def _close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.api is not None:
            self.api.http.close()
            self.api = None

    async def _call(self, method: str, **values):
        """One vk-api call, in a worker thread."""
        return await asyncio.to_thread(self.api.method, method, values)

    def _start_error(self, exc: vk_api.ApiError) -> ChannelStartError:
        fix = START_FIXES.get(exc.code, "check the [vk] section")
        return ChannelStartError(f"{self.name} cannot start: {exc}; {fix}")

    async def _check_token(self) -> None:
        """A wrong token stops the start with what to fix; VK out of reach does not (the
        events wait there, and staff can still be answered later)."""
        await self._at_start(self._call("groups.getById", group_id=self.config.group_id),
                             "going on")

    async def _at_start(self, call, then: str) -> None:
        """A start-up call: an answer the admin must fix stops the start; any other
        answer, or VK out of reach, is logged and the adapter goes on (`then` says how)."""
        try:
            await call
        except vk_api.ApiError as exc:
            if exc.code in START_FIXES:
                raise self._start_error(exc) from None
            log.warning("%s: VK answered %s at start; %s", self.name, exc, then)
        except (requests.RequestException, vk_api.ApiHttpError) as exc:
            log.warning("%s: VK out of reach at start (%s); %s", self.name, exc, then)

    # ------------------------------------------------------------------ long poll
    async def _first_server(self) -> None:
        """The cursor from the store (VK still holds the events after it), else VK's
        current ts on the very first run."""
        stored = await self.services.cursors.get(self.key)
        if stored is not None:
            self.ts = stored[1]
        await self._at_start(self._new_server(), "retrying")

    async def _new_server(self, new_ts: bool = False) -> None:
        answer = await self._call("groups.getLongPollServer", group_id=self.config.group_id)
        self._server = {"key": answer["key"], "server": answer["server"]}
        if self.ts is None or new_ts:
            self.ts = int(answer["ts"])
            await self.services.cursors.set(self.key, None, self.ts)

    async def _poll_loop(self) -> None:
        backoff = self.backoff_start
        self.polling.set()
        while not self._stop.is_set():
            try:
                if self._server is None:
                    await self._new_server()
                answer = await self._until_stopped(self._a_check())
                if answer is None:
                    break
                await self._handle(answer)
                backoff = self.backoff_start
            except Exception as exc:
                if self._stop.is_set():
                    break
                # VK or the network away, a store that failed: the cursor did not move, so
                # the same events come again. Say so in one line for the expected ones.
                expected = isinstance(exc, (OSError, TimeoutError, aiohttp.ClientError,
                                            requests.RequestException, vk_api.ApiError,
                                            vk_api.ApiHttpError, LongPollFailed))
                log.log(logging.WARNING if expected else logging.ERROR,
                        "%s: %s: %s; retrying in %.1f s", self.name, type(exc).__name__, exc,
                        backoff, exc_info=not expected)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _until_stopped(self, coro):
        """The poll's answer, or None when stop came first (the poll is cancelled: it
        took nothing from VK that is not asked for again with the same ts)."""
        poll = asyncio.ensure_future(coro)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({poll, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not poll.done():
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poll
            return None
        return poll.result()

    async def _a_check(self) -> dict:
        params = {"act": "a_check", "key": self._server["key"], "ts": str(self.ts),
                  "wait": str(self.wait)}
        timeout = aiohttp.ClientTimeout(total=self.wait + 15)
        async with self._http.get(self._server["server"], params=params,
                                  timeout=timeout) as response:
            response.raise_for_status()
            answer = await response.json(content_type=None)
        if not isinstance(answer, dict) or ("failed" not in answer and "ts" not in answer):
            raise LongPollFailed(f"unexpected long poll answer: {str(answer)[:200]}")
        return answer

    async def _handle(self, answer: dict) -> None:
        failed = answer.get("failed")
        if failed == 1:  # the history moved on: go on from the ts given, nothing is lost
            await self._move(int(answer["ts"]))
        elif failed == 2:  # the key expired: a new one, the same ts
            await self._new_server()
        elif failed == 3:  # key and ts lost: VK no longer has what came in between
            log.warning("%s: VK lost the long poll state (failed=3); events since ts %s "
                        "may be lost", self.name, self.ts)
            await self._new_server(new_ts=True)
        elif failed is not None:
            raise LongPollFailed(f"long poll failed={failed}")
        else:
            await self.store(answer.get("updates") or [])
            await self._move(int(answer["ts"]))

    async def _move(self, ts: int) -> None:
        # Only after what came before it is stored (the caller's order).
        await self.services.cursors.set(self.key, None, ts)
        self.ts = ts

    # ------------------------------------------------------------------ storing
    async def store(self, events: list[dict]) -> list:
        """Keep and decide the customers' messages among `events`; returns after they
        are committed (the pipeline's results)."""
        wanted = [event for event in events if isinstance(event, dict)
                  and is_customer_message(event)
                  and event.get("group_id", self.config.group_id) == self.config.group_id]
        if len(wanted) < len(events):
            log.debug("%s: skipped %d events that are no customer message", self.name,
                      len(events) - len(wanted))
        if not wanted:
            return []
        words = [event for event in wanted if event.get("type") != "message_event"]
        names = await self._sender_names(words) if words else {}
        raws = [envelope(event, await self._files(event), names) if event in words
                else envelope(event) for event in wanted]
        messages = await self.services.parse_many(CHANNEL, raws)
        results = await self.services.ingest(messages, self.config.ticket_type)
        for event in wanted:
            if event.get("type") == "message_event":
                await self._answer_press(event["object"])
        return results

    async def _answer_press(self, press: dict) -> None:
        """Stop the pressed button's spinner once the press is stored (the bot's answer
        follows as a message); a failure here loses nothing."""
        try:
            await self._call("messages.sendMessageEventAnswer", event_id=press["event_id"],
                             user_id=press["user_id"], peer_id=press["peer_id"])
        except Exception as exc:
            log.debug("%s: button press %s not answered: %s", self.name,
                      press.get("event_id"), exc)

    async def _sender_names(self, events: list[dict]) -> dict[str, str]:
        """"First Last" of the senders (the contact's name); none when VK will not say:
        a name is never worth holding a message back."""
        ids = {str(message_of(event)["from_id"]) for event in events}
        unknown = sorted(ids - set(self._names))
        if unknown:
            try:
                users = await self._call("users.get", user_ids=",".join(unknown))
            except Exception as exc:  # the message goes on without a name
                log.info("%s: users.get failed: %s", self.name, exc)
                users = []
            for user in users or []:
                if not user.get("deactivated"):
                    name = " ".join(filter(None, (user.get("first_name"),
                                                  user.get("last_name"))))
                    self._names[str(user.get("id"))] = name
        return {i: self._names[i] for i in ids if self._names.get(i)}

    async def _files(self, event: dict) -> dict[str, dict]:
        """The message's documents and photos (the largest size), fetched now: VK's file
        addresses expire, the kept record must not depend on them. A file that cannot be
        fetched is recorded with the reason (parse names it in the text)."""
        files: dict[str, dict] = {}
        left = self.max_size
        for index, item in enumerate(message_of(event).get("attachments") or []):
            found = _file_of(item)
            if found is None:
                continue
            url, name, mime, size = found
            entry = {"name": name, "mime": mime}
            if size is not None and size > left:
                entry["failed"] = (f"{format_size(size)} is over the limit of "
                                   f"{format_size(self.max_size)} for one message's files")
            else:
                try:
                    data = await self._download(url, left)
                    left -= len(data)
                    entry["data_b64"] = base64.b64encode(data).decode("ascii")
                except Exception as exc:  # the message is stored all the same
                    entry["failed"] = str(exc) or type(exc).__name__
            files[str(index)] = entry
        return files

    async def _download(self, url: str, limit: int) -> bytes:
        async with self._http.get(url, timeout=DOWNLOAD_TIMEOUT) as response:
            if response.status != 200:
                raise DownloadFailed(f"VK's file server answered HTTP {response.status}")
            data = bytearray()
            async for chunk in response.content.iter_chunked(1 << 16):
                data += chunk
                if len(data) > limit:
                    raise DownloadFailed(f"over the limit of {format_size(self.max_size)} "
                                         "for one message's files")
            return bytes(data)

    # ------------------------------------------------------------------ callback API
    async def _listen(self) -> None:
        config = self.config
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(config.callback_path, self._callback)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_GRACE)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, config.callback_host, config.callback_port).start()
        except OSError as exc:
            fix = ("another program listens there: stop it, or set another [vk] callback_port"
                   if exc.errno == errno.EADDRINUSE else
                   "check [vk] callback_host and callback_port")
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ChannelStartError(
                f"cannot listen on {config.callback_host}:{config.callback_port} "
                f"(vk callback): {reason}; {fix}") from None
        self.port = self._runner.addresses[0][1]
        log.info("%s listening on %s:%s%s", self.name, config.callback_host, self.port,
                 config.callback_path)

    async def _callback(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="not JSON")
        if not isinstance(body, dict):
            return web.Response(status=400, text="not an event")
        if body.get("group_id") != self.config.group_id:
            return web.Response(status=403, text="wrong group")
        if body.get("type") == "confirmation":
            return web.Response(text=self.config.confirmation_code)
        given = str(body.get("secret") or "").encode()
        if not hmac.compare_digest(given, self.config.secret.encode()):
            log.warning("%s: an event with a wrong secret from %s was refused", self.name,
                        request.remote)
            return web.Response(status=403, text="bad secret")
        # The secret is not part of the event: it is never kept with the record.
        event = {key: value for key, value in body.items() if key != "secret"}
        task = asyncio.ensure_future(self.store([event]))
        # Tracked until done, not until this request ends: stopping waits for it.
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        try:
            await asyncio.shield(task)
        except Exception:
            log.exception("%s: could not store event %s", self.name, body.get("event_id"))
            return web.Response(status=500, text="not stored")
        return web.Response(text="ok")


class DownloadFailed(Exception):
    """A file of a message could not be fetched."""


def _file_of(item) -> tuple[str, str, str, int | None] | None:
    """(url, name, mime, size) of a document or photo attachment; None for other kinds."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    body = item.get(kind) if isinstance(kind, str) else None
    if not isinstance(body, dict):
        return None
    if kind == "doc" and body.get("url"):
        name = str(body.get("title") or f"doc{body.get('owner_id')}_{body.get('id')}")
        ext = str(body.get("ext") or "")
        if ext and not name.lower().endswith("." + ext.lower()):
            name = f"{name}.{ext}"
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        size = body.get("size")
        return body["url"], name, mime, int(size) if isinstance(size, int) else None
    if kind == "photo":
        sizes = [s for s in body.get("sizes") or [] if isinstance(s, dict) and s.get("url")]
        if not sizes:
            return None
        # The largest by area; sizes without dimensions count by their order.
        best = max(enumerate(sizes), key=lambda pair: (
            (pair[1].get("width") or 0) * (pair[1].get("height") or 0), pair[0]))[1]
        return (best["url"], f"photo{body.get('owner_id')}_{body.get('id')}.jpg",
                "image/jpeg", None)
    return None
