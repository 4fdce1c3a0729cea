"""Read models: tickets, outbox, quarantine and directory as plain JSON-ready dicts.

These shapes are the CLI's JSON contract (and later the staff API's): keys may be added,
never renamed. Each function takes a session and returns dicts, nothing ORM-bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import case, func, literal_column, or_, select
from sqlalchemy.orm import Session, aliased

from helpgate.config.schema import Config
from helpgate.ticketstore.models import (
    AssignmentChange,
    Attachment,
    Comment,
    Company,
    Contact,
    DeliveryReport,
    Employee,
    InboundMessage,
    InboundRaw,
    OutboxMessage,
    StatusChange,
    Ticket,
    TicketLink,
)
from helpgate.ticketstore.people import phone_key
from helpgate.ticketstore.statuses import resolution_seconds


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def ticket_detail(session: Session, config: Config, ticket: Ticket, now: datetime) -> dict:
    out = ticket_summary(session, config, ticket)
    comments = session.scalars(select(Comment).where(Comment.ticket_id == ticket.id)
                               .order_by(Comment.id)).all()
    out["comments"] = [_comment(session, c) for c in comments]
    history = session.scalars(select(StatusChange).where(StatusChange.ticket_id == ticket.id)
                              .order_by(StatusChange.at, StatusChange.id)).all()
    out["status_history"] = [{"from": h.from_status, "to": h.to_status, "at": iso(h.at),
                              "reason": h.reason} for h in history]
    links = session.execute(
        select(TicketLink.relation, Ticket.number)
        .join(Ticket, Ticket.id == TicketLink.linked_id)
        .where(TicketLink.ticket_id == ticket.id).order_by(Ticket.number)).all()
    out["linked_tickets"] = [number for _, number in links]
    assignments = session.scalars(select(AssignmentChange).where(
        AssignmentChange.ticket_id == ticket.id).order_by(AssignmentChange.at,
                                                          AssignmentChange.id)).all()
    out["assignment_history"] = [{
        "from": _employee(session, a.from_employee_id), "to": _employee(session, a.to_employee_id),
        "by": _employee(session, a.by_employee_id), "at": iso(a.at), "reason": a.reason}
        for a in assignments]
    out["links"] = [{"ticket": number, "relation": relation} for relation, number in links]
    first = ticket.first_response_at
    out["first_response_seconds"] = ((first - ticket.created_at).total_seconds()
                                     if first else None)
    # R-TS-4: a resolution time exists once the ticket is resolved (or closed), counting
    # only its open time; an open ticket, also a reopened one, has none (yet).
    out["resolution_seconds"] = (round(resolution_seconds(ticket, now), 3)
                                 if ticket.closed_at is not None else None)
    out["pending_until"] = iso(ticket.pending_until)
    # The customer's rating of the resolved ticket (1-5, a messenger's buttons).
    out["rating"] = ticket.rating
    out["rated_at"] = iso(ticket.rated_at)
    if ticket.chat:
        out["chat"] = ticket.chat
    return out


def ticket_summary(session: Session, config: Config, ticket: Ticket) -> dict:
    contact = session.get(Contact, ticket.contact_id) if ticket.contact_id else None
    company = session.get(Company, ticket.company_id) if ticket.company_id else None
    return summary_of(config, ticket, contact, company.name if company else None,
                      config.status_name(ticket.status),
                      _employee(session, ticket.assignee_id))


def summary_of(config: Config, ticket, contact, company: str | None,
               status_name: str, assignee: dict | None) -> dict:
    """The one shape of a ticket in lists and details: `ticket` and `contact` are rows
    or objects with the columns' names (the contact's email, name, phone; None: no
    contact), `company` the company's name, `assignee` the employee responsible
    (`_employee`'s shape; None: unassigned)."""
    return {
        "number": ticket.number, "subject": ticket.subject, "status": ticket.status,
        "status_name": status_name, "type": ticket.type,
        "priority": ticket.priority, "channel": ticket.channel,
        "contact": ({"email": contact.email, "name": contact.name, "phone": contact.phone}
                    if contact is not None else None),
        "company": {"name": company} if company is not None else None,
        "created_at": iso(ticket.created_at), "updated_at": iso(ticket.updated_at),
        "closed_at": iso(ticket.closed_at),
        "assignee": assignee,
    }


def _employee(session: Session, employee_id: int | None) -> dict | None:
    """An employee as the ticket's JSON names one: id, email, name."""
    person = session.get(Employee, employee_id) if employee_id else None
    return ({"id": person.id, "email": person.email, "name": person.name}
            if person is not None else None)


# The ticket's assignee in a page's one query.
_ASSIGNEE = aliased(Employee, name="assignee")
# A page of the ticket list in one query: the columns summary_of shows, the contact's,
# the company's and the assignee's by outer join (no ORM objects: the list is the API's
# busiest read).
PAGE_COLUMNS = (Ticket.number, Ticket.subject, Ticket.status, Ticket.type,
                Ticket.priority, Ticket.channel, Ticket.created_at, Ticket.updated_at,
                Ticket.closed_at, Ticket.contact_id, Contact.email.label("contact_email"),
                Contact.name.label("contact_name"), Contact.phone.label("contact_phone"),
                Company.name.label("company_name"), Ticket.assignee_id,
                _ASSIGNEE.email.label("assignee_email"), _ASSIGNEE.name.label("assignee_name"))


@dataclass(frozen=True, slots=True)
class _PageContact:
    email: str | None
    name: str | None
    phone: str | None


def _comment(session: Session, comment: Comment) -> dict:
    if comment.author_kind == "employee" and comment.employee_id:
        person = session.get(Employee, comment.employee_id)
    elif comment.author_kind == "contact" and comment.contact_id:
        person = session.get(Contact, comment.contact_id)
    else:
        person = None
    return {
        "id": comment.id,
        "author": {"kind": comment.author_kind, "email": person.email if person else None,
                   "name": person.name if person else None},
        "public": comment.public, "channel": comment.channel, "text": comment.text,
        "attachments": [{"id": a.id, "filename": a.filename, "size": a.size,
                         "stored": a.stored,
                         "content_type": a.content_type} for a in comment.attachments],
        "message_id": comment.message_id, "from": comment.email_from,
        "created_at": iso(comment.created_at),
        "rules": (comment.decision or {}).get("rules", []),
        # Why mail in an employee's name was kept as a private note (None: it was not).
        "unverified": (comment.decision or {}).get("unverified"),
    }


def attachment_content(session: Session, attachment_id: int) -> tuple[str, bytes | None] | None:
    """A stored attachment's name as sent and its content (None: over the size limit)."""
    row = session.get(Attachment, attachment_id)
    if row is None:
        return None
    return row.filename, (row.data if row.stored else None)


def ticket_list(session: Session, config: Config, status: str | None = None,
                email: str | None = None, phone: str | None = None,
                assignee_id: int | None = None) -> list[dict]:
    """Tickets, newest first; by email or phone it is the customer's history (R-TH-10);
    by assignee an employee's tickets."""
    query = select(Ticket).order_by(Ticket.number.desc())
    if status:
        query = query.where(Ticket.status == status)
    if assignee_id is not None:
        query = query.where(Ticket.assignee_id == assignee_id)
    if email or phone:
        # By phone: the same last digits, whatever prefix (+7, 8) or punctuation.
        digits = config.threading.phone_match_digits
        key = phone_key(phone, digits) if phone else ""
        by_phone = [c.id for c in session.execute(
            select(Contact.id, Contact.phone).where(Contact.phone.is_not(None)))
            if phone and (phone_key(c.phone, digits) == key if key else c.phone == phone)]
        contacts = select(Contact.id).where(or_(
            Contact.email == email.lower() if email else False, Contact.id.in_(by_phone)))
        senders = select(Comment.ticket_id).where(
            Comment.email_from == email.lower()) if email else None
        condition = Ticket.contact_id.in_(contacts)
        if senders is not None:
            condition = or_(condition, Ticket.id.in_(senders))
        query = query.where(condition)
    return [ticket_summary(session, config, t) for t in session.scalars(query)]


def outbox_list(session: Session) -> list[dict]:
    rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    reports: dict[int, list[dict]] = {}
    for report in session.scalars(select(DeliveryReport).where(
            DeliveryReport.outbox_id.is_not(None)).order_by(DeliveryReport.id)):
        reports.setdefault(report.outbox_id, []).append(
            {"status": report.status, "action": report.action,
             "recipient": report.recipient, "diagnostic": report.diagnostic,
             "at": iso(report.created_at)})
    ticket_numbers = dict(session.execute(select(Ticket.id, Ticket.number)).all()) if rows else {}
    return [{
        "id": r.id, "channel": r.channel, "kind": r.kind, "to": r.recipient,
        "subject": r.subject, "text": r.text, "state": r.state, "message_id": r.message_id,
        "headers": r.headers, "ticket": ticket_numbers.get(r.ticket_id),
        "comment": r.comment_id, "attempts": r.attempts, "last_error": r.last_error,
        "created_at": iso(r.created_at), "sent_at": iso(r.sent_at),
        "bounces": reports.get(r.id, []),
    } for r in rows]


# A message kept but undecided for longer than this is stuck (a decision that failed and
# could not be quarantined): the list shows it, so nothing is invisible.
STUCK_AFTER = timedelta(seconds=10)
UNDECIDED = "undecided: kept, but its decision failed; the running gateway retries it"


def quarantine_list(session: Session, now: datetime | None = None) -> list[dict]:
    now = now or datetime.now(timezone.utc)
    stuck = (InboundMessage.state == "received") & (
        InboundMessage.received_at < now - STUCK_AFTER)
    size = select(func.length(InboundRaw.raw)).where(
        InboundRaw.inbound_id == InboundMessage.id).scalar_subquery()
    rows = session.execute(select(InboundMessage, size).where(
        (InboundMessage.state == "quarantined") | stuck).order_by(InboundMessage.id)).all()
    return [{"id": r.id, "channel": r.channel,
             "reason": r.reason if r.state == "quarantined" else UNDECIDED,
             "sender": r.sender, "received_at": iso(r.received_at), "size": length or 0,
             "dedupe_key": r.dedupe_key, "state": r.state} for r, length in rows]


def directory_list(session: Session) -> dict:
    companies = session.scalars(select(Company).order_by(Company.id)).all()
    names = {c.id: c.name for c in companies}
    return {
        "companies": [{"id": c.id, "name": c.name,
                       "domains": sorted(d.domain for d in c.domains),
                       "email": c.email, "phone": c.phone} for c in companies],
        "contacts": [{"id": c.id, "name": c.name, "email": c.email, "phone": c.phone,
                      "company": names.get(c.company_id)}
                     for c in session.scalars(select(Contact).order_by(Contact.id))],
        "employees": [{"id": e.id, "name": e.name, "email": e.email, "phone": e.phone,
                       "role": e.role}
                      for e in session.scalars(select(Employee).order_by(Employee.id))],
    }


def ticket_page(session: Session, config: Config, status: str | None = None,
                contact: str | None = None, company: str | None = None,
                before: int | None = None, limit: int = 50) -> tuple[list[dict], int | None]:
    """One page of tickets, newest first (the staff API's list): by status, by the
    contact's email, by the company's name; `before` is the cursor, the last number of
    the previous page. Returns the page and the next cursor (None: the last page)."""
    query = (select(*PAGE_COLUMNS)
             .outerjoin(Contact, Contact.id == Ticket.contact_id)
             .outerjoin(Company, Company.id == Ticket.company_id)
             .outerjoin(_ASSIGNEE, _ASSIGNEE.id == Ticket.assignee_id)
             .order_by(Ticket.number.desc()).limit(limit + 1))
    if status:
        query = query.where(Ticket.status == status)
    if contact:
        query = query.where(Contact.email == contact.strip().lower())
    if company:
        query = query.where(func.lower(Company.name) == company.strip().lower())
    if before is not None:
        query = query.where(Ticket.number < before)
    rows = session.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    names: dict[str, str] = {}  # a status's name, looked up once a page
    page = []
    for row in rows:
        if row.status not in names:
            names[row.status] = config.status_name(row.status)
        person = (_PageContact(row.contact_email, row.contact_name, row.contact_phone)
                  if row.contact_id is not None else None)
        assignee = ({"id": row.assignee_id, "email": row.assignee_email,
                     "name": row.assignee_name} if row.assignee_id is not None else None)
        page.append(summary_of(config, row, person, row.company_name, names[row.status],
                               assignee))
    return page, rows[-1].number if more else None


def outbox_backlog(session: Session, now: datetime) -> dict:
    """What waits in the outbox (the API's /health): how many rows by state, and the age
    of the oldest one still to be sent."""
    counts = dict(session.execute(select(OutboxMessage.state, func.count())
                                  .group_by(OutboxMessage.state)).all())
    oldest = session.scalar(select(func.min(OutboxMessage.created_at)).where(
        OutboxMessage.state.in_(("queued", "sending"))))
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=timezone.utc)
    return {"by_state": counts,
            "waiting": counts.get("queued", 0) + counts.get("sending", 0),
            "oldest_waiting_seconds": (round((now - oldest).total_seconds(), 3)
                                       if oldest is not None else None)}


