"""Several messages decided in one transaction (an IMAP fetch, an import) must end exactly
as if each had come alone: a later message sees what an earlier one did to a ticket, a
contact an earlier one created, and a timer an earlier one settled."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore import statuses
from helpgate.ticketstore.models import Contact, StatusChange
from helpgate.ticketstore.queries import ticket_detail
from helpgate.ticketstore.repository import ticket_by_number
from tests.mailfactory import mail


async def detail(store, config, clock, number: int) -> dict:
    return await store.run(lambda s: ticket_detail(s, config, ticket_by_number(s, number),
                                                   clock()))


async def move(store, config, number: int, target: str, at, until=None) -> None:
    def work(session):
        ticket = ticket_by_number(session, number, lock=True)
        session.add(statuses.set_status(config.statuses, ticket, target, at, "test", until))
    await store.run(work)


@pytest.fixture
def config() -> Config:
    # No flood limit: its query would flush the session and hide a missing flush.
    return Config(threading={"throttle_max": 0})


async def test_two_replies_in_one_batch_reopen_once(store, config, clock):
    pipeline = Pipeline(config, store, clock)
    number = (await pipeline.ingest_email(mail())).ticket
    await move(store, config, number, "resolved", clock())
    clock.advance(hours=1)
    # An unrelated mail first: what it looks up is cached, so no query flushes the first
    # reply's reopening for the second reply to see; the pipeline must do it.
    batch = [pipeline.parse(mail(sender="petr@romashka.ru", subject="Другое"))]
    batch += [pipeline.parse(mail(subject=f"Re: [#{number}]", body=f"Снова сломался {i}."))
              for i in range(2)]
    results = await pipeline.ingest_many(batch)
    assert [r.action for r in results] == ["new_ticket", "reopened", "comment"]
    ticket = await detail(store, config, clock, number)
    assert ticket["status"] == "open"
    assert [c["text"] for c in ticket["comments"]][1:] == ["Снова сломался 0.",
                                                          "Снова сломался 1."]
    assert [h["to"] for h in ticket["status_history"]] == ["open", "resolved", "open"]


async def test_a_contact_created_in_a_batch_is_known_to_the_next_message(store, config,
                                                                           clock):
    pipeline = Pipeline(config, store, clock)
    raws = [mail(sender="new@elsewhere.example", subject=f"Вопрос {i}") for i in range(2)]
    results = await pipeline.ingest_many([pipeline.parse(r) for r in raws])
    assert [r.action for r in results] == ["new_ticket", "new_ticket"]
    assert "sender_identity" in results[1].rules and "sender_identity" not in results[0].rules
    contacts = await store.run(lambda s: s.scalar(select(func.count()).select_from(Contact)))
    assert contacts == 1
    first, second = [await detail(store, config, clock, r.ticket) for r in results]
    assert first["contact"] == second["contact"]
    assert first["contact"]["email"] == "new@elsewhere.example"


async def test_a_timer_settled_in_a_batch_is_seen_by_the_next_message(store, config, clock):
    pipeline = Pipeline(config, store, clock)
    number = (await pipeline.ingest_email(mail())).ticket
    await move(store, config, number, "pending", clock(), until=clock.advance(hours=2))
    clock.advance(hours=3)  # the until time has passed: the ticket is owed "open"
    replies = [pipeline.parse(mail(subject=f"Re: [#{number}]", body=f"Ответ {i}."))
               for i in range(2)]
    results = await pipeline.ingest_many(replies)
    assert [r.action for r in results] == ["comment", "comment"]
    changes = await store.run(lambda s: s.scalars(
        select(StatusChange.to_status).order_by(StatusChange.id)).all())
    assert changes == ["open", "pending", "open"]
