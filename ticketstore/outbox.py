"""The outbox rows' one state machine: every change of an outbox row's state (R-OUT-6).

Outbox rows are written in the transaction of the event they announce (outbound/notify.py)
and delivered by the worker of outbound/outbox.py, which calls these functions for each
step. The steps live in one place so that the rule "never sent twice" is checked here and
nowhere else:

    queued --claim--> claimed --handed to the transport--> sending --delivered--> sent
                         |                                   |----temporary--> queued
                         |                                   |  (later: backoff), parked
                         |                                   |  after max_attempts
                         |                                   |----permanent--> parked
                         |                                   |----outcome unknown--> uncertain
                         '--claimant dead--> queued          '--claimant dead--> uncertain
                            (or lease over)                     (or lease over)

A claim is a committed state change made under `FOR UPDATE SKIP LOCKED` on PostgreSQL
(SQLite's write lock serializes claims), so several gateway instances share one outbox and
no row is sent by two of them. A row is marked "sending" in a commit before the transport
gets it (the point of no return). A gateway that dies leaves its claimed rows to go back
to the queue, and only the rows whose outcome is truly unknown — handed over, their
outcomes not committed — are parked as "uncertain" rather than sent again; `helpgate
outbox retry ID` (`retry`) sends one once more on an admin's word. A transport that knows
its request arrived but got no answer (an SMS gateway's timeout after the request was
written) says so (`DeliveryResult.unknown`), and the row takes the same state.

A claim names the instance that made it (ticketstore/instances.py). An instance whose
heartbeat is older than `outbox.dead_after` is dead: its claims are released on the next
round of any worker, not after the lease (`expire_leases`). Every later step of a claim
(marking it "sending", recording the outcome, handing it back) checks that the row is
still this instance's, so an instance taken for dead that wakes up again cannot send a row
someone else now holds. The lease stays as the backstop for claims of no known instance
and for a live instance stuck in one send.

`DeliveryResult`, a transport's answer, is defined here: recording it is a step of this
state machine, and ticketstore imports nothing of outbound (docs/ARCHITECTURE.md); the
transports import it from here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from helpgate.config.schema import OutboxConfig, parse_window
from helpgate.ticketstore import chat_map, instances
from helpgate.ticketstore.models import Attachment, Comment, OutboxMessage
from helpgate.ticketstore.repository import insert_rows

# The worker's logger: what a step of the state machine warns about is the outbox's news.
log = logging.getLogger("helpgate.outbox")
OUTBOX = OutboxMessage.__table__
# Rows one round claims. Several instances share the queue (SKIP LOCKED), and a stop
# hands back what a round has not started (release), so a round may be large: the fixed
# cost of a round (expiry, rerouting, the claim) is spread over many messages.
BATCH = 100
# Kinds delivered one at a time per ticket, in the order queued (outbound/staff_topics.py).
IN_ORDER = ("topic",)
UNFINISHED = ("queued", "claimed", "sending")
UNCERTAIN = ("the gateway stopped while handing this message over; it may have gone out, "
             "so it is not sent again by itself (`helpgate outbox retry {id}` sends it)")


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivered: bool
    # Worth another attempt later (a 4xx answer, a network error, a rate limit).
    temporary: bool = False
    error: str | None = None
    # The recipient cannot be reached on this channel at all (they blocked the bot): the
    # message goes by the next channel that reaches them (outbound/targets.py).
    unreachable: bool = False
    # Seconds the other side asked us to wait before trying again (a messenger's rate
    # limit): the outbox waits at least this long, its own backoff when that is longer.
    retry_after: float | None = None
    # What the messenger named the messages that went out, (chat id, message id) each,
    # whatever the outcome (a failure after a part still posted that part): recorded
    # against the row's ticket and comment (ticketstore/chat_map.py).
    # Not part of the outcome: two results compare equal whatever they posted.
    posted: tuple[tuple[int, int], ...] = field(default=(), compare=False)
    # (chat id, thread id) of a staff topic the transport made for the row's ticket (the
    # first post, or the topic staff deleted made again): recorded as the ticket's topic.
    topic: tuple[int, int] | None = field(default=None, compare=False)
    # The request reached the other side and its answer did not come back (a timeout
    # after the request was written, where the service has no idempotency key): it may
    # have gone out. The outbox keeps it "uncertain", never sends it again by itself.
    uncertain: bool = False

    @classmethod
    def ok(cls, posted: tuple[tuple[int, int], ...] = (),
           topic: tuple[int, int] | None = None) -> DeliveryResult:
        return cls(delivered=True, posted=posted, topic=topic)

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None) -> DeliveryResult:
        return cls(delivered=False, temporary=True, error=error, retry_after=retry_after)

    @classmethod
    def failed(cls, error: str) -> DeliveryResult:
        return cls(delivered=False, temporary=False, error=error)

    @classmethod
    def unknown(cls, error: str) -> DeliveryResult:
        return cls(delivered=False, temporary=False, error=error, uncertain=True)

    @classmethod
    def unreachable_here(cls, error: str) -> DeliveryResult:
        return cls(delivered=False, temporary=False, error=error, unreachable=True)


def claim(session: Session, channels: list[str], now: datetime, lease: timedelta,
          limit: int = BATCH, instance: str | None = None) -> list:
    """Take due rows of these channels for `instance`: state "claimed" until `now + lease`;
    the rows as read (outbound/outbox.py makes them messages).

    Rows of a kind in IN_ORDER (posts in a ticket's staff topic) are taken one at a time
    per ticket, oldest first: a conversation is read in order, and the first post makes
    the topic the later ones go to, so two must never make one each."""
    earlier = OUTBOX.alias("earlier")
    waiting = select(earlier.c.id).where(
        earlier.c.kind.in_(IN_ORDER), earlier.c.ticket_id == OUTBOX.c.ticket_id,
        earlier.c.id < OUTBOX.c.id, earlier.c.state.in_(UNFINISHED)).exists()
    rows = session.execute(
        select(OUTBOX).where(OUTBOX.c.state == "queued", OUTBOX.c.next_attempt_at <= now,
                             OUTBOX.c.channel.in_(channels),
                             ~(OUTBOX.c.kind.in_(IN_ORDER) & waiting))
        .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id).limit(limit)
        .with_for_update(skip_locked=True)).all()
    if rows:
        session.execute(update(OUTBOX).where(OUTBOX.c.id.in_([r.id for r in rows]))
                        .values(state="claimed", next_attempt_at=now + lease,
                                claimed_by=instance))
    return rows


def due_elsewhere(session: Session, channels: list[str], now: datetime) -> list:
    """Due rows addressed to a contact on a channel not among `channels` (locked): the
    ones rerouting looks at, (id, channel, contact_id, ticket_id) each."""
    return session.execute(
        select(OUTBOX.c.id, OUTBOX.c.channel, OUTBOX.c.contact_id, OUTBOX.c.ticket_id)
        .where(OUTBOX.c.state == "queued", OUTBOX.c.next_attempt_at <= now,
               OUTBOX.c.contact_id.is_not(None), OUTBOX.c.channel.not_in(channels))
        .order_by(OUTBOX.c.id).limit(BATCH).with_for_update(skip_locked=True)).all()


def postpone(session: Session, outbox_id: int, due: datetime) -> None:
    """A row no channel can reach now: looked at again at `due`."""
    session.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(
        next_attempt_at=due))


def locked(session: Session, outbox_id: int):
    """The row, locked for the rest of the transaction; None when there is none."""
    return session.execute(select(OUTBOX).where(OUTBOX.c.id == outbox_id)
                           .with_for_update()).first()


def stored_files(session: Session, ids: set[int]) -> list:
    """(id, filename, content_type, data) of the attachments among `ids` whose content is
    stored: the files claimed rows carry (their `attachments`), read when they are sent."""
    table = Attachment.__table__
    return session.execute(
        select(table.c.id, table.c.filename, table.c.content_type, table.c.data)
        .where(table.c.id.in_(ids), table.c.stored.is_(True))).all()


def requeue(session: Session, outbox_id: int, now: datetime, error: str | None) -> None:
    """A row moved to another channel after a refusal: queued again, due at once."""
    session.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(
        state="queued", next_attempt_at=now, last_error=error))


def move(session: Session, row, channel: str, recipient: str, now: datetime,
         note: str) -> None:
    """Row onto `channel` and `recipient`, with `note` on the ticket ({channel},
    {recipient}, {previous})."""
    session.execute(update(OUTBOX).where(OUTBOX.c.id == row.id).values(
        channel=channel, recipient=recipient))
    if row.ticket_id is not None:
        insert_rows(session, Comment, [dict(
            ticket_id=row.ticket_id, author_kind="system", public=False, channel="system",
            text=note.format(channel=channel, recipient=recipient, previous=row.channel),
            created_at=now, decision={"action": "rerouted", "outbox": row.id})])
    log.warning("outbox %s: %s cannot be used; goes by %s to %s", row.id, row.channel,
                channel, recipient)


def mark_sending(session: Session, outbox_id: int, instance: str | None = None) -> bool:
    """The point of no return, committed before the transport gets the message; False
    when the claim is no longer `instance`'s (released while it was taken for dead)."""
    result = session.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id,
                                                  OUTBOX.c.state == "claimed",
                                                  _claimed_by(instance))
                             .values(state="sending", attempts=OUTBOX.c.attempts + 1))
    return result.rowcount == 1


