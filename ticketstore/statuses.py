"""The status model at work: allowed transitions, status history and ticket times.

The model itself is data in config (R-TS-3); this module applies it to a ticket. It also
keeps the clocks of R-TS-4: resolution time counts only the stretches a ticket spent in a
non-closed state, so time spent resolved or closed before a reopen is not counted.

`StatusService` is the one way a status changes after a ticket exists: the timers, the
pipeline (timers a ticket is owed when a message arrives, reopen, waiting -> open) and
the CLI all call it, so each change is recorded, timed and announced the same way. The
store knows nothing of notifications: whoever builds the service passes a listener that
queues them (the gateway passes the Notifier's), keeping the import flow one way.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from helpgate.config.schema import StatusConfig, parse_window
from helpgate.ticketstore.models import StatusChange, Ticket

# Called in the change's transaction, after the history row is written (it has an id),
# with `by_message=True` when an arriving message made the change: the notification of the
# message tells staff of it, so the change itself is not told to them again.
StatusListener = Callable[..., object]
TIMER_REASON = "timer"
# The reason recorded for a change a customer's message made (the pipeline's).
MESSAGE_REASON = "{action}: message from {sender}"


class StatusError(ValueError):
    """A status change the model does not allow; the message names why."""


def check_transition(model: StatusConfig, ticket: Ticket, target: str,
                     until: datetime | None, now: datetime) -> None:
    states = model.states_by_id()
    if target not in states:
        raise StatusError(f"unknown status {target!r}; known: {', '.join(states)}")
    current = states.get(ticket.status)
    if target == ticket.status:
        raise StatusError(f"ticket {ticket.number} is already {target}")
    if current is not None and target not in current.next:
        allowed = ", ".join(current.next) or "none (final state)"
        raise StatusError(f"ticket {ticket.number}: {ticket.status} -> {target} is not "
                          f"allowed; allowed: {allowed}")
    if states[target].needs_until:
        if until is None:
            raise StatusError(f"status {target} needs an until time (--until ISO8601)")
        if until <= now:
            raise StatusError(f"until time {until.isoformat()} is not in the future")
    elif until is not None:
        raise StatusError(f"status {target} takes no until time")


def set_status(model: StatusConfig, ticket: Ticket, target: str, at: datetime, reason: str,
               until: datetime | None = None) -> StatusChange:
    """Move the ticket (already checked or decided by a rule) and record it in history."""
    states = model.states_by_id()
    was_closed = ticket.status in states and states[ticket.status].closed
    now_closed = states[target].closed
    if not was_closed and now_closed:
        if ticket.open_since is not None:
            ticket.open_seconds += max(0.0, (at - ticket.open_since).total_seconds())
        ticket.open_since = None
        ticket.closed_at = at
        ticket.resolved_at = at
    elif was_closed and not now_closed:
        ticket.open_since = at
        ticket.closed_at = None
    change = StatusChange(ticket_id=ticket.id, from_status=ticket.status, to_status=target,
                          at=at, reason=reason)
    ticket.status = target
    ticket.status_changed_at = at
    ticket.pending_until = until if states[target].needs_until else None
    ticket.updated_at = max(ticket.updated_at, at) if ticket.updated_at else at
    return change


def due_change(model: StatusConfig, ticket: Ticket, now: datetime) -> tuple[str, datetime] | None:
    """The automatic change a timer owes this ticket by `now`, with the time it fell due.

    Pending returns to open when its until time passes; a state with `auto_after` (resolved)
    moves on to `auto_to` (closed) that long after the ticket entered it.
    """
    state = model.states_by_id().get(ticket.status)
    if state is None:
        return None
    if state.needs_until and ticket.pending_until is not None and ticket.pending_until <= now:
        return state.after_until, ticket.pending_until
    after = parse_window(state.auto_after)
    if after is not None and state.auto_to:
        due = ticket.status_changed_at + after
        if due <= now:
            return state.auto_to, due
    return None


def due_tickets(session: Session, model: StatusConfig, now: datetime, limit: int):
    """Up to `limit` Ticket entities that may owe a timer's change (a waiting state whose
    until time passed, or any state with `auto_after`), by id, locked; rows another
    worker holds are skipped. Lazily read: iterate while applying the changes."""
    timed = [s.id for s in model.states if parse_window(s.auto_after) is not None]
    waiting = [s.id for s in model.states if s.needs_until]
    return session.scalars(select(Ticket).where(or_(
        Ticket.status.in_(waiting) & (Ticket.pending_until <= now),
        Ticket.status.in_(timed))).order_by(Ticket.id).limit(limit).with_for_update(
        skip_locked=True))


def closing_state(model: StatusConfig, status: str) -> str | None:
    """Where "close this ticket" (a customer's or a staff member's /close) takes a ticket
    in `status`: `closed` when the model allows it next, else the first closed-class
    state it allows (`resolved` from `open` in the default model); None: none is."""
    states = model.states_by_id()
    allowed = [name for name in (states[status].next if status in states else [])
               if name in states and states[name].closed]
    return "closed" if "closed" in allowed else (allowed[0] if allowed else None)


def resolution_seconds(ticket: Ticket, now: datetime) -> float:
    """Time the ticket spent open so far (R-TS-4), not counting closed stretches."""
    running = (now - ticket.open_since).total_seconds() if ticket.open_since else 0.0
    return ticket.open_seconds + max(0.0, running)


class StatusService:
    """Every status change of an existing ticket: history, ticket times, the listener."""

    def __init__(self, model: StatusConfig, on_change: StatusListener | None = None) -> None:
        self.model = model
        self.on_change = on_change

    def change(self, session: Session, ticket: Ticket, target: str, at: datetime,
               reason: str, until: datetime | None = None,
               now: datetime | None = None, by_message: bool = False) -> StatusChange:
        """Move a ticket the caller checked (or a rule decided) and record it; `at` is when
        the change counts from (a timer's due time), `now` when it is made; `by_message`:
        an arriving message made it (the listener is told)."""
        record = set_status(self.model, ticket, target, at, reason, until)
        session.add(record)
        session.flush()  # the history row's id keys the notifications of this change
        if self.on_change is not None:
            self.on_change(session, ticket, record, now or at, by_message=by_message)
        return record

    def request(self, session: Session, ticket: Ticket, target: str, now: datetime,
                reason: str, until: datetime | None = None) -> StatusChange:
        """A change someone asked for: refused with StatusError unless the model allows it."""
        check_transition(self.model, ticket, target, until, now)
        return self.change(session, ticket, target, now, reason, until)

    def apply_due(self, session: Session, ticket: Ticket, now: datetime) -> list[StatusChange]:
        """Every automatic change the ticket is owed by `now`, each at its due time."""
        done = []
        while (due := due_change(self.model, ticket, now)) is not None:
            target, at = due
            done.append(self.change(session, ticket, target, at, TIMER_REASON, now=now))
        return done
