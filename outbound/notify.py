"""Which events notify whom: the outbox rows for a new ticket, a comment, a status change.

The pipeline, the CLI and (later) the staff API all call these functions inside the
transaction that records the event; the outbox worker delivers the rows afterwards.
A row's dedupe key is unique, so replaying an event never queues a notification twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from helpgate.config.schema import Config, Texts
from helpgate.outbound.compose import Composer, Draft, address_line
from helpgate.outbound.staff_topics import StaffTopics
from helpgate.outbound.targets import Target, addresses, employee_channels, staff_addresses
from helpgate.threading.context import TicketView
from helpgate.threading.markers import format_marker, reply_address
from helpgate.threading.message import ChatAction
from helpgate.ticketstore import notify_reads
from helpgate.ticketstore.models import (
    AssignmentChange,
    Comment,
    Company,
    Contact,
    OutboxMessage,
    StatusChange,
    Ticket,
)
from helpgate.ticketstore.notify_reads import STAFF_THREAD
from helpgate.ticketstore.repository import (
    chunked,
    company_name,
    insert_later,
    lock_senders,
    pending_rows,
)
from helpgate.ticketstore.staff_tokens import token_for

log = logging.getLogger("helpgate.notify")
ACK_WINDOW = timedelta(hours=1)


class Notifier:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.compose = Composer(config)
        self.topics = StaffTopics(config)

    def new_ticket(self, session: Session, ticket: Ticket, comment: Comment,
                   ack_to: Target | str | None, inbound_id: str | None,
                   now: datetime) -> list[Draft]:
        """Acknowledge to `ack_to` (the sender, where they wrote from: an address, or a
        Target on a messenger) and tell staff."""
        drafts: list[Draft] = []
        language = self.config.customer_language(ticket.subject, comment.text)
        texts = self.compose.texts_for(language)
        internal = ticket.type in self.config.tickets.internal_types
        if isinstance(ack_to, str):
            ack_to = Target("email", ack_to.strip().lower()) if ack_to.strip() else None
        if ack_to and self.config.notifications.acknowledge_new_tickets and not internal \
                and comment.author_kind != "employee" and _ack_allowed(
                    session, ack_to.recipient,
                    self.config.notifications.max_acknowledgements_per_hour, now):
            # On a messenger one adds to a request by writing on, not by replying.
            content = (texts.ack_text if ack_to.channel == "email" else texts.ack_text_chat
                       ).format(number=ticket.number, marker=self.compose.marker(ticket))
            ask, buttons = self._ask_for_contact(session, ack_to, texts)
            drafts.append(self.compose.draft(
                kind="ack", ticket=ticket, to=ack_to, texts=texts,
                subject=self.compose.subject(texts.ack_subject, ticket),
                content="\n\n".join([content, *ask]), buttons=buttons,
                event_key=f"ticket{ticket.id}", comment=comment, quoted=comment.text,
                reply_to_ids=[inbound_id] if inbound_id else None, auto="auto-replied"))
        drafts += self._staff(session, ticket, comment, "staff_new_subject", now, new=True)
        drafts += self._topic(session, ticket, comment)
        return self._queue(session, drafts, now)

    def _ask_for_contact(self, session: Session, to: Target, texts: Texts
                         ) -> tuple[list[str], list | None]:
        """A messenger customer we know by no email and no phone is asked for them, so
        that one customer has one history (R-TH-10): lines for the words, and Telegram's
        button that shares the account's phone number."""
        if to.channel == "email" or to.contact_id is None:
            return [], None
        contact = notify_reads.contact(session, to.contact_id)
        if contact is None or contact.email or contact.phone:
            return [], None
        if to.channel != "telegram" or to.recipient.startswith("-"):
            # (A group's chat is no place to share one's phone.)
            return [texts.chat_share_contact], None
        return [texts.chat_share_contact, texts.chat_share_phone], [
            [[texts.chat_share_contact_button, SHARE_CONTACT]]]

    def comment(self, session: Session, ticket: Ticket, comment: Comment,
                now: datetime, from_staff: bool = True, via: str | None = None) -> list[Draft]:
        """A customer's comment tells staff; a staff's public comment goes to the customer
        (on `via` when staff chose a channel, else where the ticket came from).

        `from_staff` is False when an employee only stands in for an unknown sender: those
        words go to staff, never to the customer as staff's answer.
        """
        drafts: list[Draft] = []
        if comment.author_kind == "employee" and from_staff:
            if comment.public:
                drafts += self._to_customer(session, ticket, comment, via)
        else:
            drafts += self._staff(session, ticket, comment, "staff_comment_subject", now,
                                  stand_in=not from_staff)
        drafts += self._topic(session, ticket, comment, stand_in=not from_staff)
        return self._queue(session, drafts, now)

    def _to_customer(self, session: Session, ticket: Ticket, comment: Comment,
                     via: str | None = None) -> list[Draft]:
        """A staff answer, with its files (up to the size limit), to the customer."""
        texts = self.compose.texts_for(self._language(session, ticket))
        files = _files(session, comment)
        attached, left_out = self.compose.attachable(files)
        content = "\n\n".join([comment.text, *self.compose.left_out_notes(left_out, texts)])
        targets = self._customer_targets(session, ticket, via)
        if targets and self.config.notifications.notify_author:
            # R-OUT-3's duplicate to the author of the event: the employee who answered.
            author = notify_reads.employee_card(session, comment.employee_id)
            mine = author.email.lower() if author is not None and author.email else None
            if mine and mine not in {t.recipient.lower() for t in targets}:
                targets.append(Target("email", mine))
        return [self.compose.draft(
            kind="comment", ticket=ticket, to=target, texts=texts,
            subject=self.compose.subject(texts.comment_subject, ticket), content=content,
            event_key=f"comment{comment.id}", comment=comment,
            reply_to_ids=self._customer_thread(session, ticket),
            attachments=[f.id for f in attached])
            for target in targets]

    def _customer_targets(self, session: Session, ticket: Ticket,
                          via: str | None = None) -> list[Target]:
        contact, company = _customer(session, ticket)
        known = addresses(session, contact.id) if contact is not None else None
        return self.compose.customer_targets(ticket, contact, company, known, via)

    def status_change(self, session: Session, ticket: Ticket, change: StatusChange,
                      now: datetime, by_message: bool = False) -> list[Draft]:
        """The customer, the staff chat's topic and the assignee hear of a status change
        (StatusService's listener); `by_message`: an arriving message made it."""
        staff = self.compose.texts_for(self.config.staff_language)
        topic = self.topics.post(ticket, f"status{change.id}", staff.topic_status.format(
            status=self.config.status_name(change.to_status, self.config.staff_language)))
        sms = self.sms_status(session, ticket, change, now)
        topic += self._staff_status(session, ticket, change, now, by_message)
        if change.to_status not in self.config.notifications.status_changes:
            return self._queue(session, topic, now) + sms
        language = self._language(session, ticket)
        texts = self.compose.texts_for(language)
        content = texts.status_text.format(
            number=ticket.number, status=self.config.status_name(change.to_status, language))
        # A resolved ticket may be rated: on a messenger with buttons under the words.
        rated = change.to_status in {s.id for s in self.config.statuses.states if s.closed}
        drafts = [self.compose.draft(
            kind="status", ticket=ticket, to=target, texts=texts,
            subject=self.compose.subject(texts.status_subject, ticket),
            content=content + ("\n\n" + texts.chat_rate_prompt.format(number=ticket.number)
                               if rated and target.channel not in ("email", "sms") else ""),
            event_key=f"status{change.id}", reply_to_ids=self._customer_thread(session, ticket),
            buttons=rating_buttons(ticket.number) if rated else None)
            for target in self._customer_targets(session, ticket)
            # SMS announces the statuses of its own list (sms_status), and no others.
            if target.channel != "sms"]
        return self._queue(session, drafts + topic, now) + sms

    def topic_notice(self, session: Session, ticket: Ticket, event_key: str, text: str,
                     now: datetime) -> list[Draft]:
        """A word from helpgate in the ticket's staff topic (why a message there did
        nothing)."""
        return self._queue(session, self.topics.post(ticket, event_key, text), now)

    def _topic(self, session: Session, ticket: Ticket, comment: Comment,
               stand_in: bool = False) -> list[Draft]:
        """The comment in the ticket's staff topic: a customer's with who wrote it (the
        lines a staff mail starts with), staff's from elsewhere as an answer or a note;
        the files by name."""
        if not self.topics.on or self.topics.from_topic(comment):
            return []
        language = self.config.staff_language
        texts = self.compose.texts_for(language)
        if comment.author_kind == "employee" and not stand_in:
            known = getattr(comment, "author", None)
            person = known if _is(known, "employee", comment.employee_id) else \
                notify_reads.employee_card(session, comment.employee_id)
            name = (person.name or person.email) if person is not None else "?"
            head = (texts.topic_answer if comment.public else texts.topic_note).format(
                author=name, channel=comment.channel)
        else:
            head = self._about(session, ticket, comment, language, stand_in)
        files = _files(session, comment)
        content = "\n\n".join(filter(None, [
            head, comment.text, self.compose.file_list(files, {f.id for f in files}, texts)]))
        return self.topics.post(ticket, f"comment{comment.id}", content, comment.id)

    def sms_status(self, session: Session, ticket: Ticket, change: StatusChange,
                   now: datetime) -> list[Draft]:
        """R-OUT-5: entering a status of `[sms] status_changes` is also told to the
        contact's phone by SMS (the status words alone, through the SMS template
        "status"); none by default, and none without a gateway."""
        sms = self.config.sms
        if not sms.provider or change.to_status not in sms.status_changes \
                or ticket.type in self.config.tickets.internal_types:
            return []
        contact, _ = _customer(session, ticket)
        phone = addresses(session, contact.id).get("sms") if contact is not None else None
        if not phone:
            return []
        language = self._language(session, ticket)
        texts = self.compose.texts_for(language)
        draft = self.compose.draft(
            kind="status", ticket=ticket, to=Target("sms", phone, contact.id), texts=texts,
            subject=self.compose.subject(texts.status_subject, ticket),
            content=texts.status_text.format(
                number=ticket.number,
                status=self.config.status_name(change.to_status, language)),
            event_key=f"status{change.id}")
        return self._queue(session, [draft], now)

    def unverified_staff(self, session: Session, ticket: Ticket, comment: Comment,
                         employee_id: int, employee_email: str, why: str,
                         now: datetime) -> list[Draft]:
        """Tell an employee (at the directory's address, never a Reply-To the mail named)
        that mail in their name was kept as a private note, and why (staff_auth)."""
        texts = self.compose.texts_for(self.config.staff_language)
        draft = self.compose.draft(
            kind="unverified", ticket=ticket, to=employee_email, texts=texts,
            subject=self.compose.subject(texts.staff_unverified_subject, ticket),
            content=texts.staff_unverified_text.format(number=ticket.number, reason=why),
            event_key=f"comment{comment.id}", comment=comment, quoted=comment.text,
            auto="auto-replied")
        self._reply_token(session, ticket, draft, employee_id, now)
        return self._queue(session, [draft], now)

    def to_chat(self, session: Session, to: Target, content: str, key: str, now: datetime,
                buttons: list | None = None, ticket_id: int | None = None) -> list[Draft]:
        """A messenger bot's answer to what a customer asked of it
        (gateway/customer_actions.py): the words and the buttons, in the chat they asked
        in."""
        draft = Draft(kind="bot", channel=to.channel, recipient=to.recipient, subject="",
                      text=content.strip() + "\n", dedupe_key=f"bot:{key}", ticket_id=ticket_id,
                      content=content.strip(), contact_id=to.contact_id, buttons=buttons)
        return self._queue(session, [draft], now)

    def confirmation_code(self, session: Session, email: str, texts: Texts, code: str,
                          channel: str, key: str, now: datetime) -> list[Draft]:
        """The mail that proves an address typed in a chat is the customer's."""
        mail = self.config.mail
        draft = Draft(kind="verify", channel="email", recipient=email,
                      subject=texts.email_code_subject.format(code=code),
                      text=texts.email_code_text.format(code=code, channel=channel) + "\n",
                      dedupe_key=f"verify:{key}", ticket_id=None,
                      headers={"Auto-Submitted": "auto-generated",
                               "From": address_line(mail.display_name, mail.address)},
                      content=texts.email_code_text.format(code=code, channel=channel))
        return self._queue(session, [draft], now)

    def texts_for_ticket(self, session: Session, ticket: Ticket | TicketView) -> Texts:
        """The texts in the language of the ticket's customer."""
        return self.compose.texts_for(self._language(session, ticket))

    def _language(self, session: Session, ticket: Ticket) -> str:
        """The customer's language, judged from their latest message on the ticket."""
        if self.config.language != "auto":
            return self.config.language
        latest = notify_reads.customer_latest(session, ticket.id)
        return self.config.customer_language(ticket.subject, latest)

    def _customer_thread(self, session: Session, ticket: Ticket) -> list[str]:
        """The customer's mails on the ticket, or the ticket's thread root without any."""
        return notify_reads.mail_thread(session, ticket.id) \
            or [self.compose.thread_root(ticket)]

    def _staff(self, session: Session, ticket: Ticket, comment: Comment,
               template: str, now: datetime, new: bool = False,
               stand_in: bool = False) -> list[Draft]:
        """Employees hear who wrote what (with the files), threaded per ticket, in the
        team's language: of a new ticket the `employees` list; of a customer's comment
        the ticket's assignee alone (assigned_only), else the list."""
        rules = self.config.notifications
        if ("new_ticket" if new else "customer_comment") not in rules.employee_events:
            return []
        language = self.config.staff_language
        # Read once per transaction, not per comment: a batch shares the directory.
        known = staff_addresses(session)
        assignee = getattr(ticket, "assignee_id", None)
        if not new and assignee and rules.assigned_only:
            chosen = [assignee] if assignee in known else []
        else:
            employees = [_Staff(i, a.get("email")) for i, a in known.items()]
            chosen = [e.id for e in self.compose.staff_recipients(employees)]
        if not rules.notify_author:
            author = comment.email_from.lower() if comment.email_from else None
            # (A stand-in for an unknown sender is not the author.)
            by = comment.employee_id if comment.author_kind == "employee" \
                and not stand_in else None
            chosen = [i for i in chosen
                      if i != by and (author is None or known[i].get("email") != author)]
        if not chosen:
            return []
        texts = self.compose.texts_for(language)
        files = _files(session, comment)
        attached, _ = self.compose.attachable(files)
        content = "\n\n".join(filter(None, [
            self._about(session, ticket, comment, language, stand_in), comment.text,
            self.compose.file_list(files, {f.id for f in attached}, texts)]))
        return self._to_staff(session, ticket, chosen, now, texts=texts,
                              subject=self.compose.subject(getattr(texts, template), ticket),
                              content=content, event_key=f"comment{comment.id}",
                              comment=comment, files=[f.id for f in attached], new=new)

    def _to_staff(self, session: Session, ticket: Ticket, chosen: list[int], now: datetime,
                  *, texts: Texts, subject: str, content: str, event_key: str,
                  comment: Comment | None = None, files: list[int] | None = None,
                  new: bool = False) -> list[Draft]:
        """One notification to each chosen employee on each channel of
        `notifications.employee_channels` they have an address on (one dedupe key per
        event, employee and channel); by mail threaded per ticket, with their own
        reply address; on a messenger and by SMS the words alone."""
        known = staff_addresses(session)
        channels = employee_channels(self.config)
        earlier = {} if new else _staff_thread(session, ticket)
        root = self.compose.thread_root(ticket)
        drafts = []
        for employee_id in chosen:
            for channel in channels:
                address = known.get(employee_id, {}).get(channel)
                if not address:
                    continue
                mail = channel == "email"
                draft = self.compose.draft(
                    kind="staff", ticket=ticket, to=Target(channel, address), texts=texts,
                    subject=subject, content=content, event_key=event_key, comment=comment,
                    reply_to_ids=[root, *earlier.get(address, [])] if mail else None,
                    attachments=files if channel != "sms" else None)
                if mail:
                    self._reply_token(session, ticket, draft, employee_id, now, new)
                drafts.append(draft)
        return drafts

    def assignment(self, session: Session, ticket: Ticket, change: AssignmentChange,
                   now: datetime) -> list[Draft]:
        """The new assignee hears that the ticket is theirs (not when they took it
        themselves, unless notify_author)."""
        rules = self.config.notifications
        to = change.to_employee_id
        if "assignment" not in rules.employee_events or to is None or (
                change.by_employee_id == to and not rules.notify_author):
            return []
        texts = self.compose.texts_for(self.config.staff_language)
        by = notify_reads.employee_card(session, change.by_employee_id) \
            if change.by_employee_id else None
        content = texts.staff_assigned_text.format(
            number=ticket.number, subject=ticket.subject,
            by=(by.name or by.email) if by is not None else change.reason)
        drafts = self._to_staff(
            session, ticket, [to], now, texts=texts,
            subject=self.compose.subject(texts.staff_assigned_subject, ticket),
            content=content, event_key=f"assign{change.id}")
        return self._queue(session, drafts, now)

    def _staff_status(self, session: Session, ticket: Ticket, change: StatusChange,
                      now: datetime, by_message: bool) -> list[Draft]:
        """R-OUT-5 for employees: the assignee hears of their ticket entering a status of
        `employee_status_changes`; a change a customer's message made is told with that
        message (the staff notification says it reopened the ticket)."""
        rules = self.config.notifications
        assignee = getattr(ticket, "assignee_id", None)
        if "status_change" not in rules.employee_events or not assignee \
                or change.to_status not in rules.employee_status_changes \
                or by_message:
            return []
        language = self.config.staff_language
        texts = self.compose.texts_for(language)
        status = self.config.status_name(change.to_status, language)
        return self._to_staff(
            session, ticket, [assignee], now, texts=texts,
            # (A status's name is no template: put in after the marker's formatting.)
            subject=self.compose.subject(texts.staff_status_subject.replace(
                "{status}", status.replace("{", "{{").replace("}", "}}")), ticket),
            content=texts.staff_status_text.format(number=ticket.number,
                                                   subject=ticket.subject, status=status),
            event_key=f"status{change.id}")

    def _reply_token(self, session: Session, ticket: Ticket, draft: Draft,
                     employee_id: int, now: datetime, new_ticket: bool = False) -> None:
        """Reply-To: the employee's own address for this ticket; their answer through it
        is what makes it count as staff's (threading rule staff_auth)."""
        mail = self.config.mail
        if mail.staff_reply_tokens:
            token = token_for(session, ticket.id, employee_id, now, new_ticket)
            draft.headers["Reply-To"] = reply_address(mail.reply_to or mail.address, token)

    def _about(self, session: Session, ticket: Ticket, comment: Comment, language: str,
               stand_in: bool) -> str:
        """Who wrote, from where, and what the message changed: the lines staff read first."""
        texts = self.compose.texts_for(language)
        person = None
        # The pipeline's comment carries its author (a Person); others are read.
        known = getattr(comment, "author", None)
        if comment.author_kind == "contact" and comment.contact_id:
            person = known if _is(known, "contact", comment.contact_id) \
                else notify_reads.contact_card(session, comment.contact_id)
        elif comment.author_kind == "employee" and comment.employee_id and not stand_in:
            person = known if _is(known, "employee", comment.employee_id) \
                else notify_reads.employee_card(session, comment.employee_id)
        name = person.name if person is not None else None
        address = comment.email_from or (person.email if person is not None else None)
        company_id = getattr(person, "company_id", None) or ticket.company_id
        company = company_name(session, company_id) if company_id else None
        who = f"{name} <{address}>" if name and address else (name or address or "?")
        lines = [texts.staff_author.format(
            author=", ".join(filter(None, [who, company])), channel=comment.channel)]
        action = (comment.decision or {}).get("action")
        if action == "reopened":
            lines.append(texts.staff_reopened.format(status=self.config.status_name(
                notify_reads.previous_status(session, ticket.id) or "", language)))
        elif action == "new_ticket_after_window":
            previous = notify_reads.previous_ticket(session, ticket.id)
            if previous is not None:
                lines.append(texts.staff_follow_up.format(
                    previous=format_marker(self.config.threading.marker, previous)))
        return "\n".join(lines)

    def _queue(self, session: Session, drafts: list[Draft], now: datetime) -> list[Draft]:
        if not drafts:
            return drafts
        rows = [{"dedupe_key": d.dedupe_key[:500], "channel": d.channel, "kind": d.kind,
                 "recipient": d.recipient, "subject": d.subject, "text": d.text,
                 "html": None, "content": d.content, "contact_id": d.contact_id,
                 "message_id": d.message_id, "headers": d.headers,
                 "ticket_id": d.ticket_id, "comment_id": d.comment_id,
                 "attachments": d.attachments or None, "buttons": d.buttons,
                 "state": "queued",
                 "attempts": 0, "next_attempt_at": now, "created_at": now}
                for d in drafts]
        insert_later(session, OutboxMessage, rows, conflict=("dedupe_key",))
        return drafts


