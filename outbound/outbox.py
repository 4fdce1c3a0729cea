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
no row is sent by two of them. Each row is marked "sending" in its own commit just before
the transport gets it: a gateway that dies leaves its claimed rows to go back to the
queue, and only a row whose outcome is truly unknown — handed to the relay, answer not
recorded — is parked as "uncertain" rather than sent again; `helpgate outbox retry ID`
sends it once more on an admin's word. A transport that knows its request arrived but
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

from sqlalchemy import bindparam, select, update
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
# Messages handed over at the same moment: what a crash can leave uncertain, at most.
IN_FLIGHT = 4
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
    row = session.execute(select(OUTBOX.c.state, OUTBOX.c.attempts, OUTBOX.c.claimed_by,
                                 OUTBOX.c.channel, OUTBOX.c.ticket_id, OUTBOX.c.comment_id)
                          .where(OUTBOX.c.id == outbox_id).with_for_update()).first()
    if row is not None and row.ticket_id is not None:
        # Whatever the verdict below: what went out is out, and a topic made is there.
        if result.topic is not None:
            chat_map.remember_topic(session, row.ticket_id, *result.topic, now)
        chat_map.remember_messages(session, row.channel, row.ticket_id, row.comment_id,
                                   list(result.posted), now)
    if row is None or row.state != "sending" or row.claimed_by != instance:
        # Parked as uncertain meanwhile (this instance taken for dead, or a lease shorter
        # than the send), perhaps retried since: keep that verdict.
        log.warning("outbox %s: result arrived in state %s", outbox_id,
                    row.state if row else "gone")
        return row.state if row else "gone"
    if result.delivered:
        values = {"state": "sent", "sent_at": now, "last_error": None}
    elif result.uncertain:
        # The transport cannot tell whether it went out: the same verdict as a gateway
        # killed while handing it over, for a person to decide (`outbox retry`).
        values = {"state": "uncertain", "last_error": result.error or "outcome unknown"}
    elif result.temporary and row.attempts < config.max_attempts:
        wait = backoff(row.attempts, config)
        if result.retry_after:
            wait = max(wait, timedelta(seconds=result.retry_after))
        values = {"state": "queued", "last_error": result.error, "next_attempt_at": now + wait}
    else:
        error = result.error or "failed"
        if result.temporary:
            error = f"gave up after {row.attempts} attempts: {error}"
        values = {"state": "parked", "last_error": error}
    session.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(**values))
    return values["state"]


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
        # In groups of IN_FLIGHT: a group is marked "sending" in one commit, handed over
        # side by side, and its outcomes recorded in one commit — two commits a group,
        # not two a message, and still at most IN_FLIGHT rows that a crash can leave
        # uncertain.
        for start in range(0, len(batch), IN_FLIGHT):
            if self._stop is not None and self._stop.is_set():
                # Stopping: the group in flight has finished; the rest go back at once.
                await self.store.run(release, [m.id for m in batch[start:]], self.clock(),
                                     self.instance)
                break
            await self._deliver_group(batch[start:start + IN_FLIGHT])
        return len(batch)

    def _beat_and_expire(self, session: Session, now: datetime) -> int:
        # One transaction: our own heartbeat first, so we never take ourselves for dead.
        instances.beat(session, self.instance, now)
        return expire_leases(session, now, parse_window(self.config.dead_after))

    async def _deliver_group(self, group: list[Outgoing]) -> None:
        marked = set(await self.store.run(mark_sending_many, [m.id for m in group],
                                          self.instance))
        for message in group:
            if message.id not in marked:
                log.warning("outbox %s: claim lost before sending; left alone", message.id)
        ready = [message for message in group if message.id in marked]
        if not ready:
            return
        results = await asyncio.gather(*(self._send(message) for message in ready))
        states = await self.store.run(self._record_all, list(zip(ready, results,
                                                                  strict=True)))
        if any(m.kind in IN_ORDER and state == "sent"
               for m, state in zip(ready, states, strict=True)):
            self._wake.set()   # a ticket's next topic post may go now, not at the next poll
        for message, result, state in zip(ready, results, states, strict=True):
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

    def _record_all(self, session: Session,
                    outcomes: list[tuple[Outgoing, DeliveryResult]]) -> list[str]:
        now = self.clock()
        channels = sorted(self.transports)
        return [unreachable(session, message.id, result, now, self.settings, channels,
                            self.instance) if result.unreachable else
                record(session, message.id, result, now, self.config, self.instance)
                for message, result in outcomes]
