"""Bulk ingestion (gateway/bulk.py): parsing in worker processes overlapping the store.

Results must come back in the order the mails went in, decided exactly as one-by-one
ingestion decides them, and a worker that dies must not cost a mail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys

import pytest

from helpgate.channels.mail.parse import parse_safely
from helpgate.gateway import bulk
from helpgate.gateway.bulk import ParserPool, ingest_stream
from helpgate.gateway.pipeline import Pipeline
from helpgate.threading.quotes import read_alone
from helpgate.threading.rules.quote_strip import our_separators
from helpgate.ticketstore.queries import ticket_detail
from helpgate.ticketstore.repository import ticket_by_number
from tests.mailfactory import mail
from tests.waiting import eventually


@pytest.fixture
async def pool():
    async with ParserPool(workers=2) as started:
        yield started


def mails(count: int) -> list[bytes]:
    return [mail(sender=f"user{i}@romashka.ru", subject=f"Вопрос {i}",
                 body=f"Текст обращения {i}.", message_id=f"<bulk{i}@client.example>")
            for i in range(count)]


async def collect(pipeline, raws, pool, batch):
    pairs = []
    async for messages, results in ingest_stream(pipeline, raws, pool, batch=batch):
        pairs += zip(messages, results, strict=True)
    return pairs


async def test_results_come_back_in_order_and_as_one_by_one(store, config, clock, pool):
    pipeline = Pipeline(config, store, clock)
    raws = mails(7)
    pairs = await collect(pipeline, raws + [raws[2]], pool, batch=3)
    assert [m.message_id for m, _ in pairs] == [f"<bulk{i}@client.example>"
                                                for i in [*range(7), 2]]
    assert [r.action for _, r in pairs] == ["new_ticket"] * 7 + ["duplicate"]
    assert [r.ticket for _, r in pairs] == [1, 2, 3, 4, 5, 6, 7, 3]
    detail = await store.run(lambda s: ticket_detail(s, config, ticket_by_number(s, 5),
                                                     clock()))
    assert detail["subject"] == "Вопрос 4"
    assert detail["comments"][0]["text"] == "Текст обращения 4."


async def test_an_async_source_and_a_reply_within_the_stream(store, config, clock, pool):
    pipeline = Pipeline(config, store, clock)

    async def source():
        yield mail(subject="Принтер", message_id="<first@client.example>")
        yield mail(subject="Re: [#1] Принтер", body="Заработал, спасибо.")
    pairs = await collect(pipeline, source(), pool, batch=1)
    assert [(r.action, r.ticket) for _, r in pairs] == [("new_ticket", 1), ("comment", 1)]


async def test_a_worker_reads_the_quotes_of_what_looks_like_a_new_request(
        store, config, clock, pool):
    """The quote reading a new request needs no ticket for is done in the worker, with
    the config's separators, exactly as the quote stripper would do it; a reply (our
    marker, a mail it answers) is left for the store's thread, which knows its ticket."""
    pipeline = Pipeline(config, store, clock)
    separators = our_separators(config)
    raws = [mail(body=f"Не печатает.\n\n> {config.text().separator}\n> старое"),
            mail(subject="Re: [#1] Принтер", body="Спасибо."),
            mail(body="Спасибо.", in_reply_to="<earlier@client.example>"),
            b"\r\n"]
    parsed = await pool.parse(raws, clock(), pipeline.worker_parse(parse_safely))
    first = parse_safely(raws[0], clock())
    assert parsed[0].quote_reading == read_alone(first, separators)
    assert parsed[0].quote_reading.text == "Не печатает."
    assert [m.quote_reading for m in parsed[1:]] == [None, None, None]
    assert dataclasses.replace(parsed[0], quote_reading=None) == first


async def test_a_dead_worker_costs_no_mail(store, config, clock, pool):
    pipeline = Pipeline(config, store, clock)
    for process in list(pool._executor._processes.values()):
        process.kill()
        process.join()
    pairs = await collect(pipeline, mails(4), pool, batch=2)
    assert [r.action for _, r in pairs] == ["new_ticket"] * 4
    assert pool._executor is None  # the rest of the stream is parsed in this process


# A gateway with its parser pool, which writes its workers' pids and waits to be killed.
GATEWAY = """
import asyncio, multiprocessing, pathlib, sys
from helpgate.gateway.bulk import ParserPool

async def main():
    async with ParserPool(workers=2):
        pathlib.Path(sys.argv[1]).write_text(" ".join(
            str(p.pid) for p in multiprocessing.active_children()
            if p.name.startswith("SpawnProcess")))
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_workers_leave_with_a_gateway_killed_by_sigkill(tmp_path):
    pids = tmp_path / "pids"
    gateway = await asyncio.create_subprocess_exec(sys.executable, "-c", GATEWAY, str(pids))
    workers: list[int] = []
    try:
        await eventually(lambda: pids.exists() and pids.read_text(), within=60,
                         what="the gateway's parser workers to start")
        workers = [int(pid) for pid in pids.read_text().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
        gateway.kill()  # SIGKILL: nothing of the gateway's runs after it
        await gateway.wait()
        # Orphaned, each worker sees its parent gone and leaves.
        await eventually(lambda: not any(_alive(pid) for pid in workers), within=30,
                         what="the parser workers of a killed gateway to exit")
    finally:
        if gateway.returncode is None:
            gateway.kill()
            await gateway.wait()
        for pid in filter(_alive, workers):  # a failed run leaves nothing behind
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_batches_are_bounded_by_count_and_by_bytes(monkeypatch, asynchronous):
    """A batch is one commit, so batches are large; bytes bound one too, so that a run of
    scans is not held in memory at once. A mail over the budget goes alone."""
    monkeypatch.setattr(bulk, "BATCH_BYTES", 100)
    raws = [b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 60, b"e" * 60, b"f" * 500, b"g" * 10]

    async def streamed():
        for raw in raws:
            yield raw
    chunks = [chunk async for chunk in bulk._chunks(streamed() if asynchronous else raws, 3)]
    assert [[raw[:1] for raw in chunk] for chunk in chunks] == [
        [b"a", b"b", b"c"], [b"d"], [b"e"], [b"f"], [b"g"]]
    assert [raw for chunk in chunks for raw in chunk] == raws
