"""Canned answers: texts staff reuse when replying (issue 18), kept by title.

The staff API lists and edits them and its reply takes one by id; the reply itself is
the ordinary staff reply (gateway/replies.py), so a canned answer reaches the customer
exactly as a typed one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import CannedAnswer
from helpgate.ticketstore.queries import iso


class CannedError(ValueError):
    """No such canned answer, or a title another one has."""


def canned_list(session: Session) -> list[dict]:
    return [_row(r) for r in session.scalars(select(CannedAnswer).order_by(CannedAnswer.id))]


def canned_text(session: Session, canned_id: int) -> str:
    row = session.get(CannedAnswer, canned_id)
    if row is None:
        raise CannedError(f"no canned answer {canned_id}")
    return row.text


def create(session: Session, title: str, text: str, now: datetime) -> dict:
    title = _title(session, title)
    row = CannedAnswer(title=title, text=text, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return _row(row)


def update(session: Session, canned_id: int, title: str | None, text: str | None,
           now: datetime) -> dict:
    row = session.get(CannedAnswer, canned_id, with_for_update=True)
    if row is None:
        raise CannedError(f"no canned answer {canned_id}")
    if title is not None:
        row.title = _title(session, title, canned_id)
    if text is not None:
        row.text = text
    row.updated_at = now
    session.flush()
    return _row(row)


def delete(session: Session, canned_id: int) -> None:
    row = session.get(CannedAnswer, canned_id)
    if row is None:
        raise CannedError(f"no canned answer {canned_id}")
    session.delete(row)


def _title(session: Session, title: str, own_id: int | None = None) -> str:
    """The title as kept (trimmed); refused when another answer has it, so a client
    gets a message rather than the database's unique-key error."""
    title = title.strip()
    other = session.scalar(select(CannedAnswer.id).where(CannedAnswer.title == title))
    if other is not None and other != own_id:
        raise CannedError(f"a canned answer titled {title!r} exists (id {other})")
    return title


def _row(row: CannedAnswer) -> dict:
    return {"id": row.id, "title": row.title, "text": row.text,
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}
