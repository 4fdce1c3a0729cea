"""Builds small raw emails for tests that need many or need them on the fly."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

_ids = itertools.count(1)


def mail(sender: str = "ivan@romashka.ru", subject: str = "Не работает принтер",
         body: str = "Здравствуйте! Принтер не печатает.", *, name: str | None = None,
         to: str = "support@helpgate.localhost", message_id: str | None = None,
         in_reply_to: str | None = None, references: str | None = None,
         headers: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = formataddr((name, sender)) if name else sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc))
    msg["Message-ID"] = message_id or f"<test{next(_ids)}@client.example>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return bytes(msg)


# Our receiving mail server, as tests configure it: `mail.authserv_ids = [TRUSTED_MX]`.
TRUSTED_MX = "mx.helpgate.test"


def staff_mail(sender: str = "anna@helpgate.test", **fields) -> bytes:
    """An employee's mail as our receiving server hands it over after checking DKIM: it
    counts as staff's where the config trusts TRUSTED_MX (issue #15, rule staff_auth)."""
    domain = sender.rpartition("@")[2]
    headers = {"Authentication-Results": f"{TRUSTED_MX}; dkim=pass header.d={domain}",
               **fields.pop("headers", {})}
    return mail(sender=sender, headers=headers, **fields)
