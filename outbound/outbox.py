"""The outbox worker: durable delivery that never sends a message twice (R-OUT-6).

Outbox rows are written in the transaction of the event they announce (outbound/notify.py).
This worker moves them through their states:

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
no row is sent by two of them. A round's claims are handed over in groups of
`outbox.in_flight`: each group is marked "sending" in a commit before the transport gets
any of it, and that same commit records the outcomes of the group before (one commit a
group, its outcomes written by one UPDATE run for the whole group). A gateway that dies
leaves its claimed rows to go back to the queue, and only the rows whose outcome is truly
unknown — the one group handed over, its outcomes not committed — are parked as
"uncertain" rather than sent again; `helpgate outbox retry ID` sends one once more on an
admin's word. A transport that knows its request arrived but
got no answer (an SMS gateway's timeout after the request was written) says so
(`DeliveryResult.unknown`), and the row takes the same state.

A claim names the instance that made it (ticketstore/instances.py). An instance whose
heartbeat is older than `outbox.dead_after` is dead: its claims are released on the next
round of any worker, not after the lease. Every later step of a claim (marking it
"sending", recording the outcome) checks that the row is still this instance's, so an
instance taken for dead that wakes up again cannot send a row someone else now holds.
The lease stays as the backstop for claims of no known instance and for a live instance
stuck in one send.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from helpgate.config.schema import Config, OutboxConfig, parse_window
from helpgate.outbound.attachments import load_files
from helpgate.outbound.base import DeliveryResult, Outgoing, Transport
from helpgate.outbound.targets import addresses, mark_unreachable, reach
from helpgate.ticketstore import chat_map, instances
from helpgate.ticketstore.models import Comment, OutboxMessage
from helpgate.ticketstore.repository import Store, insert_rows

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


def claim(session: Session, channels: list[str], now: datetime, lease: timedelta,
          limit: int = BATCH, instance: str | None = None) -> list[Outgoing]:
    """Take due rows of these channels for `instance`: state "claimed" until `now + lease`.

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
    files = load_files(session, rows)
    topics = chat_map.topics_of(session, [r.ticket_id for r in rows
                                          if r.kind in IN_ORDER and r.ticket_id is not None])
    return [Outgoing(id=r.id, channel=r.channel, kind=r.kind, recipient=r.recipient,
                     subject=r.subject, text=r.text, html=r.html, message_id=r.message_id,
                     headers=dict(r.headers or {}), attachments=files.get(r.id, ()),
                     content=r.content if r.content is not None else r.text,
                     buttons=tuple(tuple((str(label), str(data)) for label, data in row)
                                   for row in r.buttons or ()),
                     thread_id=_thread(topics.get(r.ticket_id), r.recipient),
                     attempts=r.attempts or 0)
            for r in rows]


def _thread(topic: tuple[int, int] | None, recipient: str) -> int | None:
    """The topic's thread, when the topic is in the chat the row goes to (the staff group
    may have been changed since)."""
    if topic is None or str(topic[0]) != recipient:
        return None
    return topic[1]


def reroute(session: Session, channels: list[str], config: Config, now: datetime) -> int:
    """Due rows addressed to a customer on a channel no transport sends on: on to the
    first channel of the fallback order that can reach them (outbound/targets.py), said on
    the ticket in a private note. Those no channel can reach wait, looked at again after
    `retry_after` (as mail waits for a relay). Returns how many moved."""
    rows = session.execute(
        select(OUTBOX.c.id, OUTBOX.c.channel, OUTBOX.c.contact_id, OUTBOX.c.ticket_id)
        .where(OUTBOX.c.state == "queued", OUTBOX.c.next_attempt_at <= now,
               OUTBOX.c.contact_id.is_not(None), OUTBOX.c.channel.not_in(channels))
        .order_by(OUTBOX.c.id).limit(BATCH).with_for_update(skip_locked=True)).all()
    moved = 0
    for row in rows:
        texts = config.text(config.staff_language)
        if _move(session, row, channels, config, now, texts.staff_rerouted):
            moved += 1
        else:
            session.execute(update(OUTBOX).where(OUTBOX.c.id == row.id).values(
                next_attempt_at=now + parse_window(config.outbox.retry_after)))
    return moved