# Per transaction: acknowledgements to each address within the hour, this one's included.
_ACK_COUNTS = "acknowledgements"


# The data of a button asking for the phone number of the account (Telegram's
# request_contact keyboard button, outbound/telegram.py): no ChatAction, the customer's
# answer is a message with their contact card.
SHARE_CONTACT = "share_contact"


def rating_buttons(number: int) -> list:
    """Buttons 1-5 that rate ticket `number` (threading/message.py ChatAction "rate")."""
    return [[[str(score), ChatAction("rate", number, score).data()] for score in range(1, 6)]]


def prefetch_acknowledgements(session: Session, addresses: list[str | None], limit: int,
                              now: datetime) -> None:
    """Count the hour's acknowledgements to a batch's senders in one query, not one per
    new ticket; `_ack_allowed` goes on from these figures. The caller holds the senders'
    locks (lock_senders), so the figures stay true to the end of the transaction."""
    counts: dict[str, int] = session.info.setdefault(_ACK_COUNTS, {})
    wanted = sorted({a.strip().lower() for a in addresses if a} - counts.keys())
    if not limit or not wanted:
        return
    for part in chunked(wanted):
        for recipient, count in notify_reads.acks_per_recipient(session, part,
                                                                now - ACK_WINDOW):
            counts[recipient] = count
    for address in wanted:
        counts.setdefault(address, 0)


