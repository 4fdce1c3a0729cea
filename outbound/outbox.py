"""The outbox worker: durable delivery that never sends a message twice (R-OUT-6).

Outbox rows are written in the transaction of the event they announce (outbound/notify.py).
This worker sends them; every change of a row's state is a step of the state machine of
ticketstore/outbox.py (queued -> claimed -> sending -> sent | queued | parked |
uncertain, the lease and the instances' heartbeats), which it calls. What is left here is
what needs the transports and the channels: the rows claimed made messages
(`Outgoing`, with their files and the staff topic's thread), a row rerouted to a channel
that can reach its contact (outbound/targets.py), and the rounds.

A round's claims are handed over in groups of `outbox.in_flight`: each group is marked
"sending" in a commit before the transport gets any of it, and that same commit records
the outcomes of the group before (one commit a group, its outcomes written by one UPDATE
run for the whole group). A gateway that dies leaves its claimed rows to go back to the
queue, and only the one group handed over, its outcomes not committed, can become
"uncertain" rather than be sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from helpgate.config.schema import Config, parse_window
from helpgate.outbound.attachments import load_files
from helpgate.outbound.base import Outgoing, Transport
from helpgate.outbound.targets import addresses, reach
from helpgate.ticketstore import chat_map, instances
from helpgate.ticketstore import outbox as outbox_rows
from helpgate.ticketstore.outbox import BATCH, IN_ORDER, DeliveryResult
from helpgate.ticketstore.recipients import mark_unreachable
from helpgate.ticketstore.repository import Store

log = logging.getLogger("helpgate.outbox")


def claim(session: Session, channels: list[str], now: datetime, lease: timedelta,
          limit: int = BATCH, instance: str | None = None) -> list[Outgoing]:
    """Take due rows of these channels for `instance` (ticketstore/outbox.py: `claim`), as
    the messages the transports send."""
    rows = outbox_rows.claim(session, channels, now, lease, limit, instance)
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
    rows = outbox_rows.due_elsewhere(session, channels, now)
    moved = 0
    for row in rows:
        texts = config.text(config.staff_language)
        if _move(session, row, channels, config, now, texts.staff_rerouted):
            moved += 1
        else:
            outbox_rows.postpone(session, row.id,
                             now + parse_window(config.outbox.retry_after))
    return moved


def unreachable(session: Session, outbox_id: int, result: DeliveryResult, now: datetime,
                config: Config, channels: list[str], instance: str | None = None) -> str:
    """The channel refused the recipient for good (a blocked bot): their identity there
    is marked unreachable and the message goes by the next channel that reaches them,
    said on the ticket; with none, it is parked with the reason. Returns the new state."""
    row = outbox_rows.locked(session, outbox_id)
    if row is None or row.state != "sending" or row.claimed_by != instance \
            or row.contact_id is None:
        return outbox_rows.record(session, outbox_id,
                              dataclasses.replace(result, unreachable=False), now,
                              config.outbox, instance)
    mark_unreachable(session, row.contact_id, row.channel, row.recipient, now)
    texts = config.text(config.staff_language)
    error = (result.error or "").replace("{", "{{").replace("}", "}}")
    note = texts.staff_unreachable.replace("{error}", error)
    if _move(session, row, [c for c in channels if c != row.channel], config, now, note):
        outbox_rows.requeue(session, outbox_id, now, result.error)
        return "queued"
    return outbox_rows.record(session, outbox_id, dataclasses.replace(result, unreachable=False),
                          now, config.outbox, instance)


def _move(session: Session, row, channels: list[str], config: Config, now: datetime,
          note: str) -> bool:
    """Row onto the first channel of the fallback order that reaches its contact and is
    among `channels`, with `note` on the ticket ({channel}, {recipient}, {previous});
    False when there is none."""
    found = reach(addresses(session, row.contact_id), None,
                  config.notifications.fallback_order, lambda name: name in channels)
    if found is None:
        return False
    outbox_rows.move(session, row, *found, now, note)
    return True


class OutboxWorker:
    """Claims due rows, hands each to its channel's transport, records the outcome.

    `wake()` (called when the pipeline queued something) starts a round at once instead
    of at the next poll. Stopping lets the group in flight finish — a message handed to a
    transport always gets its outcome recorded — and hands the rest of the round's
    claims back to the queue. The worker is one gateway instance: it beats its heartbeat
    once every `heartbeat`, in a round or, while a round waits on a slow relay, in between
    (such a round must not look dead), and leaves on a clean stop.
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
        self._heartbeat = parse_window(self.config.heartbeat)
        self._expired_at: datetime | None = None
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
        interval = self._heartbeat.total_seconds()
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
        # Others' stale claims are looked for once a heartbeat interval, not every round:
        # a round follows every commit of inbound mail, and this transaction writes (our
        # beat), which is a disk sync on the embedded database for each batch of mail.
        if self._expired_at is None \
                or not self._expired_at <= now < self._expired_at + self._heartbeat:
            expired = await self.store.run(self._beat_and_expire, now)
            self._expired_at = now
            if expired:
                log.error("%d outbox messages were being sent when a gateway stopped; parked "
                          "as uncertain (`helpgate outbox --json` lists them)", expired)
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
        return outbox_rows.expire_leases(session, now, parse_window(self.config.dead_after))

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
        states = outbox_rows.record_many(session, plain, now, self.config, self.instance) \
            if plain else []
        if any(result.unreachable for _, result in outcomes):
            channels = sorted(self.transports)
            recorded = iter(states)
            states = [unreachable(session, m.id, result, now, self.settings, channels,
                                  self.instance) if result.unreachable else next(recorded)
                      for m, result in outcomes]
        marked = set(outbox_rows.mark_sending_many(session, following, self.instance)) \
            if following else set()
        if back:
            outbox_rows.release(session, back, now, self.instance)
        return states, marked
