"""What the store keeps of a customer's chat with a bot besides their messages: the ticket
they chose for their messages, the messages held until they choose, their ratings.

The customer actions (gateway/customer_actions.py) and rule conversation read and write these;
the SQL is here, with the rest of the store's.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import Identity, InboundMessage, Ticket

_IDENTITIES = Identity.__table__
_INBOUND = InboundMessage.__table__
_TICKETS = Ticket.__table__
HELD = "held"

_CHOOSE = update(_IDENTITIES).where(
    _IDENTITIES.c.kind == "contact", _IDENTITIES.c.channel == bindparam("b_channel"),
    _IDENTITIES.c.external_id == bindparam("b_external_id")
).values(ticket_id=bindparam("b_ticket_id"))
_HELD_FOR = select(_INBOUND.c.id).where(
    _INBOUND.c.state == HELD, _INBOUND.c.sender == bindparam("sender")
).order_by(_INBOUND.c.id).with_for_update()
_HELD_BEFORE = select(_INBOUND.c.id).where(
    _INBOUND.c.state == HELD, _INBOUND.c.received_at < bindparam("before")
).order_by(_INBOUND.c.id)
_HELD_COUNT = select(func.count()).select_from(_INBOUND).where(
    _INBOUND.c.state == HELD, _INBOUND.c.sender == bindparam("sender"))
_RATE = update(_TICKETS).where(_TICKETS.c.id == bindparam("b_ticket_id")).values(
    rating=bindparam("b_rating"), rated_at=bindparam("b_at"))


def choose(session: Session, channel: str, external_id: str, ticket_id: int | None) -> None:
    """The customer's chat messages go to this ticket from now on (None: forget)."""
    session.connection().execute(_CHOOSE, {"b_channel": channel, "b_external_id": external_id,
                                           "b_ticket_id": ticket_id})


def held_for(session: Session, sender: str) -> list[int]:
    """The sender's messages waiting for their answer which ticket, oldest first."""
    return list(session.connection().scalars(_HELD_FOR, {"sender": sender}))


def held_count(session: Session, sender: str) -> int:
    return session.connection().scalar(_HELD_COUNT, {"sender": sender}) or 0


def held_before(session: Session, before: datetime) -> list[int]:
    """Messages held since before `before`: their question went unanswered."""
    return list(session.connection().scalars(_HELD_BEFORE, {"before": before}))


def rate(session: Session, ticket_id: int, rating: int, at: datetime) -> None:
    session.connection().execute(_RATE, {"b_ticket_id": ticket_id, "b_rating": rating, "b_at": at})


_PENDING = select(_IDENTITIES.c.pending_email, _IDENTITIES.c.pending_code,
                  _IDENTITIES.c.pending_until).where(
    _IDENTITIES.c.kind == "contact", _IDENTITIES.c.channel == bindparam("channel"),
    _IDENTITIES.c.external_id == bindparam("external_id"),
    _IDENTITIES.c.pending_email.is_not(None))
_SET_PENDING = update(_IDENTITIES).where(
    _IDENTITIES.c.kind == "contact", _IDENTITIES.c.channel == bindparam("b_channel"),
    _IDENTITIES.c.external_id == bindparam("b_external_id")
).values(pending_email=bindparam("b_email"), pending_code=bindparam("b_code"),
         pending_until=bindparam("b_until"))


def pending_email(session: Session, channel: str, external_id: str
                  ) -> tuple[str, str, datetime] | None:
    """(address, code digest, valid until) of an address the person is confirming."""
    row = session.connection().execute(_PENDING, {"channel": channel,
                                                  "external_id": external_id}).first()
    return tuple(row) if row is not None else None


def set_pending_email(session: Session, channel: str, external_id: str, email: str | None,
                      code: str | None = None, until: datetime | None = None) -> None:
    """Start (or, with None, end) the confirmation of an address the person typed."""
    session.connection().execute(_SET_PENDING, {
        "b_channel": channel, "b_external_id": external_id, "b_email": email,
        "b_code": code, "b_until": until})