def mark_sending_many(session: Session, outbox_ids: list[int],
                      instance: str | None = None) -> list[int]:
    """`mark_sending` for a group in one commit: the ids still this instance's claims."""
    marked = session.execute(update(OUTBOX).where(OUTBOX.c.id.in_(outbox_ids),
                                                  OUTBOX.c.state == "claimed",
                                                  _claimed_by(instance))
                             .values(state="sending", attempts=OUTBOX.c.attempts + 1)
                             .returning(OUTBOX.c.id)).scalars().all()
    return list(marked)


def release(session: Session, outbox_ids: list[int], now: datetime,
            instance: str | None = None) -> None:
    """Claims this instance will not hand over after all (it is stopping): back to the
    queue, due at once."""
    session.execute(update(OUTBOX).where(OUTBOX.c.id.in_(outbox_ids),
                                         OUTBOX.c.state == "claimed", _claimed_by(instance))
                    .values(state="queued", next_attempt_at=now, claimed_by=None))


def _claimed_by(instance: str | None):
    return OUTBOX.c.claimed_by.is_(None) if instance is None else \
        OUTBOX.c.claimed_by == instance


def record(session: Session, outbox_id: int, result: DeliveryResult, now: datetime,
           config: OutboxConfig, instance: str | None = None) -> str:
    """Store a send's outcome; returns the row's new state."""
    return record_many(session, [(outbox_id, result)], now, config, instance)[0]


