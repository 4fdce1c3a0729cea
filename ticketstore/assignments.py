"""Who is responsible for a ticket: the one way a ticket is assigned, passed on or
unassigned.

Like `StatusService` (ticketstore/statuses.py), `AssignmentService` records each change
in a history row (who was assigned, by whom, when) and calls a listener in the same
transaction, so the CLI and the staff API assign the same way and the Notifier (passed
in by the gateway, gateway/status_service.py) tells the new assignee; the store itself
imports nothing of the outbound side.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import AssignmentChange, Employee, Ticket

# Called in the change's transaction, after the history row is written (it has an id).
AssignmentListener = Callable[[Session, Ticket, AssignmentChange, datetime], object]
MAX_ID = 2**63 - 1


class AssignmentError(ValueError):
    """An assignment that cannot be made (no such employee); nothing changed."""


def find_employee(session: Session, ref: str | int) -> Employee:
    """The employee named by id (a number) or email address; AssignmentError if none."""
    text = str(ref).strip()
    employee = None
    if isinstance(ref, int) or text.isdigit():
        number = int(text) if text.isascii() and text.isdigit() else 0
        employee = session.get(Employee, number) if 1 <= number <= MAX_ID else None
    elif text:
        employee = session.scalar(select(Employee).where(
            func.lower(Employee.email) == text.lower()))
    if employee is None:
        raise AssignmentError(f"no employee {text!r} (give an employee's id or email; "
                              "`helpgate directory list` shows them)")
    return employee


class AssignmentService:
    """Every change of a ticket's assignee: the ticket, its history, the listener."""

    def __init__(self, on_change: AssignmentListener | None = None) -> None:
        self.on_change = on_change

    def assign(self, session: Session, ticket: Ticket, employee: Employee | None,
               now: datetime, reason: str, by: int | None = None
               ) -> AssignmentChange | None:
        """Give `ticket` to `employee` (None: nobody); `by` is the employee who did it,
        when one did. Assigning the present assignee again changes nothing (None)."""
        target = employee.id if employee is not None else None
        if ticket.assignee_id == target:
            return None
        record = AssignmentChange(ticket_id=ticket.id, from_employee_id=ticket.assignee_id,
                                  to_employee_id=target, by_employee_id=by, at=now,
                                  reason=reason[:200])
        ticket.assignee_id = target
        ticket.updated_at = max(ticket.updated_at, now) if ticket.updated_at else now
        session.add(record)
        session.flush()  # the history row's id keys the notifications of this change
        if self.on_change is not None:
            self.on_change(session, ticket, record, now)
        return record
