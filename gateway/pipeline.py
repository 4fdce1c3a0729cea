"""InboundMessage -> threading rules -> one store transaction: the heart of helpgate.

Order matters and is the product's promise (R-TS-5): the raw message is committed first,
in its own transaction, so nothing accepted is lost whatever happens next; a second
delivery of the same message stops there as a duplicate (R-TH-9). Then, in one
transaction, the rules decide and the decision is written: ticket, comment, attachments,
status changes and the outbox rows of every notification. If that fails the message is
quarantined with the reason and can be replayed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from sqlalchemy.orm import Session

from helpgate.channels.base import InboundMessage
from helpgate.channels.mail.parse import parse_safely
from helpgate.config.schema import Config, parse_window
from helpgate.gateway.channels import parse_kept
from helpgate.gateway.customer_actions import CustomerActions
from helpgate.gateway.parse_worker import parse_and_read
from helpgate.gateway.staff_actions import StaffActions
from helpgate.gateway.status_service import status_service
from helpgate.outbound.notify import Notifier, prefetch_acknowledgements
from helpgate.outbound.targets import Target
from helpgate.threading.chain import decide
from helpgate.threading.context import Action, Context, Decision, TicketView
from helpgate.threading.rules.quote_strip import our_separators
from helpgate.threading.subjects import chat_subject, new_ticket_subject
from helpgate.ticketstore import chats, comments, inbound, people, statuses
from helpgate.ticketstore.models import (
    Attachment,
    Comment,
    StatusChange,
    Ticket,
    TicketLink,
)
from helpgate.ticketstore.repository import (
    SessionDirectory,
    Store,
    defer_writes,
    first_response,
    flush_later,
    get_or_create_contact_for,
    identity_key,
    insert_later,
    insert_returning_id,
    insert_rows,
    insert_rows_with_blob,
    inserted_row,
    keep_raw_many,
    lock_senders,
    locked_ticket,
    next_ticket_number,
    prefetch_directory,
    reachable_again,
    ticket_by_id,
    touch_ticket,
)

log = logging.getLogger("helpgate.pipeline")
NO_SUBJECT = "(no subject)"
SIZE_UNITS = ("B", "KB", "MB", "GB")


def utcnow() -> datetime:
    # The system clock on purpose: `faketime` moves every time decision (reopen windows).
    return datetime.now(timezone.utc)


@dataclass
class Result:
    action: str
    ticket: int | None = None
    previous_ticket: int | None = None
    comment: int | None = None
    rules: list[str] = field(default_factory=list)
    reason: str | None = None
    inbound: int | None = None
    # A duplicate of a message kept but never decided: decide it now (not in the JSON).
    undecided: bool = False

    def as_dict(self) -> dict:
        # By hand: dataclasses.asdict deep-copies, and this runs for every message.
        return {"action": str(self.action), "ticket": self.ticket,
                "previous_ticket": self.previous_ticket, "comment": self.comment,
                "rules": list(self.rules), "reason": self.reason, "inbound": self.inbound}


class Pipeline:
    def __init__(self, config: Config, store: Store,
                 clock: Callable[[], datetime] = utcnow, quiet: bool = False) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        # Quiet: decide and store, but queue no notification (importing old history).
        self.quiet = quiet
        self.notifier = Notifier(config)
        self.statuses = status_service(config, self.notifier, quiet)
        self.actions = CustomerActions(config, self.notifier, self.statuses)
        self.staff_actions = StaffActions(self)
        # Called after messages were committed, e.g. to wake the outbox worker at once.
        self.on_commit: list[Callable[[], None]] = []

    async def ingest_email(self, raw: bytes, ticket_type: str | None = None) -> Result:
        """One raw email through the whole pipeline."""
        return await self.ingest(self.parse(raw), ticket_type)

    def parse(self, raw: bytes) -> InboundMessage:
        return parse_safely(raw, self.clock())

    def worker_parse(self, parse: Callable[[bytes, datetime], InboundMessage]
                     ) -> Callable[[bytes, datetime], InboundMessage]:
        """`parse` for a parser worker (gateway/bulk.py): it also reads the quotes of what
        looks like a new request there, so that the store's thread need not."""
        return functools.partial(parse_and_read, parse, our_separators(self.config),
                                 self.config.threading.marker)

    async def ingest(self, message: InboundMessage, ticket_type: str | None = None) -> Result:
        return (await self.ingest_many([message], ticket_type))[0]

    async def ingest_many(self, messages: list[InboundMessage],
                          ticket_type: str | None = None) -> list[Result]:
        """Messages in one transaction: each raw message is inserted before its decision.

        One commit for a batch (an IMAP fetch, a mailbox import) is what makes the embedded
        database fast. Should anything fail, the whole batch rolls back, so nothing is half
        written, and each message then takes the careful path on its own.
        """
        if ticket_type is not None and ticket_type not in self.config.tickets.types:
            raise ValueError(f"unknown ticket type {ticket_type!r}; "
                             f"known: {', '.join(self.config.tickets.types)}")
        now = self.clock()
        try:
            results = await self.store.run(self._ingest_batch, messages, ticket_type, now)
        except Exception:
            log.exception("batch of %d messages failed; taking them one by one", len(messages))
            results = [await self._ingest_carefully(m, ticket_type) for m in messages]
        for index, result in enumerate(results):
            if result.action == Action.DUPLICATE and result.undecided:
                # A second delivery of a message kept but never decided (a failure after
                # its raw commit): decide it now rather than answer "duplicate".
                results[index] = await self._process(result.inbound, messages[index],
                                                     ticket_type, replay=False)
        for result in results:
            _log_result(result)
        self._committed()
        return results

    def _committed(self) -> None:
        for listener in self.on_commit:
            listener()

    def _ingest_batch(self, session: Session, messages: list[InboundMessage],
                      ticket_type: str | None, now: datetime) -> list[Result]:
        # All raw messages go in first (R-TS-5: before any decision, same transaction),
        # and the batch's senders are looked up in one go.
        kept = keep_raw_many(session, messages)
        addresses = [m.sender_email for m in messages]
        if self.config.threading.throttle_max > 0 or \
                self.config.notifications.max_acknowledgements_per_hour > 0:
            # The throttle (per sender) and the acknowledgement cap (per address) count
            # under a lock; taken here in one order, two instances' batches never wait in
            # a circle.
            lock_senders(session, [m.sender_key for m in messages] + addresses)
        prefetch_directory(session, [m.sender for m in messages])
        if not self.quiet:
            prefetch_acknowledgements(
                session, addresses, self.config.notifications.max_acknowledgements_per_hour,
                now)
        defer_writes(session)
        results = []
        finishing: list[dict] = []
        decided: dict[int, Result] = {}
        for message, (inbound_id, duplicate) in zip(messages, kept, strict=True):
            if duplicate:
                results.append(_duplicate_result(session, inbound_id, decided.get(inbound_id)))
            else:
                decided[inbound_id] = self._decide_and_write(
                    session, inbound_id, message, ticket_type, now, replay=False,
                    finishing=finishing)
                results.append(decided[inbound_id])
        flush_later(session)
        if finishing:
            inbound.finish(session, finishing)
        return results

    async def _ingest_carefully(self, message: InboundMessage,
                                ticket_type: str | None) -> Result:
        """The raw message committed on its own first (R-TS-5), then the decision; a
        decision that fails again quarantines the message with the reason."""
        try:
            inbound_id, duplicate = await self.store.keep_raw(message, message.sender_key)
        except Exception:
            # Nothing about a message may keep it from being kept: store the bytes under
            # their digest alone, and let the decision quarantine it with the reason.
            log.exception("keeping inbound message failed; keeping its bytes alone")
            inbound_id, duplicate = await self.store.keep_raw(_bytes_only(message), None)
        if duplicate:
            return await self.store.run(_duplicate_result, inbound_id)
        return await self._process(inbound_id, message, ticket_type, replay=False)

    async def process_received(self, older_than: timedelta | None = None) -> list[Result]:
        """Decide every message that was kept but never decided (R-TS-5).

        A crash between committing a raw message and committing its decision, or a
        decision that failed and could not even be quarantined (the database away for a
        moment), leaves it in state "received". The gateway runs this at start, and every
        few seconds for rows older than `older_than`, so none waits for a restart. The
        row lock in the decision makes a message another instance is deciding a no-op.
        """
        results = []
        before = self.clock() - older_than if older_than is not None else None
        for inbound_id in await self.store.run(inbound.received_ids, before):
            raw, channel, meta = await self.store.run(_inbound_raw, inbound_id)
            message = parse_kept(channel, raw, self.clock())
            result = await self._process(inbound_id, message, meta.get("ticket_type"),
                                         replay=False)
            _log_result(result)
            results.append(result)
        self._committed()
        return results

    async def replay(self, inbound_id: int) -> Result:
        """Run a quarantined message through the pipeline again (after a fix); a message
        stuck undecided is decided now."""
        raw, channel, meta, state = await self.store.run(_quarantined_raw, inbound_id)
        message = parse_kept(channel, raw, self.clock())
        result = await self._process(inbound_id, message, meta.get("ticket_type"),
                                     replay=state == "quarantined")
        _log_result(result)
        self._committed()
        return result

    async def _process(self, inbound_id: int, message: InboundMessage,
                       ticket_type: str | None, replay: bool) -> Result:
        now = self.clock()
        try:
            result = await self.store.run(self._decide_and_write, inbound_id, message,
                                          ticket_type, now, replay)
        except ReplayError:
            raise
        except Exception as exc:
            log.exception("processing inbound message %s failed", inbound_id)
            reason = f"internal error: {type(exc).__name__}: {exc}"[:2000]
            result = Result(action=Action.QUARANTINED, reason=reason, inbound=inbound_id)
            # Should this fail too (the database gone), the message stays "received":
            # the error reaches the sender (SMTP 451, IMAP keeps it) and the running
            # gateway decides it again within seconds (process_received).
            await self.store.run(_finish_if_received, inbound_id, result, now,
                                 {"ticket_type": ticket_type})
        return result

    # ------------------------------------------------------- inside one transaction
    def _decide_and_write(self, session: Session, inbound_id: int, message: InboundMessage,
                          ticket_type: str | None, now: datetime, replay: bool,
                          finishing: list[dict] | None = None, held: bool = False,
                          no_asking: bool = False, chosen: int | None = None) -> Result:
        """Decide one kept message and write the decision. With `finishing` (a batch that
        has just inserted this message) the final state of its inbound row is collected
        there for one update at the end of the batch. `held`: a message that waited for
        the customer's answer which ticket (`no_asking`: and waits no longer)."""
        meta = {"ticket_type": ticket_type}
        if finishing is None:
            # The row lock makes this the only worker deciding this message: a replay
            # racing another replay, or a retry racing the first attempt, finds it done.
            row = inbound.locked(session, inbound_id)
            expected = "quarantined" if replay else chats.HELD if held else "received"
            if row.state != expected:
                if replay:
                    raise ReplayError(f"message {inbound_id} is {row.state}, not quarantined")
                return Result(**{**(row.result or {}), "inbound": inbound_id})
        if message.problem:
            result = Result(action=Action.QUARANTINED, reason=message.problem,
                            inbound=inbound_id)
            return _finish(session, inbound_id, "quarantined", result, now, meta, finishing)
        if message.staff_action is not None:
            # Staff in a ticket's topic of the staff group: no rule, no customer.
            done = Result(**self.staff_actions.act(session, inbound_id, message, now),
                          inbound=inbound_id)
            state = "ignored" if done.action == Action.IGNORED else "processed"
            return _finish(session, inbound_id, state, done, now, meta, finishing)
        if message.edit_of:
            edited = _edit(session, inbound_id, message, now)
            if edited is not None:
                return _finish(session, inbound_id, "processed", edited, now, meta, finishing)
        if message.sender_id:
            reachable_again(session, message.channel, message.sender_id)
        if message.action is not None:
            done = self.actions.carry_out(session, message, inbound_id, now, self._decide_held)
            for placed in done.held:   # the held messages the answer placed
                _log_result(placed)
            result = Result(action=Action.ACTION, ticket=done.ticket,
                            rules=[f"action:{message.action.name}"], reason=done.reason,
                            inbound=inbound_id)
            return _finish(session, inbound_id, "processed", result, now, meta, finishing)
        if message.sender_id and (message.sender_phone or message.sender_email):
            # They shared a phone or gave an email: one customer, one history (R-TH-10).
            people.bind(session, message.channel, message.sender_id, now,
                        phone=message.sender_phone, email=message.sender_email,
                        digits=self.config.threading.phone_match_digits)
            session.info.get("people", {}).pop(
                identity_key(message.channel, message.sender_id), None)
            if message.sender_phone and not self.quiet:
                self.actions.phone_shared(session, message, inbound_id, now)
        if message.chat and not self.quiet:
            # A confirmation code typed back, or an address to confirm
            # (gateway/customer_actions.py).
            done = self.actions.intercept(session, message, inbound_id, now)
            if done is not None:
                result = Result(action=Action.ACTION, rules=["action:confirm_email"],
                                reason=done.reason, inbound=inbound_id)
                return _finish(session, inbound_id, "processed", result, now, meta, finishing)
        ctx = Context(message=message, config=self.config, now=now, replay=replay,
                      history=self.quiet, no_asking=no_asking, just_chosen=chosen,
                      ticket_type=ticket_type or self.config.tickets.default_type)
        directory = SessionDirectory(session, settle=lambda t: self._settle(session, t, now))
        decide(ctx, directory)
        decision = ctx.decision
        reason = decision.reason or ("; ".join(ctx.notes) or None)
        if ctx.stopped:
            if decision.bounced_outbox_id is not None or message.delivery_status:
                inbound.record_bounce(session, inbound_id, decision.bounced_outbox_id,
                                      message.delivery_status, now)
            result = Result(action=decision.action, rules=ctx.fired, reason=reason,
                            inbound=inbound_id)
            if decision.action == Action.HELD:
                if not self.quiet:
                    self.actions.ask(session, message, decision, inbound_id, now)
                return _finish(session, inbound_id, chats.HELD, result, now, meta, finishing)
            state = "ignored" if decision.action == Action.IGNORED else "quarantined"
            return _finish(session, inbound_id, state, result, now, meta, finishing)
        ticket, comment = self._write(session, ctx, inbound_id, now)
        if message.sender_id and not message.chat and decision.action in (
                Action.NEW_TICKET, Action.NEW_TICKET_AFTER_WINDOW) \
                and decision.author is not None and decision.author.kind == "contact":
            # A fresh start in a chat (/new): the customer's next messages go on there.
            chats.choose(session, message.channel, message.sender_id, ticket.id)
        result = Result(action=decision.action, ticket=ticket.number,
                        previous_ticket=(decision.previous_ticket.number
                                         if decision.previous_ticket else None),
                        comment=comment.id, rules=ctx.fired, reason=reason,
                        inbound=inbound_id)
        return _finish(session, inbound_id, "processed", result, now, meta, finishing)

    def _decide_held(self, session: Session, inbound_ids: list[int], fresh_first: bool,
                     no_asking: bool = False, chosen: int | None = None) -> list[Result]:
        """Decide held messages again, in order, now that the customer chose a ticket
        (`chosen`, also remembered for their next messages); `fresh_first`: they asked
        for a new ticket, which the first one opens and the rest follow."""
        now = self.clock()
        results = []
        for index, inbound_id in enumerate(inbound_ids):
            raw, channel, meta = _inbound_raw(session, inbound_id)
            message = parse_kept(channel, raw, now)
            if fresh_first and index == 0:
                message = dataclasses.replace(message, chat=False)
            results.append(self._decide_and_write(
                session, inbound_id, message, meta.get("ticket_type"), now, replay=False,
                held=True, no_asking=no_asking, chosen=chosen))
        return results

    async def process_held(self) -> list[Result]:
        """Held messages whose question went unanswered for threading.chat_choice_wait go
        to the customer's most recently active ticket (the gateway runs this every few
        seconds), so that no message waits for an answer that never comes."""
        wait = parse_window(self.config.threading.chat_choice_wait)
        results = []
        for inbound_id in await self.store.run(chats.held_before, self.clock() - wait):
            try:
                results += await self.store.run(self._held_one, inbound_id)
            except Exception as exc:
                # One that cannot be decided must not hold up the rest, sweep after sweep.
                log.exception("deciding held message %s failed", inbound_id)
                failed = Result(action=Action.QUARANTINED, inbound=inbound_id,
                                reason=f"internal error: {type(exc).__name__}: {exc}"[:2000])
                results.append(await self.store.run(
                    _finish_if_received, inbound_id, failed, self.clock(), None))
        for result in results:
            _log_result(result)
        if results:
            self._committed()
        return results

    def _held_one(self, session: Session, inbound_id: int) -> list[Result]:
        row = inbound.locked(session, inbound_id)
        if row.state != chats.HELD:   # the customer answered meanwhile
            return []
        return self._decide_held(session, [inbound_id], False, no_asking=True)

    def _settle(self, session: Session, row, now: datetime):
        """Apply the timers a ticket is owed (pending -> open, resolved -> closed) first,
        so a decision sees the state a running gateway would have given the ticket.
        Takes a tickets row; returns it, or the updated Ticket when a timer fired."""
        if statuses.due_change(self.config.statuses, row, now) is None:
            return row
        ticket = locked_ticket(session, row.id)
        self.statuses.apply_due(session, ticket, now)
        return ticket

    def _write(self, session: Session, ctx: Context, inbound_id: int,
               now: datetime) -> tuple[SimpleNamespace | Ticket | TicketView, SimpleNamespace]:
        decision = ctx.decision
        message = ctx.message
        new = decision.action in (Action.NEW_TICKET, Action.NEW_TICKET_AFTER_WINDOW)
        ticket = (self._new_ticket(session, ctx, now) if new
                  else self._touch(session, decision, message, now))
        author = decision.author
        # Mail in an employee's name that did not prove it is theirs (staff_auth): a
        # private note, relayed to no one; only the employee hears of it.
        unverified = decision.unverified_staff
        values = dict(
            ticket_id=ticket.id, author_kind=author.kind if author else "system",
            contact_id=author.id if author and author.kind == "contact" else None,
            employee_id=author.id if author and author.kind == "employee" else None,
            public=unverified is None, channel=message.channel,
            text=self._comment_text(decision, message), inbound_id=inbound_id,
            message_id=message.message_id, email_from=message.sender_email,
            email_to=list(message.to), email_cc=list(message.cc), email_date=message.date,
            headers=dict(message.headers), created_at=now,
            decision={"action": str(decision.action), "rules": ctx.fired, "notes": ctx.notes,
                      **({"unverified": unverified} if unverified else {})})
        # Written through Core; the namespace carries the values on to the notifications,
        # with what the notifier would otherwise read back: the author and whether the
        # comment has files.
        comment = SimpleNamespace(id=insert_returning_id(session, Comment, values),
                                  author=author, file_count=len(message.attachments),
                                  **values)
        self._attachments(session, comment.id, message)
        if author is not None and author.kind == "employee" and not new and not unverified:
            first_response(session, ticket.id, now)
        if not self.quiet:
            self._notify(session, ctx, ticket, comment, new, now)
        return ticket, comment

    def _notify(self, session: Session, ctx: Context, ticket, comment, new: bool,
                now: datetime) -> None:
        message = ctx.message
        author = ctx.decision.author
        if ctx.decision.unverified_staff:
            self.notifier.unverified_staff(session, ticket, comment, author.id, author.email,
                                           ctx.decision.unverified_staff, now)
        elif new:
            # The author, never a Reply-To a third party may have set (issue #15).
            # Where they wrote from: the messenger they use (addressed to the contact, so
            # that a refusal there falls back), or their address on mail.
            contact = author.id if author is not None and author.kind == "contact" else None
            ack_to = None if ctx.decision.no_acknowledgement else (
                Target(message.channel, message.chat_id or message.sender_id, contact)
                if message.sender_id
                else message.sender_email)
            self.notifier.new_ticket(session, ticket, comment, ack_to, message.message_id, now)
        else:
            self.notifier.comment(session, ticket, comment, now,
                                  from_staff=not ctx.decision.stand_in_author)

    def _touch(self, session: Session, decision: Decision, message: InboundMessage,
               now: datetime) -> Ticket | TicketView:
        """The matched ticket takes the message: updated, and moved when the rules said so."""
        view = decision.ticket
        if not decision.new_status or decision.new_status == view.status:
            touch_ticket(session, view.id, now)
            return view
        ticket = locked_ticket(session, view.id)
        ticket.updated_at = now
        reason = statuses.MESSAGE_REASON.format(action=decision.action, sender=message.sender_email)
        self.statuses.change(session, ticket, decision.new_status, now, reason,
                             by_message=True)
        return ticket

    def _new_ticket(self, session: Session, ctx: Context, now: datetime) -> SimpleNamespace:
        decision = ctx.decision
        message = ctx.message
        previous = decision.previous_ticket
        contact_id = decision.contact.id if decision.contact else None
        company_id = decision.company_id
        if decision.create_contact and message.sender is not None:
            decision.author = get_or_create_contact_for(
                session, *message.sender, message.sender_email, message.sender_name,
                company_id, now)
            contact_id = decision.author.id
        if contact_id is None and previous is not None:
            # A follow-up of a ticket keeps its customer when the sender is not one.
            contact_id, company_id = previous.contact_id, company_id or previous.company_id
        ticket_type = ctx.ticket_type
        if previous is not None and ticket_type == self.config.tickets.default_type:
            ticket_type = previous.type
        initial = self.config.statuses.initial
        values = dict(number=next_ticket_number(session),
                      subject=(new_ticket_subject(
                          message.subject or (chat_subject(message.text) if message.chat
                                              else ""), self.config.threading.marker)
                               or NO_SUBJECT)[:2000], type=ticket_type,
                      priority=self.config.tickets.priority, status=initial,
                      channel=message.channel, chat=message.chat_id,
                      contact_id=contact_id, company_id=company_id,
                      created_at=now, updated_at=now, status_changed_at=now,
                      open_seconds=0.0, open_since=now)
        # Written through Core; what follows only reads it (no ORM entity to build).
        ticket = inserted_row(Ticket, values, insert_returning_id(session, Ticket, values))
        insert_later(session, StatusChange, [dict(
            ticket_id=ticket.id, from_status=None, to_status=initial, at=now,
            reason=f"created from {message.channel}")])
        if previous is not None:
            insert_rows(session, TicketLink, [
                dict(ticket_id=ticket.id, linked_id=previous.id, relation="follows"),
                dict(ticket_id=previous.id, linked_id=ticket.id, relation="followed_by")])
        return ticket

    def _comment_text(self, decision: Decision, message: InboundMessage) -> str:
        text = (decision.text or "").strip()
        limit = self.config.mail.max_attachment_size
        too_big = [a for a in message.attachments if a.size > limit]
        if not too_big:  # (most mail: the language need not be judged)
            return text
        texts = self.config.text(self.config.customer_language(message.subject, text))
        notes = [texts.attachment_too_big.format(
            filename=a.filename, size=human_size(a.size), limit=human_size(limit))
            for a in too_big]
        return "\n\n".join([text, *notes]).strip()

    def _attachments(self, session: Session, comment_id: int,
                     message: InboundMessage) -> None:
        limit = self.config.mail.max_attachment_size
        insert_rows_with_blob(session, Attachment, [
            dict(comment_id=comment_id, filename=item.filename[:500],
                 content_type=item.content_type[:200], size=item.size,
                 stored=item.size <= limit, data=item.data if item.size <= limit else None)
            for item in message.attachments], "data")


