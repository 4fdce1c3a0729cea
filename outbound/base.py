"""What every outbound transport (email, Telegram, VK, SMS) promises the outbox worker.

A transport takes one `Outgoing` message and answers with a `DeliveryResult`: delivered,
failed for now (try again later) or failed for good (park it). It never retries by itself
and never touches the database: retries, backoff and "never twice" are the outbox's job
(outbound/outbox.py), the same for every transport. `DeliveryResult` is defined with the
outbox rows' state machine that records it (ticketstore/outbox.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from helpgate.ticketstore.outbox import DeliveryResult


@dataclass(frozen=True, slots=True)
class OutgoingFile:
    """A stored attachment a message carries; the name is as the sender gave it."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One outbox row as a transport sees it."""

    id: int
    channel: str
    kind: str
    recipient: str
    subject: str | None
    text: str
    html: str | None = None
    message_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: tuple[OutgoingFile, ...] = ()
    # The words alone, without the mail's separator and quoted history: what a messenger
    # sends (`text` is the message as a mail).
    content: str = ""
    # Buttons a messenger shows under the words: rows of (label, data), the data a
    # ChatAction's (threading/message.py). Mail has none.
    buttons: tuple[tuple[tuple[str, str], ...], ...] = ()
    # A post in a staff topic (kind "topic"): the ticket's topic now, None when it has
    # none yet in the recipient chat (the transport makes one, named `subject`).
    thread_id: int | None = None
    # Attempts made before this one: a transport that can ask its service whether an
    # earlier attempt got through (SMSC by our own id) does so before sending again.
    attempts: int = 0


class Transport(Protocol):
    """Delivers messages of one channel ("email", "telegram", …)."""

    channel: str

    async def send(self, message: Outgoing) -> DeliveryResult: ...

    async def close(self) -> None: ...
