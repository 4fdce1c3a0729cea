"""Looking into a quarantined message, and giving up on one.

An admin deciding what to do with a quarantined message needs its headers, the reason
and its size without digging the raw bytes out of the database. When nothing can be made
of it (spam, a test, a loop that was fixed at the other end) they drop it: the message is
never deleted — its raw bytes stay, state "dropped", with who-knows-why recorded next to
the reason it was quarantined — so "nothing a customer sends is lost" still holds and the
decision can be read later (`helpgate quarantine list --dropped`).
"""

from __future__ import annotations

import email.policy
from datetime import datetime
from email.parser import BytesHeaderParser

from sqlalchemy import select
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import InboundMessage
from helpgate.ticketstore.queries import UNDECIDED

# What `quarantine list` shows (a message stuck undecided included) and the dropped ones.
SHOWN_STATES = ("quarantined", "received", "dropped")
# Headers are read from the start of the message only: a 50 MB message has them there.
HEADER_BYTES = 256 * 1024


class QuarantineError(ValueError):
    """No such quarantined message, or not in a state for this."""


def _row(session: Session, inbound_id: int, lock: bool = False) -> InboundMessage:
    query = select(InboundMessage).where(InboundMessage.id == inbound_id)
    row = session.scalars(query.with_for_update() if lock else query).first()
    if row is None:
        raise QuarantineError(f"no quarantined message {inbound_id}")
    return row


def headers_of(raw: bytes) -> list[list[str]]:
    """[name, value] pairs as the message has them, encoded words decoded where they
    can be; a header that cannot be decoded is shown as it came."""
    blank = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    end = min([*blank, len(raw), HEADER_BYTES])
    parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(raw[:end + 2])
    pairs = []
    for name, value in parsed.raw_items():
        try:
            text = str(parsed.policy.header_fetch_parse(name, value))
        except Exception:  # any malformation: the raw value is what the admin needs
            text = str(value)
        pairs.append([name, " ".join(text.split())])
    return pairs


def detail(session: Session, inbound_id: int) -> dict:
    row = _row(session, inbound_id)
    if row.state not in SHOWN_STATES:
        raise QuarantineError(f"message {inbound_id} is {row.state}, not quarantined")
    reason = row.reason if row.state != "received" else UNDECIDED
    return {"id": row.id, "state": row.state, "channel": row.channel, "reason": reason,
            "sender": row.sender, "received_at": row.received_at.isoformat(),
            "size": len(row.raw), "dedupe_key": row.dedupe_key,
            "dropped": (row.meta or {}).get("dropped"), "headers": headers_of(row.raw)}


def drop(session: Session, inbound_id: int, reason: str, now: datetime) -> dict:
    """Give up on a quarantined message; its raw bytes and both reasons stay."""
    reason = " ".join(reason.split())
    if not reason:
        raise QuarantineError("a reason is needed (--reason …): it is kept with the message")
    row = _row(session, inbound_id, lock=True)
    if row.state != "quarantined":
        raise QuarantineError(f"message {inbound_id} is {row.state}, not quarantined")
    dropped = {"reason": reason, "at": now.isoformat(), "quarantine_reason": row.reason}
    row.meta = {**(row.meta or {}), "dropped": dropped}
    row.state = "dropped"
    return {"id": row.id, "state": row.state, "dropped": dropped}


def dropped_list(session: Session) -> list[dict]:
    rows = session.scalars(select(InboundMessage).where(InboundMessage.state == "dropped")
                           .order_by(InboundMessage.id)).all()
    return [{"id": r.id, "channel": r.channel, "reason": r.reason, "sender": r.sender,
             "received_at": r.received_at.isoformat(), "size": len(r.raw),
             "dropped": (r.meta or {}).get("dropped")} for r in rows]
