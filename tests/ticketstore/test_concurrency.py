"""Several gateway instances share one database (R-TS-1): database constraints and row
locks, not in-process locks, keep ticket numbers unique, duplicates out, and every message."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore.models import Comment, InboundMessage, Ticket
from helpgate.ticketstore.repository import Store
from tests.mailfactory import mail

PER_INSTANCE = 15


async def second_instance(store: Store) -> Store:
    return Store(store.url, connect_args=store.connect_args)


async def count(store: Store, model) -> int:
    return await store.run(lambda s: s.scalar(select(func.count()).select_from(model)))


async def test_two_instances_number_tickets_without_gaps_or_repeats(store, config, clock):
    other = await second_instance(store)
    try:
        first, second = Pipeline(config, store, clock), Pipeline(config, other, clock)
        jobs = [p.ingest_email(mail(sender=f"user{i}-{n}@firm{i}.example"))
                for n in range(PER_INSTANCE) for i, p in enumerate((first, second))]
        results = await asyncio.gather(*jobs)
    finally:
        await other.close()
    numbers = sorted(r.ticket for r in results)
    assert numbers == list(range(1, 2 * PER_INSTANCE + 1))
    assert {r.action for r in results} == {"new_ticket"}


async def test_same_message_to_two_instances_is_stored_once(store, config, clock):
    other = await second_instance(store)
    raw = mail(message_id="<once@client.example>")
    try:
        results = await asyncio.gather(Pipeline(config, store, clock).ingest_email(raw),
                                       Pipeline(config, other, clock).ingest_email(raw))
    finally:
        await other.close()
    assert sorted(r.action for r in results) == ["duplicate", "new_ticket"]
    assert await count(store, Ticket) == 1
    assert await count(store, InboundMessage) == 1


async def test_concurrent_replies_to_one_ticket_are_all_kept(store, config, clock):
    pipeline = Pipeline(config, store, clock)
    number = (await pipeline.ingest_email(mail())).ticket
    other = await second_instance(store)
    try:
        replies = [Pipeline(config, s, clock).ingest_email(
            mail(subject=f"Re: [#{number}]", body=f"дополнение {n}"))
            for n in range(6) for s in (store, other)]
        results = await asyncio.gather(*replies)
    finally:
        await other.close()
    assert [r.action for r in results] == ["comment"] * 12
    assert await count(store, Comment) == 13


async def test_batches_of_two_instances_number_tickets_without_gaps_or_repeats(store, config,
                                                                               clock):
    # A batch counts its numbers after the first and writes the last one back: batches
    # of two instances, and a single message after them, still number 1, 2, 3, …
    other = await second_instance(store)
    try:
        first, second = Pipeline(config, store, clock), Pipeline(config, other, clock)
        jobs = [p.ingest_many([p.parse(mail(sender=f"user{i}-{b}-{n}@firm{i}.example"))
                               for n in range(5)])
                for b in range(3) for i, p in enumerate((first, second))]
        results = [r for batch in await asyncio.gather(*jobs) for r in batch]
        results.append(await second.ingest_email(mail(sender="late@firm9.example")))
    finally:
        await other.close()
    numbers = sorted(r.ticket for r in results)
    assert numbers == list(range(1, 2 * 3 * 5 + 2))
    assert {r.action for r in results} == {"new_ticket"}
