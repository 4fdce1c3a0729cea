"""The one way to an SMS gateway: the small protocol every provider speaks to helpgate, the
HTTP client they share, and the registry that finds a provider by its configured name.

SMS goes out only, yet its providers' clients live with the channels: `helpgate sms
check` (channels/sms/check.py) and the transport (outbound/sms.py) both use them, and a
channel's API client is the one module both sides may import (docs/ARCHITECTURE.md).

A provider is a class built from `[sms]` (`SmsConfig`) with `send`, `balance`,
`was_sent` and `close`. SMSC.ru, SMS.ru and SMSAero are built in (smsc.py, smsru.py,
smsaero.py); another is plugged in by a package that registers its class under the
entry-point group `helpgate.sms_gateways`, its name being what `[sms] provider` says.

Every outcome is one of three, because the outbox acts on nothing else:
- `Refused`: the provider said no and will say no again (bad number, bad credentials,
  no money, a forbidden sender): parked with the provider's words.
- `Unavailable`: nothing went out and a later attempt may work (5xx, 429, no
  connection): retried with backoff.
- `NoAnswer`: the request was written and no answer came (a timeout, a dropped
  connection, an answer we cannot read). No provider takes an idempotency key, so the
  SMS may have gone out; it is never sent again blindly.

The providers are spoken to directly with aiohttp: their own Python packages re-send on
a timeout (a second SMS) and fall back to plain http. Every send is a POST, because
aiohttp itself repeats an idempotent method (GET) once on a dropped keep-alive
connection, and a GET that sends an SMS is not idempotent.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp

from helpgate.channels.base import ChannelStartError
from helpgate.config.schema import SmsConfig

ENTRY_POINT_GROUP = "helpgate.sms_gateways"
BUILTIN = {
    "smsc": "helpgate.channels.sms.smsc:SmscGateway",
    "smsru": "helpgate.channels.sms.smsru:SmsRuGateway",
    "smsaero": "helpgate.channels.sms.smsaero:SmsAeroGateway",
}
# An idle connection is dropped this soon, well before a provider closes its end: a
# request on a connection the server has just closed could not tell "not sent" from
# "sent, answer lost".
KEEPALIVE = 2.0
# The longest a whole exchange may take, in timeouts: the answer may trickle in slowly
# but not for ever.
WHOLE_EXCHANGE = 3


class SmsError(Exception):
    """What went wrong, in words an admin reads in `helpgate outbox` and the check."""

    def __init__(self, message: str, retry_after: float | None = None,
                 what: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        # A refusal's reason, where the provider says it: "credentials", "money",
        # "number" (the check names the fix by it).
        self.what = what


class Refused(SmsError):
    """For good: bad number, bad credentials, no money, a forbidden text or sender."""


class Unavailable(SmsError):
    """Nothing went out; a later attempt may work (5xx, 429, no connection)."""


class NoAnswer(SmsError):
    """The request was written and no answer came back: it may have gone out."""


class SmsSetupError(ChannelStartError):
    """`[sms]` names no gateway that exists here, or lacks what it needs."""


@dataclass(frozen=True, slots=True)
class Sent:
    """The provider took the message: its own id, and the parts it counted if it said."""

    provider_id: str
    parts: int | None = None


@dataclass(frozen=True, slots=True)
class Balance:
    amount: str
    currency: str = ""

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}".strip()


class Gateway(Protocol):
    """One SMS provider. Built as `Factory(settings)` from `[sms]`."""

    # The provider as people know it ("SMSC.ru") and the API it talks to.
    title: str
    base_url: str
    # `was_sent` can look a message up by the id we gave it (SMSC.ru).
    tracks_our_id: bool

    async def send(self, phone: str, text: str, our_id: int) -> Sent:
        """Send `text` to `phone` (international digits, no "+"); `our_id` is the outbox
        row's. Raises Refused, Unavailable or NoAnswer."""

    async def balance(self) -> Balance:
        """The account's balance; also proves the credentials. Raises as `send`."""

    async def was_sent(self, phone: str, our_id: int) -> bool:
        """Whether the provider has a message by our id to that phone (only when
        `tracks_our_id`). Raises as `send` when it cannot say."""

    async def close(self) -> None: ...


Factory = Callable[[SmsConfig], Gateway]


