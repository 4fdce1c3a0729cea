"""What the Notifier (outbound/notify.py) reads of the store to write a notification.

A notification is composed for every message, so these statements are built once, at
import: constructing a statement costs more than running it, and the ORM's loading (a
company's domains, selectin) cost more than the notification. They live here because
the store's SQL is ticketstore's alone (docs/ARCHITECTURE.md); the Notifier decides who
hears what and calls these for the facts.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import (
    Attachment,
    Comment,
    Company,
    Contact,
    Employee,
    OutboxMessage,
    StatusChange,
    Ticket,
    TicketLink,
)
from helpgate.ticketstore.repository import fetch_all

# Earlier notifications to the same employee named in References.
STAFF_THREAD = 4

_OUTBOX = OutboxMessage.__table__
# Built once: constructing a statement costs more than running it (one per new ticket).
_ACKS_SINCE = select(func.count()).select_from(_OUTBOX).where(
    _OUTBOX.c.recipient == bindparam("recipient"), _OUTBOX.c.created_at > bindparam("since"),
    _OUTBOX.c.kind == "ack")
_ACKS_PER_RECIPIENT = select(_OUTBOX.c.recipient, func.count()).where(
    _OUTBOX.c.recipient.in_(bindparam("recipients", expanding=True)),
    _OUTBOX.c.created_at > bindparam("since"), _OUTBOX.c.kind == "ack"
).group_by(_OUTBOX.c.recipient)
_ATTACHMENTS = Attachment.__table__
_FILES = select(_ATTACHMENTS.c.id, _ATTACHMENTS.c.filename, _ATTACHMENTS.c.size,
                _ATTACHMENTS.c.stored).where(
    _ATTACHMENTS.c.comment_id == bindparam("comment_id")).order_by(_ATTACHMENTS.c.id)
_CONTACTS = Contact.__table__
_CONTACT = select(_CONTACTS.c.name, _CONTACTS.c.email, _CONTACTS.c.company_id).where(
    _CONTACTS.c.id == bindparam("id"))
_EMPLOYEES = Employee.__table__
_EMPLOYEE = select(_EMPLOYEES.c.name, _EMPLOYEES.c.email).where(
    _EMPLOYEES.c.id == bindparam("id"))
_COMMENTS = Comment.__table__
_CUSTOMER_LATEST = select(_COMMENTS.c.text).where(
    _COMMENTS.c.ticket_id == bindparam("ticket_id"), _COMMENTS.c.author_kind != "employee"
).order_by(_COMMENTS.c.id.desc()).limit(1)
# Mail's Message-IDs only: a messenger's message ids name chat lines, not mails.
_THREAD = select(_COMMENTS.c.message_id).where(
    _COMMENTS.c.ticket_id == bindparam("ticket_id"), _COMMENTS.c.message_id.is_not(None),
    _COMMENTS.c.channel == "email"
).order_by(_COMMENTS.c.id.desc()).limit(5)
_STAFF_SENT = select(_OUTBOX.c.recipient, _OUTBOX.c.message_id).where(
    _OUTBOX.c.ticket_id == bindparam("ticket_id"), _OUTBOX.c.kind == "staff"
).order_by(_OUTBOX.c.id.desc()).limit(STAFF_THREAD * 20)


def acks_since(session: Session, recipient: str, since: datetime) -> int:
    """Acknowledgements queued to `recipient` after `since`."""
    return session.connection().scalar(_ACKS_SINCE, {"recipient": recipient, "since": since})


def acks_per_recipient(session: Session, recipients: list[str], since: datetime):
    """(recipient, count) of the acknowledgements queued to each after `since`; those
    with none are not named."""
    return session.connection().execute(
        _ACKS_PER_RECIPIENT, {"recipients": recipients, "since": since})


def comment_files(session: Session, comment_id: int) -> list:
    """The comment's attachments without their content: id, filename, size, stored."""
    return fetch_all(session, _FILES, {"comment_id": comment_id})


def contact_card(session: Session, contact_id: int):
    """A contact's name, email and company_id; None when there is none."""
    return session.connection().execute(_CONTACT, {"id": contact_id}).first()


def contact(session: Session, contact_id: int) -> Contact | None:
    """The Contact entity (from the session's identity map when it is there)."""
    return session.get(Contact, contact_id)


def company(session: Session, company_id: int) -> Company | None:
    """The Company entity (from the session's identity map when it is there)."""
    return session.get(Company, company_id)


def employee_card(session: Session, employee_id: int):
    """An employee's name and email; None when there is none."""
    return session.connection().execute(_EMPLOYEE, {"id": employee_id}).first()


def customer_latest(session: Session, ticket_id: int) -> str | None:
    """The text of the latest comment on the ticket not written by staff."""
    return session.connection().scalar(_CUSTOMER_LATEST, {"ticket_id": ticket_id})


def mail_thread(session: Session, ticket_id: int) -> list[str]:
    """The Message-IDs of the ticket's latest mails, oldest first."""
    ids = session.connection().execute(_THREAD, {"ticket_id": ticket_id}).scalars().all()
    return list(reversed(ids))


def staff_sent(session: Session, ticket_id: int) -> list:
    """(recipient, message_id) of the ticket's stored staff notifications, newest first."""
    return fetch_all(session, _STAFF_SENT, {"ticket_id": ticket_id})


def previous_status(session: Session, ticket_id: int) -> str | None:
    """The status the ticket's latest status change left."""
    return session.scalar(select(StatusChange.from_status)
                          .where(StatusChange.ticket_id == ticket_id)
                          .order_by(StatusChange.id.desc()).limit(1))


def previous_ticket(session: Session, ticket_id: int) -> int | None:
    """The number of the ticket this one follows (a new ticket after the reopen window)."""
    return session.scalar(select(Ticket.number).join(
        TicketLink, TicketLink.linked_id == Ticket.id).where(
        TicketLink.ticket_id == ticket_id, TicketLink.relation == "follows"))
