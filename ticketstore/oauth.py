"""OAuth2 grants as kept state: the `oauth_grants` rows and the key that seals them.

A refresh token is a password that does not expire by itself, so it is stored encrypted
(Fernet, the key from HELPGATE_SECRET_KEY) and never logged. The steps of a refresh are
short transactions around the provider's answer, which comes from outside any
transaction (gateway/oauth.py):

1. `begin_refresh` locks the row: the access token kept is returned while it is good;
   otherwise this process takes the refresh lease and gets the refresh token. Another
   process (a second gateway, the CLI) that finds the lease taken waits for its outcome
   rather than spending the same refresh token twice.
2. `finish_refresh` commits what the provider answered — a rotated refresh token first
   of all — before the caller uses the access token of that answer: a process killed
   right after never leaves the database holding a refresh token the provider has
   already retired (which is how other help desks' mailboxes die after 90 days).
3. `fail_refresh` records a refused grant as state "needs_login", once, and lets the
   caller queue the one staff notification in the same transaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import OAuthGrant

KEY_VARIABLE = "HELPGATE_SECRET_KEY"
OK, NEEDS_LOGIN = "ok", "needs_login"


class SecretKeyError(Exception):
    """The key that seals refresh tokens is missing, malformed or not the one used."""


class SecretBox:
    """Encrypts and decrypts stored tokens with the key(s) in HELPGATE_SECRET_KEY: one
    Fernet key, or several separated by commas while changing keys (the first encrypts,
    each decrypts)."""

    def __init__(self, keys: str) -> None:
        from cryptography.fernet import Fernet, MultiFernet
        try:
            fernets = [Fernet(key.strip().encode()) for key in keys.split(",") if key.strip()]
        except (ValueError, TypeError):
            raise SecretKeyError(f"{KEY_VARIABLE} is not a Fernet key (32 bytes, url-safe "
                                 "base64); make one with `helpgate oauth key`") from None
        if not fernets:
            raise SecretKeyError(missing_key_message())
        self._fernet = MultiFernet(fernets)

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, sealed: str) -> str:
        from cryptography.fernet import InvalidToken
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(f"a stored token cannot be decrypted with {KEY_VARIABLE}: "
                                 "the key is not the one it was stored with (keep the old "
                                 "key after the new one, comma-separated, or log in again)"
                                 ) from None


def missing_key_message() -> str:
    return (f"{KEY_VARIABLE} is not set: OAuth2 refresh tokens are stored encrypted with "
            "it. Make a key with `helpgate oauth key` and put it in the environment of "
            "every helpgate process")


def secret_box(environ=os.environ) -> SecretBox:
    keys = environ.get(KEY_VARIABLE, "")
    if not keys.strip():
        raise SecretKeyError(missing_key_message())
    return SecretBox(keys)


def new_key() -> str:
    from cryptography.fernet import Fernet
    return Fernet.generate_key().decode()


@dataclass(frozen=True, slots=True)
class Step:
    """What `begin_refresh` found. kind: "fresh" (use `access`), "refresh" (this process
    holds the lease; `refresh` is the sealed refresh token), "busy" (another holds it),
    "needs_login" (`detail` says why), "missing" (never logged in)."""

    kind: str
    access: str | None = None
    refresh: str | None = None
    detail: str | None = None
    busy_until: datetime | None = None


def _row(session: Session, name: str, lock: bool = False) -> OAuthGrant | None:
    return session.get(OAuthGrant, name, with_for_update=lock)


def begin_refresh(session: Session, name: str, now: datetime, lease: timedelta,
                  rejected: str | None = None) -> Step:
    """See the module docstring, step 1. `rejected`: the stored (sealed) form of an
    access token a server just refused; the kept token is given out again only when it
    is another one (a process refreshed meanwhile)."""
    row = _row(session, name, lock=True)
    if row is None or row.refresh_token is None and row.state == OK:
        return Step("missing")
    if row.state == NEEDS_LOGIN:
        return Step("needs_login", detail=row.detail)
    if (row.access_token and row.refresh_at is not None and now < row.refresh_at
            and row.access_token != rejected):
        return Step("fresh", access=row.access_token)
    if row.refreshing_until is not None and row.refreshing_until > now:
        return Step("busy", busy_until=row.refreshing_until)
    row.refreshing_until = now + lease
    row.updated_at = now
    return Step("refresh", refresh=row.refresh_token, access=row.access_token)


def finish_refresh(session: Session, name: str, refresh: str | None, access: str,
                   expires_at: datetime, refresh_at: datetime, now: datetime) -> None:
    """Step 2: the provider's answer, committed before the access token is used.
    `refresh`: a rotated refresh token (sealed), or None when the provider kept it."""
    row = _row(session, name, lock=True)
    if row is None:  # deleted meanwhile (never by helpgate itself): keep nothing
        return
    if refresh is not None and refresh != row.refresh_token:
        row.refresh_token = refresh
        row.rotations += 1
    row.access_token, row.expires_at, row.refresh_at = access, expires_at, refresh_at
    row.refreshing_until = None
    row.refreshed_at = row.updated_at = now
    row.state, row.detail = OK, None


def release(session: Session, name: str, now: datetime) -> None:
    """A refresh that failed for a passing reason (network, 5xx): the lease is given up
    at once, so the next attempt — here or in another process — need not wait it out."""
    row = _row(session, name, lock=True)
    if row is not None:
        row.refreshing_until = None
        row.updated_at = now


def fail_refresh(session: Session, name: str, detail: str, now: datetime,
                 notify: Callable[[Session, str, str, datetime], None] | None = None) -> bool:
    """Step 3: the provider (or the mail server, with a fresh token) refused the grant.
    The grant needs a new login; `notify` runs in this transaction the first time only,
    so staff hear of it once however many processes and retries find it. True when this
    call marked it."""
    row = _row(session, name, lock=True)
    if row is None:
        return False
    row.refreshing_until = None
    row.updated_at = now
    if row.state == NEEDS_LOGIN:
        return False
    row.state, row.detail = NEEDS_LOGIN, detail[:2000]
    row.access_token = None
    if row.notified_at is None:
        row.notified_at = now
        if notify is not None:
            notify(session, name, detail, now)
    return True


def save_login(session: Session, name: str, provider: str, refresh: str, access: str | None,
               expires_at: datetime | None, refresh_at: datetime | None,
               now: datetime) -> None:
    """A fresh login (`helpgate oauth login`): state ok, ready to notify again should
    this grant be refused one day."""
    row = _row(session, name, lock=True)
    if row is None:
        row = OAuthGrant(name=name, created_at=now, rotations=0)
        session.add(row)
    row.provider, row.refresh_token, row.access_token = provider, refresh, access
    row.expires_at, row.refresh_at = expires_at, refresh_at
    row.refreshing_until = row.notified_at = row.detail = None
    row.state, row.refreshed_at, row.updated_at = OK, now, now


def grant_states(session: Session) -> dict[str, dict]:
    """Every stored grant by name, for `helpgate doctor` and `helpgate oauth list`; no
    token, sealed or not, leaves here."""
    rows = session.scalars(select(OAuthGrant).order_by(OAuthGrant.name)).all()
    return {row.name: {
        "provider": row.provider, "state": row.state, "detail": row.detail,
        "access_expires_at": _iso(row.expires_at), "refreshed_at": _iso(row.refreshed_at),
        "rotations": row.rotations, "notified_at": _iso(row.notified_at),
        "updated_at": _iso(row.updated_at)} for row in rows}


def sealed_refresh_token(session: Session, name: str) -> str | None:
    """The stored (sealed) refresh token: tests and key rotation read it."""
    row = _row(session, name)
    return row.refresh_token if row is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