def _edit(session: Session, inbound_id: int, message: InboundMessage,
          now: datetime) -> Result | None:
    """A messenger's edit of a message we stored: its comment takes the new text, and the
    text it had goes into the comment's history (decision["edits"]). None when that
    message is not stored (an edit of something older): then it is a message like any."""
    comment = comments.by_message_id(session, message.channel, message.edit_of[:500])
    if comment is None:
        return None
    text = message.text.strip()
    history = [*(comment.decision or {}).get("edits", []),
               {"at": now.isoformat(), "text": comment.text, "inbound": inbound_id}]
    comment.decision = {**(comment.decision or {}), "edits": history}
    comment.text = text
    ticket = ticket_by_id(session, comment.ticket_id)
    ticket.updated_at = now
    return Result(action=Action.COMMENT, ticket=ticket.number, comment=comment.id,
                  rules=["edit"], inbound=inbound_id,
                  reason=f"an edit of message {message.edit_of}: comment {comment.id} has "
                         f"the new text, the earlier one is in its history")


def _log_result(result: Result) -> None:
    # One line per decision, with the rules that made it.
    log.info("inbound %s: %s ticket=%s previous=%s rules=%s reason=%s", result.inbound,
             result.action, result.ticket, result.previous_ticket, ",".join(result.rules),
             result.reason)