def unreachable(session: Session, outbox_id: int, result: DeliveryResult, now: datetime,
                config: Config, channels: list[str], instance: str | None = None) -> str:
    """The channel refused the recipient for good (a blocked bot): their identity there
    is marked unreachable and the message goes by the next channel that reaches them,
    said on the ticket; with none, it is parked with the reason. Returns the new state."""
    row = session.execute(select(OUTBOX).where(OUTBOX.c.id == outbox_id)
                          .with_for_update()).first()
    if row is None or row.state != "sending" or row.claimed_by != instance \
            or row.contact_id is None:
        return record(session, outbox_id, dataclasses.replace(result, unreachable=False),
                      now, config.outbox, instance)
    mark_unreachable(session, row.contact_id, row.channel, row.recipient, now)
    texts = config.text(config.staff_language)
    error = (result.error or "").replace("{", "{{").replace("}", "}}")
    note = texts.staff_unreachable.replace("{error}", error)
    if _move(session, row, [c for c in channels if c != row.channel], config, now, note):
        session.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(
            state="queued", next_attempt_at=now, last_error=result.error))
        return "queued"
    return record(session, outbox_id, dataclasses.replace(result, unreachable=False), now,
                  config.outbox, instance)


def _move(session: Session, row, channels: list[str], config: Config, now: datetime,
          note: str) -> bool:
    """Row onto the first channel of the fallback order that reaches its contact and is
    among `channels`, with `note` on the ticket ({channel}, {recipient}, {previous});
    False when there is none."""
    found = reach(addresses(session, row.contact_id), None,
                  config.notifications.fallback_order, lambda name: name in channels)
    if found is None:
        return False
    channel, recipient = found
    session.execute(update(OUTBOX).where(OUTBOX.c.id == row.id).values(
        channel=channel, recipient=recipient))
    if row.ticket_id is not None:
        insert_rows(session, Comment, [dict(
            ticket_id=row.ticket_id, author_kind="system", public=False, channel="system",
            text=note.format(channel=channel, recipient=recipient, previous=row.channel),
            created_at=now, decision={"action": "rerouted", "outbox": row.id})])
    log.warning("outbox %s: %s cannot be used; goes by %s to %s", row.id, row.channel,
                channel, recipient)
    return True


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


