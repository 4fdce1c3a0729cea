"""A staff member's comment on a ticket from the command line (and later the HTTP API).

The way to the customer is the one an employee's answer by email takes (R-GW-1): the
comment is stored authored by the employee, and `Notifier.comment` queues its relay to the
customer in the same transaction. A private comment is stored and reaches no one (R-GW-2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from helpgate.config.schema import Config
from helpgate.outbound.notify import Notifier
from helpgate.outbound.sms_text import preview
from helpgate.ticketstore import comments
from helpgate.ticketstore.canned import CannedError, canned_text
from helpgate.ticketstore.models import Attachment, Comment, Employee
from helpgate.ticketstore.repository import (
    earliest_admin,
    employee_by_email,
    insert_rows_with_blob,
    ticket_by_number,
)


@dataclass(frozen=True)
class ReplyFile:
    """A file staff attach to a reply (the staff API's upload)."""
    filename: str
    content_type: str
    data: bytes


class ReplyError(ValueError):
    """The reply cannot be added (no such ticket, no such employee, empty text)."""


def staff_reply(session: Session, config: Config, number: int, text: str, public: bool,
                author_email: str | None, channel: str, now: datetime,
                via: str | None = None, files: Sequence[ReplyFile] = (),
                canned: int | str | None = None) -> dict:
    """The comment, and its relay to the customer when public: on `via` when staff chose
    a channel, else where the ticket came from (outbound/targets.py). `files` are stored
    as the comment's attachments before the relay is composed, so it carries them.
    `canned` names a canned answer (id, or title): its text goes first, then `text`."""
    if canned is not None:
        try:
            # The one place a canned answer becomes a reply (the API's and the CLI's).
            text = canned_text(session, canned) + (f"\n\n{text}" if text.strip() else "")
        except CannedError as exc:
            raise ReplyError(str(exc)) from None
    text = text.strip()
    if not text:
        raise ReplyError("the reply text is empty")
    ticket = ticket_by_number(session, number, lock=True)
    if ticket is None:
        raise ReplyError(f"no ticket {number}")
    author = _author(session, author_email)
    comment = Comment(ticket_id=ticket.id, author_kind="employee", employee_id=author.id,
                      public=public, channel=channel, text=text, email_from=author.email,
                      created_at=now, decision={"action": "staff_reply", "rules": [],
                                                "notes": [f"added through {channel}"]})
    ticket.updated_at = now
    if public and ticket.first_response_at is None:
        ticket.first_response_at = now
    # One flush writes the comment and the ticket's times; the comment has its id after.
    comments.add(session, comment)
    if files:
        limit = config.mail.max_attachment_size
        insert_rows_with_blob(session, Attachment, [dict(
            comment_id=comment.id, filename=f.filename[:500], content_type=f.content_type[:200],
            size=len(f.data), stored=len(f.data) <= limit,
            data=f.data if len(f.data) <= limit else None) for f in files], "data")
    drafts = Notifier(config).comment(session, ticket, comment, now, via=via)
    return {"ticket": ticket.number, "comment": comment.id, "public": public,
            "author": {"kind": "employee", "email": author.email},
            "queued": [_queued(config, d, ticket.number) for d in drafts]}


def _queued(config: Config, draft, number: int) -> dict:
    """Where the reply goes; by SMS also what it costs: its parts, and whether the
    length rule cut it (`[sms] max_parts`, `too_long`)."""
    queued = {"channel": draft.channel, "to": draft.recipient}
    if draft.channel == "sms":
        queued["sms"] = preview(config.sms, draft.kind, draft.content, number).as_dict()
    return queued


def _author(session: Session, email: str | None) -> Employee:
    if email:
        employee = employee_by_email(session, email.lower())
        if employee is None:
            raise ReplyError(f"no employee with email {email}")
        return employee
    admin = earliest_admin(session)
    if admin is None:
        raise ReplyError("no employee to sign the reply: add one (helpgate directory add "
                         "employee …) or name one with --as EMAIL")
    return admin
