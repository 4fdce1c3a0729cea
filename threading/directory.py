"""The read-only view of the store that threading rules see.

Rules take their decisions from this small interface, never from the database, so each
rule is tested with an in-memory directory and no I/O (DESIGN.md). The ticket store
implements it over a database session (ticketstore/repository.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from helpgate.threading.context import Person, TicketView


@dataclass(frozen=True, slots=True)
class ReplyToken:
    """A staff reply token: whose and for which ticket, and whether it was revoked."""

    ticket_id: int
    employee_id: int
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class ChatTickets:
    """A customer's tickets in one chat (their private chat with the bot, or a group):
    what rule conversation chooses among."""

    # The ticket they chose for their messages (a button, /new), when it still exists.
    chosen: TicketView | None
    # The most recent ticket, whatever its state (reopen rules decide what it may take).
    latest: TicketView | None
    # Tickets not in a closed-class state, the most recently active first.
    open: tuple[TicketView, ...] = ()


class Directory(Protocol):
    def ticket_by_number(self, number: int) -> TicketView | None:
        """The ticket with this number, locked for the rest of the transaction."""

    def ticket_by_message_ids(self, message_ids: list[str]) -> TicketView | None:
        """The ticket of a stored mail or of one of our outgoing mails with one of these ids."""

    def outbox_id_by_message_id(self, message_id: str) -> int | None:
        """Our outgoing message with this Message-ID."""

    def person_by_email(self, email: str) -> Person | None:
        """The employee with this address, else the contact with it."""

    def person_by_identity(self, channel: str, external_id: str) -> Person | None:
        """The employee with this id on the channel, else the contact with it; on
        "email" the id is the address (person_by_email)."""

    def chat_tickets(self, contact_id: int, channel: str, sender_id: str | None,
                     chat: str | None, open_statuses: list[str]) -> ChatTickets:
        """The contact's tickets from `channel` in `chat` (None: their private chat)."""

    def company_by_chat(self, channel: str, chat: str) -> int | None:
        """The customer company a group chat is bound to in the directory."""

    def company_by_domain(self, domain: str) -> int | None:
        """The id of the company owning this mail domain."""

    def earliest_admin(self) -> Person | None:
        """The earliest-created employee with the administrator role (R-TH-3)."""

    def messages_from_since(self, sender: str, since: datetime) -> int:
        """How many messages this sender sent since that time (R-TH-8 throttling)."""

    def reply_token(self, token: str) -> ReplyToken | None:
        """The staff reply token with this value (revoked ones too), or None."""

    def ticket_history(self, ticket_id: int) -> list[str]:
        """What the ticket already holds and what we sent about it, newest first: its
        comments' texts and our outgoing messages' subjects and texts (R-TH-2: a reply's
        text equal to these is quoted history; text equal to none is the customer's)."""
