"""The one normalized inbound record every channel produces, and what makes a channel.

Whatever a message came through (email, Telegram, VK, web form), the pipeline sees the
same `InboundMessage` (SPEC §1). Adapters only translate; they take no ticket decision and
acknowledge upstream only after the pipeline has stored the raw message.

A channel is one folder of channels/ that exports a `ChannelKind`: its name, how its raw
records become messages again (replay, crash recovery), and the adapters its config
section asks for. Every adapter is built the same way, from the config and the
`Services` the gateway hands it, and started and stopped the same way (`Adapter`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

# The record itself lives with the rules that read it (threading/ imports no channel);
# adapters take it from here.
from helpgate.threading.message import (
    ChatAction,
    DeliveryStatus,
    InboundAttachment,
    InboundMessage,
    StaffAction,
)

__all__ = ["AccessTokens", "Adapter", "Batches", "ChannelKind", "ChannelStartError",
           "CursorStore", "DeliveryStatus", "ChatAction", "Finding", "InboundAttachment",
           "InboundMessage", "Services", "StaffAction"]


class Adapter(Protocol):
    """Turns the outside world into InboundMessages from start() until stop(). stop()
    finishes what is being stored: nothing acknowledged upstream is left undecided."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class CursorStore(Protocol):
    """Where an adapter keeps how far it has read (an IMAP UID, a long-poll offset).
    Moved only after what it covers is stored."""

    async def get(self, key: str) -> tuple[int | None, int] | None:
        """(validity, position), or None before the first read."""

    async def set(self, key: str, validity: int | None, position: int) -> None: ...


class AccessTokens(Protocol):
    """OAuth2 access tokens by grant name (gateway/oauth.py TokenBroker). `token` raises
    config.oauth.GrantNeedsLogin when a person must log in again, TokenUnavailable when
    it may pass; `rejected` names a token a server just refused (it is refreshed)."""

    async def token(self, name: str, rejected: str | None = None) -> str: ...

    async def refused(self, name: str, detail: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Services:
    """What the gateway gives every adapter: the one way in, and its helpers."""

    # Stores and decides messages; returns after they are committed (R-TS-5), with one
    # result per message (its `inbound` id and `action`).
    ingest: Callable[[list[InboundMessage], str | None], Awaitable[list[Any]]]
    # The channel's raw records -> messages, in worker processes where that pays.
    parse_many: Callable[[str, list[bytes]], Awaitable[list[InboundMessage]]]
    cursors: CursorStore
    clock: Callable[[], datetime]
    # Access tokens of mailboxes with auth = "oauth2"; None when none is configured.
    tokens: AccessTokens | None = None


@dataclass(frozen=True, slots=True)
class ChannelKind:
    """One channel, as the registry (gateway/channels.py) knows it."""

    name: str
    # A kept raw record -> its message again; never raises (a problem quarantines it).
    parse: Callable[[bytes, datetime], InboundMessage]
    # The adapters the config asks for (none when the channel is not configured).
    adapters: Callable[[Any, Services], Sequence[Adapter]]
    # `helpgate <name> check`: the channel's set-up as the outside service sees it (the
    # token, the mode, what the service will deliver), one Finding per thing checked.
    check: Callable[[Any], Awaitable[list[Finding]]] | None = None
    # Parsing a record costs enough (MIME, charsets, HTML) that a large batch is worth
    # parsing in worker processes; a messenger's JSON record is not.
    heavy_parse: bool = False


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a channel check looked at, in plain words. `ok` False means the channel
    will not work until it is fixed (the check exits 1); `fix` says what to do, and may
    accompany an ok finding as advice (a note that fails nothing)."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


class ChannelStartError(Exception):
    """A channel cannot start for a reason the admin must fix (its port in use): the
    message says what to change; `helpgate run` prints it as one line and exits 1."""


T = TypeVar("T")


class Batches(Generic[T]):
    """Items cut, in order, into batches of at most `count` items and, but for a single
    larger item, `budget` bytes: a batch is stored in one transaction (one disk sync), so
    batches are large, and bytes bound them so a run of scans is not in memory at once.
    The IMAP reader cuts its backlog's UIDs so, and a bulk import its raw mails."""

    def __init__(self, count: int, budget: int) -> None:
        self.count, self.budget = count, budget
        self._batch: list[T] = []
        self._held = 0

    def add(self, item: T, size: int) -> list[T] | None:
        """Take `item`; the batch it closed (the item did not fit), or None."""
        done = None
        if self._batch and (len(self._batch) == self.count
                            or self._held + size > self.budget):
            done, self._batch, self._held = self._batch, [], 0
        self._batch.append(item)
        self._held += size
        return done

    def rest(self) -> list[T] | None:
        """The last batch, or None when there is none."""
        done, self._batch, self._held = self._batch or None, [], 0
        return done