def metrics_snapshot(session: Session, now: datetime) -> dict:
    """What the staff API's /metrics reports from the store, each figure one grouped
    query: messages in by channel and state, outbox rows by channel and state, the age of
    the oldest row waiting per channel."""
    inbound = session.execute(select(InboundMessage.channel, InboundMessage.state,
                                     func.count()).group_by(InboundMessage.channel,
                                                            InboundMessage.state)).all()
    outbox = session.execute(select(OutboxMessage.channel, OutboxMessage.state,
                                    func.count()).group_by(OutboxMessage.channel,
                                                           OutboxMessage.state)).all()
    oldest = session.execute(select(OutboxMessage.channel, func.min(OutboxMessage.created_at))
                             .where(OutboxMessage.state.in_(("queued", "sending")))
                             .group_by(OutboxMessage.channel)).all()
    ages = {}
    for channel, created in oldest:
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        ages[channel] = max(0.0, (now - created).total_seconds()) if created else 0.0
    return {"inbound": [(c, s, n) for c, s, n in inbound],
            "outbox": [(c, s, n) for c, s, n in outbox], "oldest_waiting": ages,
            "by_action": _messages_by_action(session),
            "latency": _decision_latency(session)}


# Upper bounds (seconds) of the decision-latency histogram: a message is decided in
# milliseconds when all is well; the long ones are retries and crash recovery.
DECISION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0, 3600.0)


