"""An inbound message's row after it is kept: taken for its decision, its final state
recorded, read back for a replay or a recovery, and the bounce report it may carry.

Keeping the raw message (before anything is decided, R-TS-5) is `keep_raw` of
ticketstore/repository.py; gateway/pipeline.py decides what happens to it and calls these
for the rows. The statement every message runs (`_FINISH`) is built once, at import:
constructing a statement costs more than running it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from helpgate.threading.message import DeliveryStatus
from helpgate.ticketstore.models import DeliveryReport
from helpgate.ticketstore.models import InboundMessage as InboundRow
from helpgate.ticketstore.repository import INBOUND, connection

_FINISH = update(INBOUND).where(INBOUND.c.id == bindparam("inbound_id")).values(
    state=bindparam("new_state"), reason=bindparam("new_reason"),
    result=bindparam("new_result"), meta=bindparam("new_meta"),
    processed_at=bindparam("new_processed_at"))


def finish(session: Session, params: dict | list[dict]) -> None:
    """Write inbound rows' final state, reason, result, meta and processed_at: one row's
    values (inbound_id, new_state, new_reason, new_result, new_meta, new_processed_at),
    or a batch's list of them in one run."""
    connection(session).execute(_FINISH, params)


def row(session: Session, inbound_id: int) -> InboundRow:
    """The inbound row (its state, result, raw bytes, meta), unlocked."""
    return session.get(InboundRow, inbound_id)


def locked(session: Session, inbound_id: int) -> InboundRow:
    """The inbound row, locked: the one worker deciding it holds it to the commit."""
    return session.get(InboundRow, inbound_id, with_for_update=True)


def locked_or_none(session: Session, inbound_id: int) -> InboundRow | None:
    """The inbound row locked by a query of its own (a replay); None when there is none."""
    return session.scalar(select(InboundRow).where(InboundRow.id == inbound_id)
                          .with_for_update())


def received_ids(session: Session, before: datetime | None = None) -> list[int]:
    """Messages kept but not decided (state "received"; received before `before`, if
    given), oldest first."""
    query = select(InboundRow.id).where(InboundRow.state == "received")
    if before is not None:
        query = query.where(InboundRow.received_at < before)
    return list(session.scalars(query.order_by(InboundRow.id)))


def record_bounce(session: Session, inbound_id: int, outbox_id: int | None,
                  report: DeliveryStatus | None, now: datetime) -> None:
    """Add a delivery_reports row: the bounce `inbound_id` is, against the outbox row it
    reports (when known), with what its DSN says."""
    session.add(DeliveryReport(
        outbox_id=outbox_id, inbound_id=inbound_id,
        original_message_id=report.original_message_id if report else None,
        recipient=report.recipient if report else None,
        action=report.action if report else None, status=report.status if report else None,
        diagnostic=report.diagnostic if report else None, created_at=now))
