"""The outbox worker: durable delivery that never sends a message twice (R-OUT-6).

Outbox rows are written in the transaction of the event they announce (outbound/notify.py).
This worker moves them through their states:

    queued --claim--> claimed --handed to the transport--> sending --delivered--> sent
                         |                                   |----temporary--> queued
                         |                                   |  (later: backoff), parked
                         |                                   |  after max_attempts
                         |                                   |----permanent--> parked
                         '--lease ran out--> queued          '--lease ran out--> uncertain

A claim is a committed state change made under `FOR UPDATE SKIP LOCKED` on PostgreSQL
(SQLite's write lock serializes claims), so several gateway instances share one outbox and
no row is sent by two of them. Each row is marked "sending" in its own commit just before
the transport gets it: a gateway that dies leaves its claimed rows to go back to the
queue, and only a row whose outcome is truly unknown — handed to the relay, answer not
recorded — is parked as "uncertain" rather than sent again; `helpgate outbox retry ID`
sends it once more on an admin's word.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from helpgate.config.schema import OutboxConfig, parse_window
from helpgate.outbound.attachments import load_files
from helpgate.outbound.base import DeliveryResult, Outgoing, Transport
from helpgate.ticketstore.models import OutboxMessage
from helpgate.ticketstore.repository import Store

log = logging.getLogger("helpgate.outbox")
OUTBOX = OutboxMessage.__table__
BATCH = 20
# Messages handed over at the same moment: what a crash can leave uncertain, at most.
IN_FLIGHT = 4
UNCERTAIN = ("the gateway stopped while handing this message over; it may have gone out, "
             "so it is not sent again by itself (`helpgate outbox retry {id}` sends it)")


def claim(session: Session, channels: list[str], now: datetime, lease: timedelta,
          limit: int = BATCH) -> list[Outgoing]:
    """Take due rows of these channels: state "claimed" until `now + lease`."""
    rows = session.execute(
        select(OUTBOX).where(OUTBOX.c.state == "queued", OUTBOX.c.next_attempt_at <= now,
                             OUTBOX.c.channel.in_(channels))
        .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.id).limit(limit)
        .with_for_update(skip_locked=True)).all()
    if rows:
        session.execute(update(OUTBOX).where(OUTBOX.c.id.in_([r.id for r in rows]))
                        .values(state="claimed", next_attempt_at=now + lease))
    files = load_files(session, rows)
    return [Outgoing(id=r.id, channel=r.channel, kind=r.kind, recipient=r.recipient,
                     subject=r.subject, text=r.text, html=r.html, message_id=r.message_id,
                     headers=dict(r.headers or {}), attachments=files.get(r.id, ()))
            for r in rows]


def mark_sending(session: Session, outbox_id: int) -> bool:
    """The point of no return, committed before the transport gets the message."""
    result = session.execute(update(OUTBOX).where(OUTBOX.c.id == outbox_id,
                                                  OUTBOX.c.state == "claimed")
                             .values(state="sending", attempts=OUTBOX.c.attempts + 1))
    return result.rowcount == 1


def record(session: Session, outbox_id: int, result: DeliveryResult, now: datetime,
           config: OutboxConfig) -> str:
    """Store a send's outcome; returns the row's new state."""
    row = session.execute(select(OUTBOX.c.state, OUTBOX.c.attempts)
                          .where(OUTBOX.c.id == outbox_id).with_for_update()).first()
    if row is None or row.state != "sending":
        # Parked as uncertain meanwhile (a lease shorter than the send): keep that verdict.
        log.warning("outbox %s: result arrived in state %s", outbox_id,
                    row.state if row else "gone")
        return row.state if row else "gone"
    if result.delivered:
        values = {"state": "sent", "sent_at": now, "last_error": None}
    elif result.temporary and row.attempts < config.max_attempts:
        values = {"state": "queued", "last_error": result.error,
                  "next_attempt_at": now + backoff(row.attempts, config)}
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


def expire_leases(session: Session, now: datetime) -> int:
    """Rows a stopped gateway left behind: claimed ones go back to the queue; ones it was
    sending are parked as uncertain, never resent. Returns how many were parked."""
    rows = session.execute(select(OUTBOX.c.id, OUTBOX.c.state).where(
        OUTBOX.c.state.in_(("claimed", "sending")), OUTBOX.c.next_attempt_at <= now)
        .with_for_update(skip_locked=True)).all()
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
        state="queued", attempts=0, next_attempt_at=now))


class OutboxWorker:
    """Claims due rows, hands each to its channel's transport, records the outcome.

    `wake()` (called when the pipeline queued something) starts a round at once instead
    of at the next poll. Stopping lets the round in flight finish: a message handed to a
    transport always gets its outcome recorded.
    """

    def __init__(self, store: Store, config: OutboxConfig, transports: dict[str, Transport],
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.config = config
        self.transports = transports
        self.clock = clock
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(IN_FLIGHT)

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        if not self.transports:
            log.warning("no outbound transport configured: notifications wait in the outbox")
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
        expired = await self.store.run(expire_leases, now)
        if expired:
            log.error("%d outbox messages were being sent when a gateway stopped; parked as "
                      "uncertain (`helpgate outbox --json` lists them)", expired)
        if not self.transports:
            return 0
        lease = parse_window(self.config.lease)
        batch = await self.store.run(claim, sorted(self.transports), now, lease)
        await asyncio.gather(*(self._deliver(message) for message in batch))
        return len(batch)

    async def _deliver(self, message: Outgoing) -> None:
        async with self._slots:
            await self._hand_over(message)

    async def _hand_over(self, message: Outgoing) -> None:
        if not await self.store.run(mark_sending, message.id):
            log.warning("outbox %s: claim lost before sending; left alone", message.id)
            return
        try:
            result = await self.transports[message.channel].send(message)
        except Exception as exc:  # a transport bug: retry later rather than lose it
            log.exception("outbox %s: %s transport failed", message.id, message.channel)
            result = DeliveryResult.retry(f"{type(exc).__name__}: {exc}")
        state = await self.store.run(record, message.id, result, self.clock(), self.config)
        log.info("outbox %s: %s %s to %s -> %s%s", message.id, message.channel, message.kind,
                 message.recipient, state, f" ({result.error})" if result.error else "")
