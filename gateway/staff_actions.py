"""Staff acting on a ticket from its topic in the Telegram staff group.

A message written in a ticket's topic (channels/telegram/staff.py gives it a
`StaffAction`) is not a customer's request and goes through no threading rule: the topic
names the ticket (ticketstore/chat_map.py), and the author must be an employee known by
their Telegram id (the directory's `telegram_id`). Then

- plain words (and files) are a public comment by that employee, relayed to the customer
  the way an employee's email answer is (`Notifier.comment`);
- `/note text` is a private comment, relayed to no one;
- `/close` moves the ticket to a closed state its status allows next (`closed` when it
  may, else the first closed-class one: `resolved` from `open` in the default model),
  through the StatusService like every status change.

Anything else changes nothing: a message from someone who is not an employee, an unknown
command, an edit (the customer already has the first text) is kept as ignored with the
reason, and helpgate says so in the topic; a topic no ticket owns is staff's own and is
ignored quietly. The message's (chat, message id) is recorded against the ticket (and the
comment it made).
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from helpgate.outbound.staff_topics import FROM_TOPIC
from helpgate.threading.context import Action
from helpgate.threading.message import InboundMessage
from helpgate.ticketstore import chat_map
from helpgate.ticketstore.models import Comment, Ticket
from helpgate.ticketstore.repository import (
    SessionDirectory,
    insert_returning_id,
    locked_ticket,
)
from helpgate.ticketstore.statuses import StatusError, closing_state

if TYPE_CHECKING:
    from helpgate.gateway.pipeline import Pipeline

RULE = "staff_topic"
# The result's action when /close moved the ticket (no comment is written).
CLOSED = "closed"


class StaffActions:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config

    def act(self, session: Session, inbound_id: int, message: InboundMessage,
            now: datetime) -> dict:
        """Do what the message asks, in the decision's transaction; the result's fields
        (action, ticket, comment, rules, reason)."""
        where = message.staff_action
        ticket_id = chat_map.ticket_by_topic(session, where.chat_id, where.thread_id)
        if ticket_id is None:
            return _ignored(None, f"topic {where.thread_id} of the staff group belongs to no "
                                  "ticket (staff's own topic)")
        ticket = locked_ticket(session, ticket_id)
        texts = self.config.text(self.config.staff_language)
        who = message.sender_name or message.sender_id
        person = SessionDirectory(session).person_by_identity("telegram", message.sender_id)
        if person is None or person.kind != "employee":
            self._tell(session, ticket, inbound_id, texts.topic_not_employee.format(
                name=who, id=message.sender_id), now)
            return _ignored(ticket, f"{who} (telegram {message.sender_id}) is not an employee "
                                    "known by that Telegram id: refused, nothing changed")
        if message.edit_of:
            self._tell(session, ticket, inbound_id, texts.topic_edit_ignored, now)
            return _ignored(ticket, "an edit in the staff topic is not relayed: the customer "
                                    "has the first text")
        command = where.command
        if command is None or command == "note":
            if not message.text.strip() and not message.attachments:
                return _ignored(ticket, "an empty /note")
            return self._comment(session, ticket, inbound_id, message, person,
                                 public=command is None, now=now)
        if command == "close":
            return self._close(session, ticket, inbound_id, message, person, now)
        self._tell(session, ticket, inbound_id,
                   texts.topic_unknown_command.format(command=command), now)
        return _ignored(ticket, f"unknown command /{command} in the staff topic")

    def _comment(self, session: Session, ticket: Ticket, inbound_id: int,
                 message: InboundMessage, person, public: bool, now: datetime) -> dict:
        pipeline = self.pipeline
        values = dict(
            ticket_id=ticket.id, author_kind="employee", contact_id=None, employee_id=person.id,
            public=public, channel=message.channel,
            text=pipeline._comment_text(SimpleNamespace(text=message.text), message),
            inbound_id=inbound_id, message_id=message.message_id, email_from=person.email,
            email_to=[], email_cc=[], email_date=message.date, headers={}, created_at=now,
            decision={"action": FROM_TOPIC, "rules": [RULE],
                      "notes": [f"{RULE}: {'answer' if public else 'private note'} written "
                                "in the ticket's staff topic"]})
        comment = SimpleNamespace(id=insert_returning_id(session, Comment, values),
                                  author=person, file_count=len(message.attachments), **values)
        pipeline._attachments(session, comment.id, message)
        ticket.updated_at = now
        if public and ticket.first_response_at is None:
            ticket.first_response_at = now
        self._remember(session, ticket, comment.id, message, now)
        if not pipeline.quiet:
            pipeline.notifier.comment(session, ticket, comment, now)
        kind = "an answer to the customer" if public else "a private note"
        return {"action": Action.COMMENT, "ticket": ticket.number, "comment": comment.id,
                "rules": [RULE], "reason": f"{kind} by {person.name or person.email} in the "
                                           "staff topic"}

    def _close(self, session: Session, ticket: Ticket, inbound_id: int,
               message: InboundMessage, person, now: datetime) -> dict:
        texts = self.config.text(self.config.staff_language)
        target = closing_state(self.config.statuses, ticket.status)
        who = person.name or person.email or str(person.id)
        try:
            if target is None:
                raise StatusError(f"status {ticket.status} allows no closed status next")
            self.pipeline.statuses.request(session, ticket, target, now,
                                           f"/close by {who} in the staff topic"[:200])
        except StatusError as exc:
            self._tell(session, ticket, inbound_id, texts.topic_cannot_close.format(
                number=ticket.number, reason=exc), now)
            return _ignored(ticket, f"/close refused: {exc}")
        self._remember(session, ticket, None, message, now)
        return {"action": CLOSED, "ticket": ticket.number, "comment": None, "rules": [RULE],
                "reason": f"/close by {who} in the staff topic: {target}"}

    def _tell(self, session: Session, ticket: Ticket, inbound_id: int, text: str,
              now: datetime) -> None:
        if not self.pipeline.quiet:
            self.pipeline.notifier.topic_notice(session, ticket, f"inbound{inbound_id}",
                                                text, now)

    @staticmethod
    def _remember(session: Session, ticket: Ticket, comment_id: int | None,
                  message: InboundMessage, now: datetime) -> None:
        chat_id, message_id = message.message_id.split(":")[1:]
        chat_map.remember_messages(session, message.channel, ticket.id, comment_id,
                                   [(int(chat_id), int(message_id))], now)


def _ignored(ticket: Ticket | None, reason: str) -> dict:
    return {"action": Action.IGNORED, "ticket": ticket.number if ticket else None,
            "comment": None, "rules": [RULE], "reason": reason}

