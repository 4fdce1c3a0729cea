"""Real mail servers for tests: an aiosmtpd relay with an error-injection switch, and a
self-signed certificate for TLS and STARTTLS (also used by the Dovecot fixture).

The relay is the real aiosmtpd SMTP server on the test's event loop, on a loopback port;
it keeps every message it accepted, so a test can read what a customer would receive.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import random
import ssl
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificate(folder: Path) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1 (openssl, as admins do)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return Certificate(cert, key)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)

    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content()


@dataclass
class RelayHandler:
    """What the relay does: accept and keep, or answer as a test says."""

    received: list[Received] = field(default_factory=list)
    # An SMTP reply to give at RCPT or DATA instead of accepting ("451 4.3.0 busy").
    rcpt_answer: str | None = None
    data_answer: str | None = None
    # Seconds the relay takes over each message (a slow relay keeps messages in flight).
    delay: float = 0.0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # A share of recipients refused with 451 at random, nothing kept (bench/outbox.py).
    transient_rate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(18))
    busy: int = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_answer:
            return self.rcpt_answer
        if self.transient_rate and self.rng.random() < self.transient_rate:
            self.busy += 1
            return "451 4.3.0 busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_answer:
            return self.data_answer
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                      envelope.original_content or envelope.content))
        self.arrived.set()
        return "250 Message accepted for delivery"


@dataclass
class XOAuth2RelayHandler(RelayHandler):
    """A relay that takes AUTH XOAUTH2 only, as Microsoft 365's and Gmail's do; `check`
    says whether (user, access token) may send (tests/fakes/oauth.py knows)."""

    check: Callable[[str, str], bool] | None = None
    refusals: int = 0

    async def auth_XOAUTH2(self, server, args):
        if len(args) < 2:
            return AuthResult(success=False, handled=False)
        try:
            fields = base64.b64decode(args[1]).decode().split("\x01")
            user = fields[0].removeprefix("user=")
            token = fields[1].removeprefix("auth=Bearer ")
        except (ValueError, IndexError):
            return AuthResult(success=False, handled=False)
        ok = self.check is not None and self.check(user, token)
        if not ok:
            self.refusals += 1
        return AuthResult(success=ok, handled=False)


class Relay:
    """An SMTP relay on 127.0.0.1: plain, STARTTLS (with AUTH) or implicit TLS; with
    `xoauth2`, one that demands AUTH XOAUTH2 (a check of user and token)."""

    def __init__(self, security: str = "none", certificate: Certificate | None = None,
                 login: tuple[str, str] | None = None, smtputf8: bool = True,
                 xoauth2: Callable[[str, str], bool] | None = None) -> None:
        self.security = security
        self.smtputf8 = smtputf8
        self.certificate = certificate
        self.login = login
        self.xoauth2 = xoauth2
        self.handler = XOAuth2RelayHandler(check=xoauth2) if xoauth2 else RelayHandler()
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None
        self._protocols: list[SMTP] = []

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and self.login is not None and \
            (auth_data.login.decode(), auth_data.password.decode()) == self.login
        return AuthResult(success=ok, handled=False)

    def _protocol(self) -> SMTP:
        options = {}
        if self.security == "starttls":
            options.update(tls_context=self.certificate.server_context(),
                           require_starttls=True)
        if self.login is not None:
            # Only STARTTLS is visible to aiosmtpd; implicit TLS wraps the socket below it.
            options.update(authenticator=self._authenticate, auth_required=True,
                           auth_require_tls=self.security == "starttls")
        if self.xoauth2 is not None:
            options.update(auth_required=True, auth_require_tls=self.security == "starttls",
                           auth_exclude_mechanism=["LOGIN", "PLAIN"])
        with warnings.catch_warnings():
            # aiosmtpd warns of AUTH without STARTTLS; under implicit TLS that is wrong.
            warnings.simplefilter("ignore", UserWarning)
            protocol = SMTP(self.handler, hostname="relay.test",
                            enable_SMTPUTF8=self.smtputf8, **options)
        self._protocols.append(protocol)
        return protocol

    async def start(self) -> Relay:
        """Listen (again: a restarted relay keeps its port)."""
        loop = asyncio.get_running_loop()
        context = self.certificate.server_context() if self.security == "tls" else None
        self._server = await loop.create_server(self._protocol, "127.0.0.1",
                                                self.port or 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Before Python 3.13 closing a server leaves its connections open: close them.
            for protocol in self._protocols:
                if protocol.transport is not None:
                    protocol.transport.close()
            self._protocols.clear()
            await self._server.wait_closed()
            self._server = None
            await asyncio.sleep(0.01)

    def smtp_config(self, **extra) -> dict:
        """The [mail.smtp] section that points helpgate at this relay."""
        config = {"host": "127.0.0.1", "port": self.port, "security": self.security,
                  "timeout": 5.0}
        if self.certificate is not None:
            config["ca_file"] = str(self.certificate.cert)
        if self.login is not None:
            config.update(username=self.login[0], password=self.login[1])
        return {**config, **extra}


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports nobody listens on (all held open while choosing)."""
    import socket
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]
