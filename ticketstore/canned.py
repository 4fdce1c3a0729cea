"""Canned answers: texts staff reuse when replying (issue 18, R-OUT-7), kept by title and
filed under a case ("Printers", "Billing") so staff find the right one among many.

The staff API and `helpgate canned` list and edit them; a reply takes one by id (the
API) or by id or title (`helpgate reply --canned`), through `gateway/replies.py`
`staff_reply`, so a canned answer reaches the customer exactly as a typed one — by SMS
too, under the SMS length rule. A title is unique across all cases: a title alone names
one answer, wherever it is filed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import CannedAnswer
from helpgate.ticketstore.queries import iso

MAX_TITLE, MAX_CASE = 200, 100  # the columns' sizes: longer is refused, never cut
UNSET = object()  # update(): "leave the case as it is", as distinct from None (no case)


class CannedError(ValueError):
    """No such canned answer, or a title another one has."""


def canned_list(session: Session, case: str | None = None) -> list[dict]:
    """Every answer (by id), or those filed under `case`."""
    query = select(CannedAnswer).order_by(CannedAnswer.id)
    if case is not None:
        query = query.where(CannedAnswer.case_name == case.strip())
    return [_row(r) for r in session.scalars(query)]


def cases(rows: list[dict]) -> list[dict]:
    """The listed answers grouped by case, cases by name and answers by title within
    each; the answers under no case come last (`"case": null`)."""
    groups: dict[str | None, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["case"], []).append({"id": row["id"], "title": row["title"]})
    order = sorted((name for name in groups if name is not None), key=str.casefold)
    order += [None] if None in groups else []
    return [{"case": name, "answers": sorted(groups[name], key=lambda a: a["title"].casefold())}
            for name in order]


def canned_text(session: Session, ref: int | str) -> str:
    """The text of the answer `ref` names: an id, or a title (a string of digits is
    tried as an id first, then as a title)."""
    return _find(session, ref).text


def detail(session: Session, ref: int | str) -> dict:
    return _row(_find(session, ref))


def create(session: Session, title: str, text: str, now: datetime,
           case: str | None = None) -> dict:
    title = _title(session, title)
    row = CannedAnswer(title=title, text=text, case_name=_case(case), created_at=now,
                       updated_at=now)
    session.add(row)
    session.flush()
    return _row(row)


def update(session: Session, canned_id: int, title: str | None, text: str | None,
           now: datetime, case: str | None | object = UNSET) -> dict:
    """Change what is given; `case` "" or None files the answer under no case."""
    row = session.get(CannedAnswer, canned_id, with_for_update=True)
    if row is None:
        raise CannedError(f"no canned answer {canned_id}")
    if title is not None:
        row.title = _title(session, title, canned_id)
    if text is not None:
        row.text = text
    if case is not UNSET:
        row.case_name = _case(case)  # type: ignore[arg-type]
    row.updated_at = now
    session.flush()
    return _row(row)


def delete(session: Session, ref: int | str) -> dict:
    row = _find(session, ref)
    gone = _row(row)
    session.delete(row)
    return gone


def _find(session: Session, ref: int | str) -> CannedAnswer:
    row = None
    if isinstance(ref, int) or (ref.strip().isascii() and ref.strip().isdigit()):
        number = int(ref)
        row = session.get(CannedAnswer, number) if 1 <= number < 2**63 else None
    if row is None and isinstance(ref, str):
        row = session.scalar(select(CannedAnswer).where(CannedAnswer.title == ref.strip()))
    if row is None:
        raise CannedError(f"no canned answer {ref}" if isinstance(ref, int)
                          else f"no canned answer {ref!r} (by id or title)")
    return row


def _case(case: str | None) -> str | None:
    """A case as kept: trimmed; blank means none."""
    case = (case or "").strip() or None
    if case is not None and len(case) > MAX_CASE:
        raise CannedError(f"a case is at most {MAX_CASE} characters")
    return case


def _title(session: Session, title: str, own_id: int | None = None) -> str:
    """The title as kept (trimmed); refused when another answer has it, so a client
    gets a message rather than the database's unique-key error."""
    title = title.strip()
    if not title or len(title) > MAX_TITLE:
        raise CannedError(f"a title is 1 to {MAX_TITLE} characters")
    other = session.scalar(select(CannedAnswer.id).where(CannedAnswer.title == title))
    if other is not None and other != own_id:
        raise CannedError(f"a canned answer titled {title!r} exists (id {other})")
    return title


def _row(row: CannedAnswer) -> dict:
    return {"id": row.id, "title": row.title, "case": row.case_name, "text": row.text,
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}
