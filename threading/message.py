"""The normalized inbound record: what every channel produces and every rule reads.

Whatever a message came through (email, Telegram, VK, web form), the pipeline and the
rules see the same `InboundMessage` (SPEC §1). It lives here, beside the rules, so that
threading/ needs nothing from channels/; adapters import it through channels/base.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# A channel marks a message that filled a spam trap (the web form's hidden field) with
# this header, carrying what was put there; rule spam_trap quarantines it.
SPAM_TRAP_HEADER = "x-helpgate-spam-trap"


@dataclass(frozen=True, slots=True)
class InboundAttachment:
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class ChatAction:
    """What a customer asked the bot to do, rather than words for a ticket: close a
    ticket (/close), choose which open ticket their messages go to, rate a resolved one.

    `ticket` is the number the button named (None: the command named none); `value` the
    rating 1-5. Buttons carry it as `data()` (Telegram's callback_data, VK's payload).
    """

    name: str                 # "close" | "choose" | "rate" | "new"
    ticket: int | None = None
    value: int | None = None

    NAMES = ("close", "choose", "rate", "new")

    def data(self) -> str:
        return ":".join(str(part) for part in (self.name, self.ticket, self.value)
                        if part is not None)

    @classmethod
    def from_data(cls, data: str) -> ChatAction | None:
        """A button's data -> the action; None for data that is not one of ours."""
        name, *rest = (data or "").split(":")
        if name not in cls.NAMES or len(rest) > 2 or not all(p.isdigit() for p in rest):
            return None
        numbers = [int(p) for p in rest]
        action = cls(name, *numbers)
        if name == "rate" and (action.ticket is None or action.value not in range(1, 6)):
            return None
        if name == "choose" and action.ticket is None:
            return None
        return action


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """What a bounce (RFC 3464 DSN) reports about one of our outgoing messages."""

    original_message_id: str | None
    recipient: str | None
    action: str | None
    status: str | None
    diagnostic: str | None


@dataclass(frozen=True, slots=True)
class StaffAction:
    """A message written in a ticket's topic of the staff group (a Telegram forum topic):
    not a customer's request but staff acting on the ticket the topic belongs to, if the
    author is an employee (gateway/staff_actions.py). The topic is named by its chat and
    thread id; `command` is the bot command it began with ("note", "close", …; the
    message's text is then the words after it), None for plain words."""

    chat_id: int
    thread_id: int
    command: str | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    channel: str
    raw: bytes
    # Identifies the same message delivered twice: Message-ID, Telegram update, VK event.
    dedupe_key: str
    received_at: datetime
    sender_email: str | None = None
    sender_name: str | None = None
    # The sender's id on the channel (a Telegram user id, a VK id), when it is not the
    # address: mail is known by sender_email alone. A phone number, when the channel
    # gives one (a shared Telegram contact, an SMS).
    sender_id: str | None = None
    sender_phone: str | None = None
    # The language the channel says the sender uses (Telegram's language_code), for a
    # bot's answer when their words do not tell.
    sender_language: str | None = None
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
    # A line of a chat (a messenger): with no ticket named, it continues the sender's
    # latest ticket on the channel (threading rule conversation). False for mail.
    chat: bool = False
    # A messenger's edit: the `message_id` of the message it rewrites. The comment that
    # message made takes the new text and keeps the old one in its history.
    edit_of: str | None = None
    # Not words but a request to the bot (a command, a pressed button): carried out by
    # gateway/customer_actions.py, stored as no comment.
    action: ChatAction | None = None
    # The messenger chat the message came from when it is not the sender's private chat
    # (a customer company's group): replies go there.
    chat_id: str | None = None
    # Written in a ticket's staff topic: a staff action, never a customer's message.
    staff_action: StaffAction | None = None
    # The quote stripper's reading of the text as it stands on no ticket (a
    # threading.quotes.Reading), worked out where a batch is parsed, in a worker process,
    # so that the store's thread need not; None: worked out when needed.
    quote_reading: Any = None

    @property
    def sender_key(self) -> str | None:
        """The sender as one string, for counting and locking per sender: the address,
        or "channel:id"."""
        if self.sender_id:
            return f"{self.channel}:{self.sender_id}"
        return self.sender_email

    @property
    def sender(self) -> tuple[str, str] | None:
        """Who sent it, as (channel, id): the address on mail, the user id on a
        messenger. Rules ask the directory by this identity."""
        if self.sender_id:
            return self.channel, self.sender_id
        if self.sender_email:
            return "email", self.sender_email
        return None
