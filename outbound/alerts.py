"""Notices to the help desk's administrators about the gateway itself, not a ticket:
a mailbox's or relay's OAuth2 grant the provider refused, which no retry can mend.

Queued as outbox rows in the transaction that records the event (ticketstore/oauth.py
calls this once per refusal), to the administrators of the directory, or every employee
when it names none. Kept apart from notify.py, whose events all concern a ticket.
"""

from __future__ import annotations

import logging
from datetime import datetime
from email.utils import formataddr

from sqlalchemy.orm import Session

from helpgate.config.schema import Config
from helpgate.ticketstore.models import OutboxMessage
from helpgate.ticketstore.recipients import employees_with_email
from helpgate.ticketstore.repository import ADMIN_ROLE, insert_ignoring_conflict

log = logging.getLogger("helpgate.alerts")

TEXTS = {
    "en": ("Mailbox {name} needs a new OAuth2 login",
           "helpgate can no longer sign in to {name}: the provider refused its grant "
           "({detail}).\n\nMail to and from it waits until someone signs in again. On the "
           "gateway's machine run:\n\n    helpgate oauth login {name}\n\n"
           "`helpgate doctor` shows the state of every mailbox."),
    "ru": ("Ящику {name} нужен новый вход OAuth2",
           "helpgate больше не может войти в {name}: провайдер отклонил разрешение "
           "({detail}).\n\nПочта этого ящика ждёт, пока кто-нибудь снова не войдёт. На "
           "машине шлюза выполните:\n\n    helpgate oauth login {name}\n\n"
           "`helpgate doctor` показывает состояние каждого ящика."),
}


def grant_needs_login(session: Session, config: Config, name: str, detail: str,
                      now: datetime) -> int:
    """Queue the notice; returns how many rows (0 with nobody in the directory)."""
    people = employees_with_email(session)
    admins = [row.email for row in people if row.role == ADMIN_ROLE]
    recipients = admins or [row.email for row in people]
    if not recipients:
        log.error("grant %s needs a new login and the directory names no employee to tell; "
                  "run: helpgate oauth login %s", name, name)
        return 0
    subject, text = TEXTS.get(config.staff_language, TEXTS["en"])
    mail = config.mail
    sender = formataddr((mail.display_name, mail.address)) if mail.display_name \
        else mail.address
    body = text.format(name=name, detail=detail)
    rows = [{"dedupe_key": f"oauth:{name}:{now.isoformat()}:{address.lower()}"[:500],
             "channel": "email", "kind": "alert", "recipient": address,
             "subject": subject.format(name=name), "text": body + "\n", "html": None,
             "content": body, "contact_id": None, "message_id": None,
             "headers": {"Auto-Submitted": "auto-generated", "From": sender},
             "ticket_id": None, "comment_id": None, "attachments": None, "buttons": None,
             "state": "queued", "attempts": 0, "next_attempt_at": now, "created_at": now}
            for address in recipients]
    insert_ignoring_conflict(session, OutboxMessage, rows, conflict=("dedupe_key",))
    return len(rows)