def _messages_by_action(session: Session) -> list[tuple[str, str, int]]:
    """Inbound messages by channel and the action decided (new_ticket, comment, reopened,
    ignored, duplicate, quarantined, held…); a message not decided yet counts under its
    state."""
    action = InboundMessage.result["action"].as_string()
    rows = session.execute(select(InboundMessage.channel, action, InboundMessage.state,
                                  func.count()).group_by(InboundMessage.channel, action,
                                                         InboundMessage.state)).all()
    counts: dict[tuple[str, str], int] = {}
    for channel, decided, state, count in rows:
        key = (channel, decided or state)
        counts[key] = counts.get(key, 0) + count
    return [(c, a, n) for (c, a), n in sorted(counts.items())]


def _decision_latency(session: Session) -> dict[str, dict]:
    """Per channel, the seconds from a message's receipt to its decision as a cumulative
    histogram over DECISION_BUCKETS, with the count and the sum: one grouped query over
    the decided messages, so every gateway instance reports the same."""
    seconds = _seconds_between(session, InboundMessage.received_at,
                               InboundMessage.processed_at)
    columns = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in DECISION_BUCKETS]
    rows = session.execute(
        select(InboundMessage.channel, func.count(), func.sum(seconds), *columns)
        .where(InboundMessage.processed_at.is_not(None))
        .group_by(InboundMessage.channel)).all()
    return {row[0]: {"count": row[1], "sum": max(0.0, float(row[2] or 0.0)),
                     "buckets": [int(n or 0) for n in row[3:]]} for row in rows}


def _seconds_between(session: Session, start, end):
    """`end - start` in seconds, as each backend computes it (SQLite keeps the times as
    ISO text, PostgreSQL as timestamps)."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * literal_column("86400.0")
    return func.extract("epoch", end - start)
