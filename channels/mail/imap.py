"""One IMAP mailbox read into helpgate (R-CH-1), with aioimaplib.

The order of events is what makes it safe:

1. fetch the messages after the cursor (UID > last processed, same UIDVALIDITY);
2. store them through the pipeline — committed before anything else happens (R-TS-5);
3. flag, move or delete them on the server, as configured;
4. advance the cursor in the database.

A crash between any two steps repeats at most the later ones: a message stored but not
flagged is fetched again after a restart and recognised as a duplicate (its Message-ID,
else its bytes), then flagged. A UIDVALIDITY change (a restored or migrated mailbox)
makes every UID meaningless: the whole folder is read again and the duplicates drop out
the same way. A message that cannot be processed is quarantined by the pipeline and
flagged like any other, so it never blocks the mailbox.

IDLE is used where the server offers it (and config allows), polling otherwise, and is
issued again every `idle_renew` seconds (providers drop a silent connection after 6-30
minutes). A dropped connection or a restarted server is reconnected with backoff;
nothing is lost meanwhile because nothing is flagged that was not stored.

A mailbox with auth = "oauth2" signs in with AUTHENTICATE XOAUTH2 and an access token
from `services.tokens` (gateway/oauth.py). A provider ends a session whose token expired
with BYE: that is a lost connection like any, and the reconnect asks for a token again,
which is refreshed by then. A refused token is refreshed once and tried again; refused
again, the grant is reported as needing a login and the mailbox waits for one (backoff,
no hammering of the provider). Every step of the sign-in has the command timeout: a
server that answers a refused token with a challenge and waits is answered, never
waited for.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import logging
import re
import ssl
from collections.abc import Awaitable
from typing import TypeVar

import aioimaplib

from helpgate.channels.base import Batches, Services
from helpgate.channels.mail.imap_client import Client
from helpgate.config.oauth import GrantNeedsLogin, TokenUnavailable, xoauth2
from helpgate.config.schema import ImapConfig

log = logging.getLogger("helpgate.imap")
# A batch is one FETCH and one commit: at most this many mails and (but for a single
# larger mail) this many bytes, so that a backlog costs few disk syncs and a batch of
# scans costs little memory. Two batches are in memory at once (one fetched while the
# other is stored).
FETCH_BATCH = 200
FETCH_BYTES = 8 * 1024 * 1024
# Sizes are asked for this many UIDs per command: a command names its UIDs one by one,
# and servers limit the length of a command line (Dovecot: 64 KB).
SIZE_WINDOW = 200
MAX_BACKOFF = 60.0
# How long stopping waits for a session to log out before closing it.
STOP_GRACE = 20.0
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_FETCH_HEAD = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
T = TypeVar("T")


class ImapError(Exception):
    """The server refused a command (login, select, fetch…)."""


class ImapMailbox:
    """Reads one configured mailbox until stopped; see the module docstring."""

    def __init__(self, config: ImapConfig, services: Services, max_size: int) -> None:
        self.config = config
        self.services = services
        # Larger messages are not fetched whole: their header is kept and quarantined.
        self.max_size = max_size
        self.cursors = services.cursors
        self.key = f"imap:{config.name}"
        self._stop = asyncio.Event()
        self._lost = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.connected = asyncio.Event()  # set while logged in (tests and health)

    @property
    def name(self) -> str:
        return f"imap {self.config.name}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Finish the batch in hand, leave IDLE, log out. A server that stops answering
        cannot hold the gateway: after STOP_GRACE the session is cancelled (nothing is
        lost: a mail is flagged and the cursor moved only after it is stored)."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE)
            except TimeoutError:
                log.warning("mailbox %s: no answer within %s s of stopping; closing",
                            self.config.name, STOP_GRACE)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    # ------------------------------------------------------------------ connection
    async def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                await self._session()
                backoff = 1.0
            except Exception as exc:
                self.connected.clear()
                if self._stop.is_set():
                    break
                # Network trouble and a server restart are expected; say so in one line.
                expected = isinstance(exc, (OSError, TimeoutError, ImapError,
                                            aioimaplib.Abort, aioimaplib.CommandTimeout,
                                            GrantNeedsLogin, TokenUnavailable))
                if isinstance(exc, GrantNeedsLogin):
                    # Nothing to do but wait for `helpgate oauth login`: slowly.
                    backoff = MAX_BACKOFF
                log.log(logging.WARNING if expected else logging.ERROR,
                        "mailbox %s: %s: %s; reconnecting in %.0f s", self.config.name,
                        type(exc).__name__, exc, backoff, exc_info=not expected)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _connect(self) -> aioimaplib.IMAP4:
        config = self.config
        self._lost.clear()
        context = self._tls_context() if config.security != "none" else None
        client = Client(
            config.host, config.effective_port, timeout=config.timeout,
            conn_lost_cb=lambda exc: self._lost.set(),
            ssl_context=context if config.security == "tls" else None)
        try:
            await client.wait_hello_from_server()
            if config.security == "starttls":
                await _starttls(client, context, config.host)
            if config.auth == "oauth2":
                await self._sign_in_with_token(client)
            else:
                response = await client.login(config.username, config.password)
                if response.result != "OK":
                    raise ImapError(f"login refused: {_text(response)}")
            await client.protocol.capability()  # they may grow after login
        except BaseException:
            _close(client)
            raise
        return client

    async def _sign_in_with_token(self, client: aioimaplib.IMAP4) -> None:
        tokens = self.services.tokens
        if tokens is None:
            raise ImapError('auth = "oauth2" but the gateway was given no access tokens')
        grant = self.config.grant_name
        token = await tokens.token(grant)
        refusal = await _authenticate_xoauth2(client, self.config.username, token)
        if refusal is None:
            return
        log.warning("mailbox %s: the server refused the access token (%s); refreshing it",
                    self.config.name, refusal)
        token = await tokens.token(grant, rejected=token)
        refusal = await _authenticate_xoauth2(client, self.config.username, token)
        if refusal is None:
            return
        await tokens.refused(grant, f"the IMAP server {self.config.host} refused a fresh "
                                    f"access token: {refusal}")
        raise GrantNeedsLogin(grant, f"the IMAP server refused a fresh token: {refusal}")

    async def _watched(self, command: Awaitable[T]) -> T:
        """A command's answer, or ConnectionError as soon as the connection is lost. A
        protocol that failed mid-response (aioimaplib's parser raising on what a server
        sent) closes the connection but never answers the command, and its timer may be
        gone with it: without this the mailbox would wait for that answer forever."""
        answer = asyncio.ensure_future(command)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait([answer, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if answer.done():
            return answer.result()
        answer.cancel()
        with contextlib.suppress(BaseException):
            await answer
        raise ConnectionError("connection lost with a command unanswered")

    async def _ok(self, command, what: str) -> None:
        response = await self._watched(command)
        if response.result != "OK":
            raise ImapError(f"{what} failed: {_text(response)}")

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.config.ca_file or None)
        if not self.config.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _session(self) -> None:
        client = await self._connect()
        try:
            response = await self._watched(client.select(self.config.folder))
            if response.result != "OK":
                raise ImapError(f"cannot select {self.config.folder}: {_text(response)}")
            validity = _uidvalidity(response)
            last = await self._cursor(validity)
            self.connected.set()
            log.info("mailbox %s: connected, UIDVALIDITY %s, after UID %s", self.config.name,
                     validity, last)
            idle = self.config.idle and client.has_capability("IDLE")
            arrived = _watch_exists(client)
            while not self._stop.is_set():
                arrived.clear()
                last = await self._fetch_new(client, validity, last)
                if self._stop.is_set():
                    break
                if self._lost.is_set():
                    raise ConnectionError("connection lost")
                if arrived.is_set():
                    continue  # new mail was reported mid-round: read it before idling
                if idle:
                    await self._idle(client)
                else:
                    await self._pause(self.config.poll_interval)
        finally:
            self.connected.clear()
            if not self._lost.is_set():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.logout(), 5)
            _close(client)

    async def _cursor(self, validity: int) -> int:
        cursor = await self.cursors.get(self.key)
        if cursor is not None and cursor[0] == validity:
            return cursor[1]
        if cursor is not None:
            log.warning("mailbox %s: UIDVALIDITY changed from %s to %s; reading the whole "
                        "folder again (what was stored before is recognised as duplicate)",
                        self.config.name, cursor[0], validity)
        await self.cursors.set(self.key, validity, 0)
        return 0

    async def _pause(self, seconds: float) -> None:
        waits = [asyncio.ensure_future(self._stop.wait()),
                 asyncio.ensure_future(self._lost.wait())]
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()

    async def _idle(self, client: aioimaplib.IMAP4) -> None:
        """Wait in IDLE until the server pushes something, the renewal time, or stop."""
        renew = self.config.idle_renew
        # A connection lost just as IDLE is sent (a provider's BYE when a token expires)
        # never acknowledges it, and aioimaplib would wait for the acknowledgement.
        starting = asyncio.ensure_future(client.idle_start(timeout=renew + 60))
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait([starting, lost], timeout=self.config.timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            raise ConnectionError("connection lost as IDLE began") if self._lost.is_set() \
                else TimeoutError("no answer to IDLE")
        idling = starting.result()
        push = asyncio.ensure_future(client.wait_server_push(timeout=renew))
        stop = asyncio.ensure_future(self._stop.wait())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait([push, stop, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (push, stop, lost):
                waiting.cancel()
        if self._lost.is_set():
            raise ConnectionError("connection lost during IDLE")
        client.idle_done()
        await asyncio.wait_for(idling, 30)

    # ------------------------------------------------------------------- messages
    async def _fetch_new(self, client: aioimaplib.IMAP4, validity: int, last: int) -> int:
        response = await self._watched(client.uid_search(f"UID {last + 1}:*", charset=None))
        if response.result != "OK":
            raise ImapError(f"search failed: {_text(response)}")
        # "n:*" also matches the highest UID when it is below n: keep only new ones.
        uids = sorted(u for u in _numbers(response.lines[0]) if u > last)
        sizes = await self._sizes(client, uids)
        batches = _batches(uids, sizes, self.max_size)
        upcoming = asyncio.ensure_future(
            self._messages(client, batches[0], sizes)) if batches else None
        try:
            for index, batch in enumerate(batches):
                messages = await upcoming
                # The next batch is fetched and parsed while this one is stored; it is
                # only flagged, and the cursor only moves, after it is stored in its turn.
                upcoming = None
                if index + 1 < len(batches) and not self._stop.is_set():
                    upcoming = asyncio.ensure_future(
                        self._messages(client, batches[index + 1], sizes))
                await self.services.ingest(list(messages.values()), self.config.ticket_type)
                if upcoming is not None:
                    # One command at a time on the connection: the fetch finishes first.
                    await asyncio.wait([upcoming])
                await self._after_stored(client, list(messages))
                last = batch[-1]
                await self.cursors.set(self.key, validity, last)
                if self._stop.is_set():
                    break
        finally:
            if upcoming is not None:  # stopped, or the connection failed mid-round
                upcoming.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await upcoming
        return last

    async def _sizes(self, client: aioimaplib.IMAP4, uids: list[int]) -> dict[int, int]:
        """UID -> RFC822.SIZE (a UID expunged meanwhile is missing)."""
        sizes: dict[int, int] = {}
        for start in range(0, len(uids), SIZE_WINDOW):
            window = uids[start:start + SIZE_WINDOW]
            response = await self._watched(
                client.uid("fetch", _uid_set(window), "(UID RFC822.SIZE)"))
            if response.result != "OK":
                raise ImapError(f"fetch failed: {_text(response)}")
            sizes.update({int(uid.group(1)): int(size.group(1)) for line in response.lines
                          if isinstance(line, bytes) and (uid := _UID.search(line))
                          and (size := _SIZE.search(line))})
        return sizes

    async def _messages(self, client: aioimaplib.IMAP4, uids: list[int],
                        sizes: dict[int, int]) -> dict:
        """UID -> parsed message, in UID order; an oversized one as its header only, with
        the reason it is quarantined (it cannot be stored whole, and must not block)."""
        big = [uid for uid in uids if sizes.get(uid, 0) > self.max_size]
        whole = await self._fetch(client, [uid for uid in uids if uid not in big], "BODY.PEEK[]")
        heads = await self._fetch(client, big, "BODY.PEEK[HEADER]") if big else {}
        found = [uid for uid in uids if uid in whole or uid in heads]
        # The gateway parses a large fetch in worker processes, on the second core, while
        # the previous batch is stored.
        parsed = await self.services.parse_many(
            "email", [whole[uid] if uid in whole else heads[uid] for uid in found])
        messages = dict(zip(found, parsed, strict=True))
        for uid in found:
            if uid in heads:
                messages[uid] = dataclasses.replace(
                    messages[uid],
                    problem=f"message of {sizes[uid]} bytes is over mail.max_message_size "
                            f"({self.max_size}); only its header was kept")
        return messages

    async def _fetch(self, client: aioimaplib.IMAP4, uids: list[int],
                     part: str) -> dict[int, bytes]:
        if not uids:
            return {}
        response = await self._watched(client.uid("fetch", _uid_set(uids), f"(UID {part})"))
        if response.result != "OK":
            raise ImapError(f"fetch failed: {_text(response)}")
        found = _fetched(response.lines)
        missing = [uid for uid in uids if uid not in found]
        if missing:
            # Expunged by someone else between SEARCH and FETCH: nothing to store.
            log.warning("mailbox %s: UIDs %s vanished before they could be fetched",
                        self.config.name, missing)
        return found

    async def _after_stored(self, client: aioimaplib.IMAP4, uids: list[int]) -> None:
        if not uids:
            return
        uid_set = _uid_set(uids)
        after = self.config.after
        if after == "flag":
            await self._ok(client.uid("store", uid_set, "+FLAGS.SILENT", r"(\Seen)"), "flag")
            return
        if after == "move" and client.has_capability("MOVE"):
            await self._ok(client.uid("move", uid_set, _quote(self.config.move_to)), "move")
            return
        if after == "move":
            await self._ok(client.uid("copy", uid_set, _quote(self.config.move_to)), "copy")
        await self._ok(client.uid("store", uid_set, "+FLAGS.SILENT", r"(\Deleted)"), "delete")
        if client.has_capability("UIDPLUS"):
            await self._ok(client.uid("expunge", uid_set), "expunge")
        else:
            await self._ok(client.expunge(), "expunge")


def _watch_exists(client: aioimaplib.IMAP4) -> asyncio.Event:
    """An event set whenever the server reports new mail outside IDLE.

    A server tells a session of new mail at the end of whatever command it is running
    (Dovecot does: `* SEARCH` then `* 2 EXISTS`), and it tells each session once.
    aioimaplib drops an untagged EXISTS that arrives during SEARCH, FETCH or STORE, so
    without this a mail landing while we read the previous one would wait in the mailbox
    until some later push, minutes away (the server's keepalive interval).
    """
    arrived = asyncio.Event()
    protocol = client.protocol
    untagged = protocol._untagged_response

    def watching(line: bytes):
        if line.rstrip().endswith(b"EXISTS"):
            arrived.set()
        return untagged(line)

    protocol._untagged_response = watching
    return arrived


def _close(client: aioimaplib.IMAP4) -> None:
    """The connection closed whatever state it is in (a logout that failed, a login
    refused, a greeting that never came): no socket is left behind."""
    if not client._client_task.done():
        client._client_task.cancel()
    transport = client.protocol.transport
    if transport is not None and not transport.is_closing():
        transport.close()


async def _authenticate_xoauth2(client: aioimaplib.IMAP4, user: str, token: str) -> str | None:
    """AUTHENTICATE XOAUTH2; None when signed in, else the server's refusal.

    A server refusing the token first sends a challenge (`+ <base64 JSON error>`) and
    waits for an empty answer before its NO (Dovecot, Gmail, Outlook do). aioimaplib 2
    would wait for the NO forever, so the challenge is answered here; and the whole
    exchange is bounded by the command timeout all the same.
    """
    protocol = client.protocol
    original = protocol._continuation
    challenges: list[bytes] = []

    def continuation(line: bytes) -> None:
        pending = protocol.pending_sync_command
        if pending is not None and pending.name == "AUTHENTICATE":
            challenges.append(line)
            protocol.transport.write(b"\r\n")
            return
        original(line)

    sasl = xoauth2(user, token)
    protocol._continuation = continuation
    try:
        response = await asyncio.wait_for(protocol.execute(aioimaplib.Command(
            "AUTHENTICATE", protocol.new_tag(), "XOAUTH2", sasl, loop=protocol.loop),
            scrub=sasl), client.timeout)
    finally:
        protocol._continuation = original
    if response.result == "OK":
        protocol.state = aioimaplib.AUTH
        return None
    detail = _text(response) or response.result
    if challenges:
        detail += f" ({_challenge(challenges[0])})"
    return detail


def _challenge(line: bytes) -> str:
    """The error a XOAUTH2 challenge carries (base64 JSON), for the log."""
    try:
        return base64.b64decode(line[1:].strip()).decode("utf-8", "replace")[:200]
    except (binascii.Error, ValueError):
        return line.decode("ascii", "replace")[:200]


async def _starttls(client: aioimaplib.IMAP4, context: ssl.SSLContext, host: str) -> None:
    """STARTTLS, which aioimaplib 2 lacks: the command, then asyncio's own TLS upgrade
    of the same connection, then the capabilities again (RFC 3501 §6.2.1)."""
    protocol = client.protocol
    if "STARTTLS" not in protocol.capabilities:
        raise ImapError("the server does not offer STARTTLS")
    response = await asyncio.wait_for(protocol.execute(aioimaplib.Command(
        "STARTTLS", protocol.new_tag(), loop=protocol.loop)), client.timeout)
    if response.result != "OK":
        raise ImapError(f"STARTTLS refused: {_text(response)}")
    loop = asyncio.get_running_loop()
    protocol.transport = await loop.start_tls(protocol.transport, protocol, context,
                                              server_hostname=host)
    await asyncio.wait_for(protocol.capability(), client.timeout)


def _fetched(lines: list) -> dict[int, bytes]:
    """UID -> raw message from the lines of a `UID FETCH (UID BODY.PEEK[])` response."""
    found: dict[int, bytes] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        if isinstance(line, bytes) and _FETCH_HEAD.match(line) and line.endswith(b"}") \
                and index + 1 < len(lines):
            literal = bytes(lines[index + 1])
            # The UID may come before the literal or after it, on the closing line.
            tail = lines[index + 2] if index + 2 < len(lines) else b""
            uid = _UID.search(line) or (isinstance(tail, bytes) and _UID.search(tail))
            if uid:
                found[int(uid.group(1))] = literal
            index += 2
            continue
        index += 1
    return found


def _uidvalidity(response) -> int:
    for line in response.lines:
        if isinstance(line, bytes) and (match := _UIDVALIDITY.search(line)):
            return int(match.group(1))
    raise ImapError("the server sent no UIDVALIDITY")


def _numbers(line) -> list[int]:
    return [int(part) for part in bytes(line).split() if part.isdigit()]


def _batches(uids: list[int], sizes: dict[int, int], max_size: int) -> list[list[int]]:
    """UIDs in order, cut into batches of at most FETCH_BATCH mails and FETCH_BYTES bytes
    (a mail over max_size is fetched as its header alone and counts nothing)."""
    cutter: Batches[int] = Batches(FETCH_BATCH, FETCH_BYTES)
    batches = []
    for uid in uids:
        size = sizes.get(uid, 0)
        if (done := cutter.add(uid, size if size <= max_size else 0)) is not None:
            batches.append(done)
    if (last := cutter.rest()) is not None:
        batches.append(last)
    return batches


def _uid_set(uids: list[int]) -> str:
    return ",".join(str(uid) for uid in uids)


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(response) -> str:
    return " ".join(bytes(line).decode("utf-8", "replace") for line in response.lines
                    if isinstance(line, (bytes, bytearray)))[:300]