def human_size(size: int) -> str:
    value = float(size)
    for unit in SIZE_UNITS:
        if value < 1024 or unit == SIZE_UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _finish(session: Session, inbound_id: int, state: str, result: Result, now: datetime,
            meta: dict, finishing: list[dict] | None = None) -> Result:
    """Record the message's final state and result (or collect it for the batch)."""
    params = {"inbound_id": inbound_id, "new_state": state,
              "new_reason": result.reason if state != "processed" else None,
              "new_result": result.as_dict(), "new_processed_at": now,
              "new_meta": {k: v for k, v in meta.items() if v is not None}}
    if finishing is not None:
        finishing.append(params)
    else:
        inbound.finish(session, params)
    return result


def _duplicate_result(session: Session, inbound_id: int,
                      earlier: Result | None = None) -> Result:
    """A second copy; `earlier` is the first copy's result when this batch decided it."""
    if earlier is not None:
        ticket, state = earlier.ticket, _STATE_OF.get(earlier.action, "processed")
    else:
        row = inbound.row(session, inbound_id)
        ticket, state = (row.result or {}).get("ticket"), row.state
    return Result(action=Action.DUPLICATE, ticket=ticket, comment=None, rules=[],
                  reason=f"already received as inbound message {inbound_id} ({state})",
                  inbound=inbound_id, undecided=state == "received")


