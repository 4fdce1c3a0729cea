"""What the store says about reaching people: a contact's email, phone and messenger ids,
every employee's, the employees an alert about the gateway goes to, and the identities a
channel refused to deliver to.

outbound/targets.py turns these facts into a channel and an address, and
outbound/alerts.py into its recipients; the SQL is here because the store's SQL is
ticketstore's alone (docs/ARCHITECTURE.md). The statements a notification runs are built
once, at import: constructing a statement costs more than running it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import Contact, Employee, Identity

_CONTACTS = Contact.__table__
_IDENTITIES = Identity.__table__
_EMPLOYEES = Employee.__table__
_EMAIL = select(_CONTACTS.c.email, _CONTACTS.c.phone).where(
    _CONTACTS.c.id == bindparam("contact_id"))
# Identities a channel refused to deliver to are passed over (mark_unreachable).
_IDS = select(_IDENTITIES.c.channel, _IDENTITIES.c.external_id).where(
    _IDENTITIES.c.kind == "contact", _IDENTITIES.c.contact_id == bindparam("contact_id"),
    _IDENTITIES.c.unreachable_since.is_(None)
).order_by(_IDENTITIES.c.id)
_STAFF = select(_EMPLOYEES.c.id, _EMPLOYEES.c.email, _EMPLOYEES.c.phone).order_by(
    _EMPLOYEES.c.id)
_STAFF_IDS = select(_IDENTITIES.c.employee_id, _IDENTITIES.c.channel,
                    _IDENTITIES.c.external_id).where(
    _IDENTITIES.c.kind == "employee").order_by(_IDENTITIES.c.id)
_WITH_EMAIL = select(_EMPLOYEES.c.email, _EMPLOYEES.c.role).where(
    _EMPLOYEES.c.email.is_not(None)).order_by(_EMPLOYEES.c.id)


def contact_reach(session: Session, contact_id: int) -> tuple[list, object | None]:
    """A contact's (channel, external_id) identities that are still reachable, in the
    order they were added, and their row of (email, phone); None when there is none."""
    db = session.connection()
    ids = list(db.execute(_IDS, {"contact_id": contact_id}))
    return ids, db.execute(_EMAIL, {"contact_id": contact_id}).first()


def staff_reach(session: Session) -> tuple[list, list]:
    """Every employee's (id, email, phone) by id, and every employee identity's
    (employee_id, channel, external_id) in the order they were added."""
    db = session.connection()
    employees = list(db.execute(_STAFF))
    return employees, list(db.execute(_STAFF_IDS))


def employees_with_email(session: Session) -> list:
    """(email, role) of every employee who has an email, by id."""
    return session.execute(_WITH_EMAIL).all()


def mark_unreachable(session: Session, contact_id: int, channel: str, external_id: str,
                     now: datetime) -> None:
    """The channel refused to deliver to this contact there (they blocked the bot): the
    identity is unreachable since `now` until they write from it again
    (`reachable_again` of ticketstore/repository.py)."""
    session.execute(update(_IDENTITIES).where(
        _IDENTITIES.c.kind == "contact", _IDENTITIES.c.contact_id == contact_id,
        _IDENTITIES.c.channel == channel, _IDENTITIES.c.external_id == external_id,
        _IDENTITIES.c.unreachable_since.is_(None)).values(unreachable_since=now))