def factory(name: str) -> Factory:
    """The gateway class for `[sms] provider`: a built-in one, else the entry point of
    that name in helpgate.sms_gateways."""
    if name in BUILTIN:
        module, _, attribute = BUILTIN[name].partition(":")
        return getattr(importlib.import_module(module), attribute)
    found = [point for point in entry_points(group=ENTRY_POINT_GROUP) if point.name == name]
    if not found:
        installed = sorted({point.name for point in entry_points(group=ENTRY_POINT_GROUP)})
        raise SmsSetupError(
            f"sms.provider {name!r}: no such SMS gateway; built in: {', '.join(BUILTIN)}"
            + (f"; installed: {', '.join(installed)}" if installed else "")
            + f" (a package adds one under the entry-point group {ENTRY_POINT_GROUP})")
    try:
        return found[0].load()
    except Exception as exc:  # a broken plugin: say which, in one line
        raise SmsSetupError(f"sms.provider {name!r}: cannot load {found[0].value}: "
                            f"{type(exc).__name__}: {exc}") from None


def gateway(settings: SmsConfig) -> Gateway:
    """The configured provider, ready to call (no request made yet)."""
    if not settings.provider:
        raise SmsSetupError("sms is not configured: set [sms] provider")
    return factory(settings.provider)(settings)


def require(settings: SmsConfig, title: str, *keys: str) -> None:
    """A provider's constructor: these `[sms]` keys must be set."""
    missing = [key for key in keys if not getattr(settings, key)]
    if missing:
        raise SmsSetupError(f"sms.provider {settings.provider!r} ({title}) needs "
                            + " and ".join(f"sms.{key}" for key in missing))


def digits(phone: str) -> str:
    """International digits without "+", as every built-in provider takes a number."""
    return phone.lstrip("+")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    text: str
    retry_after: float | None = None

    def json(self, title: str) -> Any:
        """The answer's JSON. An answer that is not JSON tells nothing about the SMS: a
        provider's own refusal (4xx) is final, otherwise it may have gone out."""
        try:
            return json.loads(self.text)
        except ValueError:
            snippet = " ".join(self.text.split())[:120] or "an empty answer"
            if 400 <= self.status < 500:
                raise Refused(f"{title} answered HTTP {self.status}: {snippet}") from None
            raise NoAnswer(f"{title} answered HTTP {self.status} with something that is "
                           f"not its API's answer: {snippet}") from None


class Http:
    """POSTs and GETs to one provider, with the failures sorted into the three outcomes.

    Only a failure to connect proves that nothing was written; anything after that (a
    timeout waiting for the answer, a connection dropped, a whole exchange too slow) is
    NoAnswer. No request is ever repeated here.
    """

    def __init__(self, title: str, base_url: str, timeout: float) -> None:
        self.title = title
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Created on first use, on the loop that uses it.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout,
                                              sock_connect=self.timeout,
                                              sock_read=self.timeout),
                connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE, limit=100))
        return self._session

    async def request(self, method: str, path: str, form: dict[str, str] | None = None,
                      **kwargs: Any) -> Answer:
        """`form`: fields sent as an application/x-www-form-urlencoded body."""
        url = self.base_url + path
        if form is not None:
            # Encoded here: aiohttp's FormData costs more than the rest of the request.
            kwargs["data"] = urlencode(form).encode()
            kwargs["headers"] = {**kwargs.get("headers", {}),
                                 "Content-Type": "application/x-www-form-urlencoded"}
        try:
            async with asyncio.timeout(self.timeout * WHOLE_EXCHANGE):
                async with self._client().request(method, url, **kwargs) as response:
                    text = await response.text(errors="replace")
                    status = response.status
                    retry_after = _seconds(response.headers.get("Retry-After"))
        except _NOT_CONNECTED as exc:
            raise Unavailable(f"cannot connect to {self.title} at {self.base_url}: "
                              f"{_reason(exc)}") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise NoAnswer(f"no answer from {self.title} after the request was sent "
                           f"({_reason(exc)})") from None
        if status == 429:
            raise Unavailable(f"{self.title} asks to slow down (HTTP 429)", retry_after)
        if status >= 500:
            raise Unavailable(f"{self.title} failed (HTTP {status}): "
                              f"{' '.join(text.split())[:120]}", retry_after)
        return Answer(status, text, retry_after)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# Failures that happen before a byte of the request is written.
_NOT_CONNECTED: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError,) + (
    (aiohttp.ConnectionTimeoutError,) if hasattr(aiohttp, "ConnectionTimeoutError") else ())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
