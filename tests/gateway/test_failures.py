"""Failure paths that could lose or duplicate a message (R-TS-5, R-TH-9, R-OUT-6): a batch
that fails rolls back whole and each message then takes the careful path; a message whose
decision keeps failing is quarantined with the reason, its raw bytes kept, and replays once
the cause is gone; a parser crash quarantines instead of dropping."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from helpgate.channels.mail import parse as parse_module
from helpgate.gateway.pipeline import Pipeline
from helpgate.threading.rules import sender_identity
from helpgate.ticketstore.models import InboundMessage, OutboxMessage, Ticket
from helpgate.ticketstore.queries import quarantine_list
from tests.mailfactory import mail

pytestmark = pytest.mark.pipeline_errors_expected


async def count(store, model) -> int:
    return await store.run(lambda s: s.scalar(select(func.count()).select_from(model)))


def poison(monkeypatch, sender: str) -> None:
    """Make the decision crash for one sender, as a bug would."""
    original = sender_identity.apply

    def apply(ctx, directory):
        if ctx.message.sender_email == sender:
            raise RuntimeError("rule bug")
        return original(ctx, directory)
    monkeypatch.setattr(sender_identity, "apply", apply)


async def test_a_failing_message_does_not_take_its_batch_down(store, config, clock,
                                                               monkeypatch):
    poison(monkeypatch, "bad@romashka.ru")
    pipeline = Pipeline(config, store, clock)
    raws = [mail(sender="a@romashka.ru"), mail(sender="bad@romashka.ru"),
            mail(sender="b@romashka.ru")]
    results = await pipeline.ingest_many([pipeline.parse(r) for r in raws])
    assert [r.action for r in results] == ["new_ticket", "quarantined", "new_ticket"]
    assert results[1].reason == "internal error: RuntimeError: rule bug"
    assert await count(store, Ticket) == 2
    assert await count(store, InboundMessage) == 3
    # Each surviving ticket queued its notifications once, despite the rolled-back batch.
    outbox = await store.run(lambda s: s.scalars(select(OutboxMessage.dedupe_key)).all())
    assert len(outbox) == len(set(outbox)) == 2
    quarantined = await store.run(quarantine_list)
    assert [(q["sender"], q["reason"]) for q in quarantined] == [
        ("bad@romashka.ru", "internal error: RuntimeError: rule bug")]


async def test_quarantined_message_replays_once_the_bug_is_fixed(store, config, clock,
                                                                  monkeypatch):
    poison(monkeypatch, "bad@romashka.ru")
    pipeline = Pipeline(config, store, clock)
    failed = await pipeline.ingest_email(mail(sender="bad@romashka.ru", body="важное"))
    assert failed.action == "quarantined"
    monkeypatch.undo()
    replayed = await pipeline.replay(failed.inbound)
    assert (replayed.action, replayed.inbound) == ("new_ticket", failed.inbound)
    assert await store.run(quarantine_list) == []
    assert (await count(store, InboundMessage), await count(store, Ticket)) == (1, 1)


async def test_a_parser_crash_quarantines_the_raw_bytes(store, config, clock, monkeypatch):
    def broken(raw, now, channel="email"):
        raise ValueError("parser bug")
    monkeypatch.setattr(parse_module, "parse_email", broken)
    raw = mail(body="не потеряйте меня")
    result = await Pipeline(config, store, clock).ingest_email(raw)
    assert result.action == "quarantined" and "parser bug" in result.reason
    stored = await store.run(lambda s: s.scalar(select(InboundMessage.raw)))
    assert stored == raw


async def test_a_duplicate_inside_one_batch_is_stored_once(store, config, clock):
    pipeline = Pipeline(config, store, clock)
    raw = mail(message_id="<twice@x>")
    results = await pipeline.ingest_many([pipeline.parse(raw), pipeline.parse(raw)])
    assert [r.action for r in results] == ["new_ticket", "duplicate"]
    assert results[1].ticket == results[0].ticket
    assert await count(store, InboundMessage) == 1


async def test_a_message_kept_but_never_decided_is_decided_later(store, config, clock):
    """A crash between keeping the raw message and deciding it leaves it "received"."""
    pipeline = Pipeline(config, store, clock)
    kept, duplicate = await store.keep_raw(pipeline.parse(mail(body="после сбоя")),
                                           "ivan@romashka.ru")
    assert not duplicate
    results = await pipeline.process_received()
    assert [(r.action, r.inbound) for r in results] == [("new_ticket", kept)]
    assert await pipeline.process_received() == []
    assert await count(store, Ticket) == 1
