"""What every outbound transport (email, Telegram, VK, SMS) promises the outbox worker.

A transport takes one `Outgoing` message and answers with a `DeliveryResult`: delivered,
failed for now (try again later) or failed for good (park it). It never retries by itself
and never touches the database: retries, backoff and "never twice" are the outbox's job
(outbound/outbox.py), the same for every transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivered: bool
    # Worth another attempt later (a 4xx answer, a network error, a rate limit).
    temporary: bool = False
    error: str | None = None
    # The recipient cannot be reached on this channel at all (they blocked the bot): the
    # message goes by the next channel that reaches them (outbound/targets.py).
    unreachable: bool = False
    # Seconds the other side asked us to wait before trying again (a messenger's rate
    # limit): the outbox waits at least this long, its own backoff when that is longer.
    retry_after: float | None = None
    # What the messenger named the messages that went out, (chat id, message id) each,
    # whatever the outcome (a failure after a part still posted that part): recorded
    # against the row's ticket and comment (ticketstore/chat_map.py).
    # Not part of the outcome: two results compare equal whatever they posted.
    posted: tuple[tuple[int, int], ...] = field(default=(), compare=False)
    # (chat id, thread id) of a staff topic the transport made for the row's ticket (the
    # first post, or the topic staff deleted made again): recorded as the ticket's topic.
    topic: tuple[int, int] | None = field(default=None, compare=False)
    # The request reached the other side and its answer did not come back (a timeout
    # after the request was written, where the service has no idempotency key): it may
    # have gone out. The outbox keeps it "uncertain", never sends it again by itself.
    uncertain: bool = False

    @classmethod
    def ok(cls, posted: tuple[tuple[int, int], ...] = (),
           topic: tuple[int, int] | None = None) -> DeliveryResult:
        return cls(delivered=True, posted=posted, topic=topic)

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None) -> DeliveryResult:
        return cls(delivered=False, temporary=True, error=error, retry_after=retry_after)

    @classmethod
    def failed(cls, error: str) -> DeliveryResult:
        return cls(delivered=False, temporary=False, error=error)

    @classmethod
    def unknown(cls, error: str) -> DeliveryResult:
        return cls(delivered=False, temporary=False, error=error, uncertain=True)

    @classmethod
    def unreachable_here(cls, error: str) -> DeliveryResult:
        return cls(delivered=False, temporary=False, error=error, unreachable=True)


class Transport(Protocol):
    """Delivers messages of one channel ("email", "telegram", …)."""

    channel: str

    async def send(self, message: Outgoing) -> DeliveryResult: ...

    async def close(self) -> None: ...