def record_many(session: Session, outcomes: list[tuple[int, DeliveryResult]],
                now: datetime, config: OutboxConfig, instance: str | None = None
                ) -> list[str]:
    """Store the outcomes of a group's sends, (outbox id, result) each: one read of the
    rows (locked), one UPDATE run for the whole group; the rows' new states in order."""
    found = {row.id: row for row in session.execute(
        select(OUTBOX.c.id, OUTBOX.c.state, OUTBOX.c.attempts, OUTBOX.c.claimed_by,
               OUTBOX.c.channel, OUTBOX.c.ticket_id, OUTBOX.c.comment_id)
        .where(OUTBOX.c.id.in_([outbox_id for outbox_id, _ in outcomes]))
        .with_for_update())}
    changes, states = [], []
    for outbox_id, result in outcomes:
        row = found.get(outbox_id)
        if row is not None and row.ticket_id is not None:
            # Whatever the verdict below: what went out is out, and a topic made is there.
            if result.topic is not None:
                chat_map.remember_topic(session, row.ticket_id, *result.topic, now)
            chat_map.remember_messages(session, row.channel, row.ticket_id, row.comment_id,
                                       list(result.posted), now)
        if row is None or row.state != "sending" or row.claimed_by != instance:
            # Parked as uncertain meanwhile (this instance taken for dead, or a lease
            # shorter than the send), perhaps retried since: keep that verdict.
            log.warning("outbox %s: result arrived in state %s", outbox_id,
                        row.state if row else "gone")
            states.append(row.state if row else "gone")
            continue
        change = _verdict(row.attempts, result, now, config)
        changes.append({"outbox_id": outbox_id, **change})
        states.append(change["new_state"])
    if changes:
        # Every row under the lock read above, so no condition is needed here.
        session.execute(_RECORD, changes)
    return states