def _finish_if_received(session: Session, inbound_id: int, result: Result, now: datetime,
                        meta: dict | None) -> Result:
    """Quarantine a message whose decision failed, unless someone decided it meanwhile
    (`meta` None: the row keeps its own)."""
    row = inbound.locked(session, inbound_id)
    if row.state not in ("received", "quarantined", chats.HELD):
        return Result(**{**(row.result or {}), "inbound": inbound_id})
    return _finish(session, inbound_id, "quarantined", result, now,
                   dict(row.meta or {}) if meta is None else meta)


def _bytes_only(message: InboundMessage) -> InboundMessage:
    digest = "sha256:" + hashlib.sha256(message.raw).hexdigest()
    return dataclasses.replace(message, dedupe_key=digest, sender_email=None, sender_id=None)


_STATE_OF = {Action.IGNORED: "ignored", Action.QUARANTINED: "quarantined"}


class ReplayError(ValueError):
    """Only a quarantined message can be replayed."""


def _inbound_raw(session: Session, inbound_id: int) -> tuple[bytes, str, dict]:
    row = inbound.row(session, inbound_id)
    return row.raw, row.channel, dict(row.meta or {})


def _quarantined_raw(session: Session, inbound_id: int) -> tuple[bytes, str, dict, str]:
    row = inbound.locked_or_none(session, inbound_id)
    if row is None:
        raise ReplayError(f"no quarantined message {inbound_id}")
    if row.state not in ("quarantined", "received"):
        raise ReplayError(f"message {inbound_id} is {row.state}, not quarantined")
    return row.raw, row.channel, dict(row.meta or {}), row.state
