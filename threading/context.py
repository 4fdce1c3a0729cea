"""The typed context the threading rules read and write, and the Decision they produce.

Rules never pass magic string keys around (DESIGN.md): each field below has one meaning,
and `fired` records, in order, every rule that changed the outcome, so the decision stored
on a comment explains itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from helpgate.config.schema import Config
from helpgate.threading.message import InboundMessage


class Action(StrEnum):
    NEW_TICKET = "new_ticket"
    COMMENT = "comment"
    REOPENED = "reopened"
    NEW_TICKET_AFTER_WINDOW = "new_ticket_after_window"
    IGNORED = "ignored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    # A request to a messenger bot (close, choose, rate), carried out (gateway/customer_actions.py).
    ACTION = "action"
    # Kept, not yet decided: the customer is asked which of their open tickets it is for.
    HELD = "held"


@dataclass(frozen=True, slots=True)
class TicketView:
    """What the rules may know of an existing ticket."""

    id: int
    number: int
    status: str
    type: str
    channel: str
    contact_id: int | None
    company_id: int | None
    closed_at: datetime | None
    # For the notifications the decision queues, not for rules.
    subject: str = ""
    assignee_id: int | None = None


@dataclass(frozen=True, slots=True)
class Person:
    """A known sender: an employee or a contact."""

    kind: str  # "employee" | "contact"
    id: int
    email: str | None
    name: str | None
    company_id: int | None = None
    role: str | None = None


@dataclass(slots=True)
class Decision:
    action: Action | None = None
    reason: str | None = None
    # The ticket the message belongs to, once a matching rule found it.
    ticket: TicketView | None = None
    # Set by reopen_policy when the matched ticket cannot take the message: a new ticket
    # is opened and linked to this one.
    previous_ticket: TicketView | None = None
    author: Person | None = None
    # The author only stands in for a sender nobody knows (R-TH-3): the words are not
    # staff's, so they are shown to staff and never relayed to the customer as an answer.
    stand_in_author: bool = False
    # The customer of a new ticket (None: no contact) and a contact to create for it.
    contact: Person | None = None
    create_contact: bool = False
    company_id: int | None = None
    # Status the matched ticket moves to with this message (reopen, waiting -> open).
    new_status: str | None = None
    # The comment text: only the new words (quote_strip), else the whole text.
    text: str | None = None
    # Why the sender gets no acknowledgement though the message is stored (a mailing list).
    no_acknowledgement: str | None = None
    # The outgoing message a bounce reports (outbox id), if we know it.
    bounced_outbox_id: int | None = None
    # Why a mail from an employee's address did not prove it came from them (staff_auth):
    # it is kept as a private note, relayed to no one, and the employee is told why.
    unverified_staff: str | None = None
    # HELD: the tickets the customer is asked to choose among (rule conversation).
    choices: tuple[TicketView, ...] = ()


@dataclass(slots=True)
class Context:
    message: InboundMessage
    config: Config
    now: datetime
    ticket_type: str
    # An admin replays a quarantined message: limits that quarantined it do not apply.
    replay: bool = False
    # An admin imports a mailbox's history (helpgate import): its employees' mail is
    # staff's as it was then, though it carries no reply token of ours.
    history: bool = False
    # The customer was asked which ticket a chat message is for and did not answer in
    # time: it goes to their most recent one instead of waiting longer.
    no_asking: bool = False
    # The ticket id the customer has just chosen for held messages, whatever its state.
    just_chosen: int | None = None
    decision: Decision = field(default_factory=Decision)
    fired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fire(self, rule: str, note: str) -> None:
        self.fired.append(rule)
        self.notes.append(f"{rule}: {note}")

    def stop(self, rule: str, action: Action, reason: str) -> None:
        """End the chain: the message is ignored, quarantined or held; no ticket is
        touched."""
        self.decision.action = action
        self.decision.reason = reason
        self.fire(rule, reason)

    @property
    def stopped(self) -> bool:
        return self.decision.action in (Action.IGNORED, Action.QUARANTINED, Action.HELD)