def _ack_allowed(session: Session, address: str, limit: int, now: datetime) -> bool:
    """Under the hourly cap of acknowledgements to this address (0: no cap)? Counted in
    the database, so every gateway instance sees the same figure, plus the ones this
    transaction has allowed so far."""
    if not limit:
        return True
    counts: dict[str, int] = session.info.setdefault(_ACK_COUNTS, {})
    if address not in counts:
        # Counted under the address's lock, so two instances take turns (PostgreSQL).
        lock_senders(session, [address])
        counts[address] = notify_reads.acks_since(session, address, now - ACK_WINDOW)
    if counts[address] >= limit:
        log.info("no acknowledgement to %s: %d sent within the hour (cap %d)", address,
                 counts[address], limit)
        return False
    counts[address] += 1
    return True


def _customer(session: Session, ticket: Ticket) -> tuple[Contact | None, Company | None]:
    contact = notify_reads.contact(session, ticket.contact_id) if ticket.contact_id else None
    company_id = ticket.company_id or (contact.company_id if contact else None)
    company = notify_reads.company(session, company_id) if company_id else None
    return contact, company


class _Staff:
    """An employee as Composer.staff_recipients reads one: id and email."""
    __slots__ = ("id", "email")

    def __init__(self, employee_id: int, email: str | None) -> None:
        self.id, self.email = employee_id, email


def _is(person, kind: str, person_id: int) -> bool:
    return person is not None and person.kind == kind and person.id == person_id


def _files(session: Session, comment) -> list:
    """The comment's attachments (without their content). The pipeline's comment says how
    many it wrote (`file_count`): most mail has none, and then nothing is asked."""
    if comment.id is None or getattr(comment, "file_count", None) == 0:
        return []
    return notify_reads.comment_files(session, comment.id)


def _staff_thread(session: Session, ticket: Ticket) -> dict[str, list[str]]:
    """Per staff address, our latest notifications of this ticket to it, oldest first."""
    # Newest first: this transaction's queued rows, then the stored ones.
    rows = [(r["recipient"], r["message_id"])
            for r in pending_rows(session, OutboxMessage, ticket.id) if r["kind"] == "staff"][::-1]
    rows += notify_reads.staff_sent(session, ticket.id)
    thread: dict[str, list[str]] = {}
    for recipient, message_id in rows:
        ids = thread.setdefault(recipient, [])
        if message_id and len(ids) < STAFF_THREAD:
            ids.insert(0, message_id)
    return thread
