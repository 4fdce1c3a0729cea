"""Staff reply tokens: issued with staff notifications (the staff_auth rule looks them up
through the Directory), revoked by an admin (an employee leaves, a reply address leaked).

One live token per ticket and employee, reused by every notification of that ticket to
that employee; a revoked one is never reused, the next notification gets a new one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from helpgate.threading.markers import new_reply_token
from helpgate.ticketstore.models import Employee, StaffToken, Ticket
from helpgate.ticketstore.repository import fetch_scalar, insert_later

TOKENS = StaffToken.__table__
_LIVE = select(TOKENS.c.token).where(
    TOKENS.c.ticket_id == bindparam("ticket_id"),
    TOKENS.c.employee_id == bindparam("employee_id"),
    TOKENS.c.revoked_at.is_(None)).order_by(TOKENS.c.id.desc()).limit(1)
_CACHE = "reply_tokens"


class TokenError(ValueError):
    """Tokens cannot be revoked as asked (no such employee or ticket)."""


def token_for(session: Session, ticket_id: int, employee_id: int, now: datetime,
              new_ticket: bool = False) -> str:
    """The live token of this ticket and employee, made when there is none. `new_ticket`
    says the ticket was created in this transaction, so no token can exist yet."""
    cache: dict = session.info.setdefault(_CACHE, {})
    key = (ticket_id, employee_id)
    if key not in cache:
        token = None if new_ticket else fetch_scalar(
            session, _LIVE, {"ticket_id": ticket_id, "employee_id": employee_id})
        if token is None:
            token = new_reply_token()
            insert_later(session, StaffToken, [dict(
                token=token, ticket_id=ticket_id, employee_id=employee_id, created_at=now)])
        cache[key] = token
    return cache[key]


def revoke(session: Session, email: str, now: datetime,
           ticket_number: int | None = None) -> int:
    """Revoke the employee's live tokens (of one ticket, or all); returns how many."""
    employee = session.scalar(select(Employee).where(Employee.email == email.strip().lower()))
    if employee is None:
        raise TokenError(f"no employee with email {email}")
    query = update(StaffToken).where(StaffToken.employee_id == employee.id,
                                     StaffToken.revoked_at.is_(None))
    if ticket_number is not None:
        ticket_id = session.scalar(select(Ticket.id).where(Ticket.number == ticket_number))
        if ticket_id is None:
            raise TokenError(f"no ticket {ticket_number}")
        query = query.where(StaffToken.ticket_id == ticket_id)
    count = session.execute(query.values(revoked_at=now)).rowcount
    session.info.pop(_CACHE, None)
    return count