def _verdict(attempts: int, result: DeliveryResult, now: datetime,
             config: OutboxConfig) -> dict:
    """What a send's outcome makes of its row: the values of _RECORD."""
    if result.delivered:
        return {"new_state": "sent", "sent": now, "due": None, "error": None}
    if result.uncertain:
        # The transport cannot tell whether it went out: the same verdict as a gateway
        # killed while handing it over, for a person to decide (`outbox retry`).
        return {"new_state": "uncertain", "sent": None, "due": None,
                "error": result.error or "outcome unknown"}
    if result.temporary and attempts < config.max_attempts:
        wait = backoff(attempts, config)
        if result.retry_after:
            wait = max(wait, timedelta(seconds=result.retry_after))
        return {"new_state": "queued", "sent": None, "due": now + wait,
                "error": result.error}
    error = result.error or "failed"
    if result.temporary:
        error = f"gave up after {attempts} attempts: {error}"
    return {"new_state": "parked", "sent": None, "due": None, "error": error}


# One statement for every verdict, so a group's outcomes are one executemany: a verdict
# that does not set sent_at or next_attempt_at passes None and keeps the row's.
_RECORD = update(OUTBOX).where(OUTBOX.c.id == bindparam("outbox_id")).values(
    state=bindparam("new_state"), last_error=bindparam("error"),
    sent_at=func.coalesce(bindparam("sent", type_=OUTBOX.c.sent_at.type), OUTBOX.c.sent_at),
    next_attempt_at=func.coalesce(bindparam("due", type_=OUTBOX.c.next_attempt_at.type),
                                  OUTBOX.c.next_attempt_at))


def backoff(attempts: int, config: OutboxConfig) -> timedelta:
    """retry_after, doubled for each further attempt, at most retry_max."""
    first, most = parse_window(config.retry_after), parse_window(config.retry_max)
    return min(first * (2 ** max(0, attempts - 1)), most)


def expire_leases(session: Session, now: datetime,
                  dead_after: timedelta | None = None) -> int:
    """Rows a stopped gateway left behind — claimed by an instance whose heartbeat is
    older than `dead_after`, or (the backstop) past their lease: claimed ones go back to
    the queue; ones it was sending are parked as uncertain, never resent. Returns how
    many were parked."""
    stale = OUTBOX.c.next_attempt_at <= now
    if dead_after is not None:
        orphaned = OUTBOX.c.claimed_by.is_not(None) & OUTBOX.c.claimed_by.not_in(
            instances.live_instances(session, now, dead_after))
        stale = stale | orphaned
    rows = session.execute(select(OUTBOX.c.id, OUTBOX.c.state).where(
        OUTBOX.c.state.in_(("claimed", "sending")), stale)
        .with_for_update(skip_locked=True)).all()
    if dead_after is not None:
        instances.forget_dead(session, now, dead_after)
    parked = 0
    for row in rows:
        if row.state == "claimed":
            session.execute(update(OUTBOX).where(OUTBOX.c.id == row.id)
                            .values(state="queued", next_attempt_at=now))
        else:
            session.execute(_UNCERTAIN, {"outbox_id": row.id,
                                         "error": UNCERTAIN.format(id=row.id)})
            parked += 1
    return parked


_UNCERTAIN = update(OUTBOX).where(OUTBOX.c.id == bindparam("outbox_id")).values(
    state="uncertain", last_error=bindparam("error"))


class RetryError(ValueError):
    """Only a parked or uncertain message can be sent again."""


def retry(session: Session, outbox_id: int, now: datetime) -> None:
    """An admin's word: send a parked or uncertain message again (attempts start over)."""
    row = session.execute(select(OUTBOX.c.state).where(OUTBOX.c.id == outbox_id)
                          .with_for_update()).first()
    if row is None:
        raise RetryError(f"no outbox message {outbox_id}")
    if row.state not in ("parked", "uncertain"):
        raise RetryError(f"outbox message {outbox_id} is {row.state}; only parked or "
                         "uncertain messages are sent again")
    session.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(
        state="queued", attempts=0, next_attempt_at=now, claimed_by=None))
