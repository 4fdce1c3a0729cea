"""The one normalized inbound record every channel produces, and the channel protocol.

Whatever a message came through (email, Telegram, VK, web form), the pipeline sees the
same `InboundMessage` (SPEC §1). Adapters only translate; they take no ticket decision and
acknowledge upstream only after the pipeline has stored the raw message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class InboundAttachment:
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """What a bounce (RFC 3464 DSN) reports about one of our outgoing messages."""

    original_message_id: str | None
    recipient: str | None
    action: str | None
    status: str | None
    diagnostic: str | None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    channel: str
    raw: bytes
    # Identifies the same message delivered twice: Message-ID, Telegram update, VK event.
    dedupe_key: str
    received_at: datetime
    sender_email: str | None = None
    sender_name: str | None = None
    reply_to: str | None = None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    subject: str = ""
    message_id: str | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    date: str | None = None
    # The readable body: text/plain when present, else the HTML part as text.
    text: str = ""
    html: str | None = None
    text_from_html: bool = False
    attachments: tuple[InboundAttachment, ...] = ()
    # Headers the rules look at (auto-reply, loop, list markers), lower-case names.
    headers: dict[str, str] = field(default_factory=dict)
    delivery_status: DeliveryStatus | None = None
    # Why the message cannot be processed (no sender, empty, no structure): quarantine it.
    problem: str | None = None


class Channel(Protocol):
    """An adapter that turns the outside world into InboundMessages until stopped."""

    name: str

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


class ChannelStartError(Exception):
    """A channel cannot start for a reason the admin must fix (its port in use): the
    message says what to change; `helpgate run` prints it as one line and exits 1."""