class OutboxWorker:
    """Claims due rows, hands each to its channel's transport, records the outcome.

    `wake()` (called when the pipeline queued something) starts a round at once instead
    of at the next poll. Stopping lets the group in flight finish — a message handed to a
    transport always gets its outcome recorded — and hands the rest of the round's
    claims back to the queue. The worker is one gateway instance: it
    beats its heartbeat every round and, while running, every `heartbeat` in between (a
    round waiting on a slow relay must not look dead), and leaves on a clean stop.
    """

    def __init__(self, store: Store, config: Config, transports: dict[str, Transport],
                 clock: Callable[[], datetime], instance: str | None = None) -> None:
        self.store = store
        self.settings = config  # the whole config: rerouting reads notifications too
        self.config = config.outbox
        self.transports = transports
        self.clock = clock
        self.instance = instance or instances.new_instance_id()
        self._wake = asyncio.Event()
        self._stop: asyncio.Event | None = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        if not self.transports:
            log.warning("no outbound transport configured: notifications wait in the outbox")
        heart = asyncio.create_task(self._heartbeats(stop), name="outbox heartbeat")
        try:
            await self._rounds(stop)
        finally:
            heart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heart
            with contextlib.suppress(Exception):  # the database gone: the row goes stale
                await self.store.run(instances.deregister, self.instance)

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        interval = parse_window(self.config.heartbeat).total_seconds()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            try:
                await self.store.run(instances.beat, self.instance, self.clock())
            except Exception as exc:  # the database away for a moment: the next beat
                log.warning("outbox heartbeat failed: %s", exc)

    async def _rounds(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                handled = await self.run_once()
            except Exception:  # the database away for a moment: try again next round
                log.exception("outbox round failed")
                handled = 0
            if handled == BATCH:
                continue  # more may be due right now
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(waits, timeout=self.config.poll_interval,
                                   return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()

    async def run_once(self) -> int:
        """One round: expire stale claims, claim due rows, send them; the count handled."""
        now = self.clock()
        expired = await self.store.run(self._beat_and_expire, now)
        if expired:
            log.error("%d outbox messages were being sent when a gateway stopped; parked as "
                      "uncertain (`helpgate outbox --json` lists them)", expired)
        if not self.transports:
            return 0
        moved = await self.store.run(reroute, sorted(self.transports), self.settings, now)
        if moved:
            log.info("%d outbox messages go by another channel", moved)
        lease = parse_window(self.config.lease)
        batch = await self.store.run(claim, sorted(self.transports), now, lease, BATCH,
                                     self.instance)
        # In groups of `outbox.in_flight`, handed over side by side. One commit records a
        # group's outcomes and marks the next group "sending" (stopping: hands the rest
        # of the round back), so a group costs one commit, and still at most one group's
        # rows are handed over uncommitted: all that a crash can leave uncertain.
        if not batch:
            return 0
        size = self.config.in_flight
        groups = [batch[start:start + size] for start in range(0, len(batch), size)]
        outcomes: list[tuple[Outgoing, DeliveryResult]] = []
        for index in range(len(groups) + 1):
            stopping = self._stop is not None and self._stop.is_set()
            following = groups[index] if index < len(groups) and not stopping else []
            back = [m.id for group in groups[index:] for m in group] if stopping else []
            states, marked = await self.store.run(self._settle, outcomes,
                                                  [m.id for m in following], back)
            self._after(outcomes, states)
            if not following:
                break
            for message in following:
                if message.id not in marked:
                    log.warning("outbox %s: claim lost before sending; left alone",
                                message.id)
            ready = [message for message in following if message.id in marked]
            results = await asyncio.gather(*(self._send(message) for message in ready))
            outcomes = list(zip(ready, results, strict=True))
        return len(batch)

    def _beat_and_expire(self, session: Session, now: datetime) -> int:
        # One transaction: our own heartbeat first, so we never take ourselves for dead.
        instances.beat(session, self.instance, now)
        return expire_leases(session, now, parse_window(self.config.dead_after))

    def _after(self, outcomes: list[tuple[Outgoing, DeliveryResult]],
               states: list[str]) -> None:
        if any(m.kind in IN_ORDER and state == "sent"
               for (m, _), state in zip(outcomes, states, strict=True)):
            self._wake.set()   # a ticket's next topic post may go now, not at the next poll
        for (message, result), state in zip(outcomes, states, strict=True):
            # A relay's refusal or a network failure is the admin's business: WARNING.
            level = logging.INFO if result.delivered else logging.WARNING
            log.log(level, "outbox %s: %s %s to %s -> %s%s", message.id, message.channel,
                    message.kind, message.recipient, state,
                    f" ({result.error})" if result.error else "")

    async def _send(self, message: Outgoing) -> DeliveryResult:
        try:
            return await self.transports[message.channel].send(message)
        except Exception as exc:  # a transport bug: retry later rather than lose it
            log.exception("outbox %s: %s transport failed", message.id, message.channel)
            return DeliveryResult.retry(f"{type(exc).__name__}: {exc}")

    def _settle(self, session: Session, outcomes: list[tuple[Outgoing, DeliveryResult]],
                following: list[int], back: list[int]) -> tuple[list[str], set[int]]:
        """One transaction: the outcomes recorded (their new states, in order), then the
        next group marked "sending" (the ids still ours) and `back` released."""
        now = self.clock()
        plain = [(m.id, result) for m, result in outcomes if not result.unreachable]
        states = record_many(session, plain, now, self.config, self.instance) if plain \
            else []
        if any(result.unreachable for _, result in outcomes):
            channels = sorted(self.transports)
            recorded = iter(states)
            states = [unreachable(session, m.id, result, now, self.settings, channels,
                                  self.instance) if result.unreachable else next(recorded)
                      for m, result in outcomes]
        marked = set(mark_sending_many(session, following, self.instance)) if following \
            else set()
        if back:
            release(session, back, now, self.instance)
        return states, marked
