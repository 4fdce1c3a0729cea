"""Our SMTP or LMTP endpoint (aiosmtpd): a mail server, or a mail client, delivers here.

R-CH-2: only the configured recipient addresses and domains are accepted (550 otherwise:
helpgate is never an open relay; a plus-tagged form of an accepted address is accepted,
as staff reply addresses are such forms), the envelope recipients are recorded as
Delivered-To, a message over the size limit gets 552, and 250 is answered only once the
raw message is committed to the store (R-TS-5). When it cannot be stored the answer is
451, so the sending server keeps the mail and tries again: nothing is lost on our side
of the conversation.

The server runs on the gateway's own event loop (PROTOCOLS.md), not aiosmtpd's threaded
Controller. Stopping closes the listening socket first and then waits for the messages
in flight to be stored and answered.

A burst of mail servers connecting at once is held in the listen backlog
(`mail.endpoint.backlog`, asyncio's 100 by default would refuse part of a burst), and no
session outlives `mail.endpoint.max_session_time`: the client is told 421 and the
connection closed, so a slow or stuck client cannot hold a connection forever. A message
being stored at that moment is still stored (the store is shielded); the client, not
having seen 250, sends it again and it is recognised as a duplicate.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from helpgate.channels.base import ChannelStartError, Services
from helpgate.channels.mail.parse import parse_safely
from helpgate.config.schema import Config, parse_window

log = logging.getLogger("helpgate.smtp")
REFUSED = "550 5.7.1 <{address}>: recipient not accepted here (not a relay)"
NOT_STORED = "451 4.3.0 Could not store the message now; please try again later"
TOO_LONG = b"421 4.4.2 Session time limit exceeded; closing connection\r\n"
# What to change when the listening socket cannot be opened, by errno.
BIND_FIXES = {
    errno.EADDRINUSE: "another program listens there: stop it, or set another "
                      "[mail.endpoint] port",
    errno.EACCES: "ports below 1024 need privileges: set [mail.endpoint] port to 1024 or "
                  "above (and forward the mail server to it)",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's: set [mail.endpoint] "
                         "host (\"0.0.0.0\" for all)",
}


MAX_LINE = 1 << 20


class _TimeLimit:
    """Mixed into aiosmtpd's SMTP/LMTP: close the session with 421 once it has lasted
    `session_limit` seconds (aiosmtpd only limits the idle time between commands)."""

    session_limit: float
    # RFC 5321 asks for lines of at most 1,000 characters, but HTML from real clients and
    # curl uploads carry longer ones, and refusing them (aiosmtpd's 500) bounces a
    # customer's mail. DATA stays bounded by mail.max_message_size.
    line_length_limit = MAX_LINE

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self._original_transport is None:  # not the STARTTLS switch of a session
            self._time_limit = self.loop.call_later(self.session_limit, self._too_long)

    def connection_lost(self, error) -> None:
        limit = getattr(self, "_time_limit", None)
        if limit is not None:
            limit.cancel()
        super().connection_lost(error)

    def _too_long(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            log.warning("%s: session time limit exceeded; closed with 421", self.session.peer)
            self.transport.write(TOO_LONG)
            self.transport.close()


class _LimitedSMTP(_TimeLimit, SMTP):
    pass


class _LimitedLMTP(_TimeLimit, LMTP):
    pass


class Recipients:
    """Which envelope recipients the endpoint accepts."""

    def __init__(self, config: Config) -> None:
        endpoint = config.mail.endpoint
        self.addresses = set(endpoint.addresses)
        self.domains = set(endpoint.domains)
        if not self.addresses and not self.domains:
            self.addresses = {config.mail.address.lower()}

    def accepts(self, address: str) -> bool:
        address = address.strip().strip("<>").lower()
        local, _, domain = address.rpartition("@")
        # A plus-tag (support+<token>@…, a staff member's reply address) is still ours.
        base = f"{local.partition('+')[0]}@{domain}"
        return address in self.addresses or base in self.addresses or \
            (bool(domain) and domain in self.domains)


def with_return_path(mail_from: str | None, raw: bytes) -> bytes:
    """The envelope sender written on top of the mail, as every final delivery does
    (RFC 5321 §4.4): kept with the raw bytes, so the rules — and a replay — see that
    `MAIL FROM:<>` came from a robot (a bounce or auto-reply, R-TH-8)."""
    address = (mail_from or "").strip().strip("<>")
    address = "".join(ch for ch in address if ch > " ")[:320]
    return f"Return-Path: <{address}>\r\n".encode("utf-8", "surrogateescape") + raw


class _Handler:
    def __init__(self, endpoint: MailEndpoint) -> None:
        self.endpoint = endpoint

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.endpoint.recipients.accepts(address):
            log.warning("refused recipient %s from %s", address, session.peer)
            return REFUSED.format(address=address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        status = await self.endpoint.store(
            with_return_path(envelope.mail_from, _delivered_to(envelope.rcpt_tos) + raw))
        # LMTP answers once per accepted recipient (RFC 2033); the message is one either way.
        count = len(envelope.rcpt_tos) if self.endpoint.lmtp else 1
        return "\r\n".join([status] * max(1, count))


def _delivered_to(recipients: list[str]) -> bytes:
    """Trace fields as a delivering MTA writes them (RFC 9228): the envelope recipients
    travel with the stored message, since a staff member's reply address
    (support+<token>@…) may be in the envelope only."""
    return b"".join(f"Delivered-To: {r}\r\n".encode("utf-8", "surrogateescape")
                    for r in recipients)


class MailEndpoint:
    """The SMTP/LMTP server; a message is answered 250 only once `services.ingest` has
    stored it (which may raise: then 451, and the client tries again)."""

    def __init__(self, config: Config, services: Services,
                 ticket_type: str | None = None) -> None:
        self.config = config
        self.endpoint = config.mail.endpoint
        self.lmtp = self.endpoint.protocol == "lmtp"
        self.recipients = Recipients(config)
        self.services = services
        self.ticket_type = ticket_type or self.endpoint.ticket_type
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None
        self._protocols: list[SMTP] = []
        self._in_flight: set[asyncio.Task] = set()

    @property
    def name(self) -> str:
        return f"{self.endpoint.protocol} endpoint {self.endpoint.host}:{self.port}"

    def _protocol(self) -> SMTP:
        server_class = _LimitedLMTP if self.lmtp else _LimitedSMTP
        protocol = server_class(_Handler(self), hostname=self.config.mail.message_id_domain,
                                data_size_limit=self.config.mail.max_message_size,
                                enable_SMTPUTF8=True, ident="helpgate")
        protocol.session_limit = parse_window(self.endpoint.max_session_time).total_seconds()
        self._protocols = [p for p in self._protocols if p.transport is not None]
        self._protocols.append(protocol)
        return protocol

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                self._protocol, self.endpoint.host, self.endpoint.port,
                backlog=self.endpoint.backlog)
        except OSError as exc:
            fix = BIND_FIXES.get(exc.errno, "check [mail.endpoint] host and port")
            # asyncio rewords the error around the address; the plain cause reads better.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ChannelStartError(
                f"cannot listen on {self.endpoint.host}:{self.endpoint.port} "
                f"({self.endpoint.protocol} endpoint): {reason}; {fix}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("%s listening", self.name)

    async def store(self, raw: bytes) -> str:
        task = asyncio.ensure_future(self._deliver(raw))
        # Tracked until it is done, not until this session ends: stopping waits for it
        # even when the client hung up or its session was closed for time.
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        try:
            # Shielded: a client hanging up mid-answer must not cancel the store itself.
            result = await asyncio.shield(task)
        except Exception:
            log.exception("could not store a message received over %s",
                          self.endpoint.protocol)
            return NOT_STORED
        return f"250 2.0.0 Stored as inbound message {result.inbound} ({result.action})"

    async def _deliver(self, raw: bytes):
        message = parse_safely(raw, self.services.clock())
        return (await self.services.ingest([message], self.ticket_type))[0]

    async def stop(self) -> None:
        """No new connections; messages being stored finish and get their answer."""
        if self._server is None:
            return
        self._server.close()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        await asyncio.sleep(0)  # let the answers go out
        for protocol in self._protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        await self._server.wait_closed()
        self._server = None
