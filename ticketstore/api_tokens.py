"""API tokens: who may use the staff HTTP API, as which employee (issue 18).

A token is random (256 bits) and shown once, when issued; the store keeps its SHA-256
only, so neither a database copy nor a backup lets anyone in. A plain hash (no salt, no
slow KDF) is enough for a secret with that much entropy, and lets a request be checked
with one indexed lookup. Revoking sets `revoked_at`: the next request with it is refused.

These are not the staff reply tokens of `staff_tokens.py` (a per-ticket secret in a
reply address, proving an emailed answer): the two never share a table or a lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import ApiToken, Employee
from helpgate.ticketstore.queries import iso

PREFIX = "hgapi_"
# The visible start of a token in listings: enough to tell tokens apart, useless to guess.
SHOWN = len(PREFIX) + 6


class ApiTokenError(ValueError):
    """A token cannot be issued or revoked as asked (no such employee or token)."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def issue(session: Session, email: str, name: str, now: datetime) -> dict:
    """A new token for the employee; the only time its value is returned."""
    employee = session.scalar(select(Employee).where(Employee.email == email.strip().lower()))
    if employee is None:
        raise ApiTokenError(f"no employee with email {email}")
    name = name.strip()
    if not name:
        raise ApiTokenError("a token needs a name (what or who uses it)")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=token_hash(token), prefix=token[:SHOWN],
                   employee_id=employee.id, created_at=now)
    session.add(row)
    session.flush()
    return {**_row(row, employee), "token": token}


def token_list(session: Session) -> list[dict]:
    rows = session.execute(select(ApiToken, Employee).join(
        Employee, Employee.id == ApiToken.employee_id).order_by(ApiToken.id)).all()
    return [_row(token, employee) for token, employee in rows]


def revoke(session: Session, token_id: int, now: datetime) -> dict:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise ApiTokenError(f"no API token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now
    session.flush()
    return _row(row, session.get(Employee, row.employee_id))


def authenticate(session: Session, token: str, now: datetime) -> dict | None:
    """The employee a live token signs for (and the token's id), or None."""
    found = session.execute(select(ApiToken, Employee).join(
        Employee, Employee.id == ApiToken.employee_id).where(
        ApiToken.token_hash == token_hash(token), ApiToken.revoked_at.is_(None))).first()
    if found is None:
        return None
    row, employee = found
    # Last use to the minute: enough to see a token is dead weight, without a write
    # for every request.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() >= 60:
        row.last_used_at = now
    return {"token_id": row.id, "employee": {"id": employee.id, "email": employee.email,
                                             "name": employee.name, "role": employee.role}}


def _row(row: ApiToken, employee: Employee) -> dict:
    return {"id": row.id, "name": row.name, "prefix": row.prefix,
            "employee": employee.email, "created_at": iso(row.created_at),
            "last_used_at": iso(row.last_used_at), "revoked_at": iso(row.revoked_at),
            "active": row.revoked_at is None}
