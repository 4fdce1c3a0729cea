"""Many mails at once (a mailbox import, a large fetch): parsing overlaps the store's work.

MIME parsing is pure CPU work, and deciding and writing is the database thread's work;
under one interpreter lock the two would take turns. Here worker processes parse batch
n+1 while the pipeline decides and writes batch n, so the second core is not idle.
Results come back in the order the mails went in, batch by batch.

A worker that dies (killed, out of memory) loses nothing: its batch is parsed again in
this process and the rest of the stream goes on without the pool.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from helpgate.channels.base import Batches, InboundMessage
from helpgate.channels.mail.parse import parse_safely
from helpgate.gateway.parse_worker import parse_each, watch_parent
from helpgate.gateway.pipeline import Pipeline, Result

log = logging.getLogger("helpgate.bulk")
Parse = Callable[[bytes, datetime], InboundMessage]
# A batch is one transaction and one disk sync: at most this many mails, and (but for a
# single larger mail) this many bytes, so that a run of scans is not all in memory at once.
BATCH = 200
BATCH_BYTES = 8 * 1024 * 1024


class ParserPool:
    """Worker processes that turn raw mails into InboundMessages.

    Workers are spawned, not forked: a fork of a process running the database thread and
    the event loop could inherit a lock held mid-operation.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or max(1, (os.cpu_count() or 2) - 1)
        self._executor: ProcessPoolExecutor | None = None

    async def __aenter__(self) -> ParserPool:
        self._executor = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=watch_parent, initargs=(os.getpid(),))
        # Start every worker now (importing the parser takes a moment), not mid-stream.
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(
            loop.run_in_executor(self._executor, parse_each, parse_safely, [], None)
            for _ in range(self.workers)))
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def parse(self, raws: list[bytes], now: datetime,
                    parse: Parse = parse_safely) -> list[InboundMessage]:
        """`parse` (a channel's, module-level so a worker can be handed it) over raws."""
        executor = self._executor
        if executor is None:
            return parse_each(parse, raws, now)
        loop = asyncio.get_running_loop()
        size = -(-len(raws) // self.workers) or 1
        parts = [raws[i:i + size] for i in range(0, len(raws), size)]
        try:
            parsed = await asyncio.gather(*(
                loop.run_in_executor(executor, parse_each, parse, part, now)
                for part in parts))
        except BrokenProcessPool:
            # Two batches may be in flight: the first to notice retires the pool.
            if self._executor is executor:
                log.warning("a parser worker died; parsing in this process from now on")
                executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
            return parse_each(parse, raws, now)
        return [message for part in parsed for message in part]


async def ingest_stream(pipeline: Pipeline, raws: AsyncIterable[bytes] | Iterable[bytes],
                        pool: ParserPool, batch: int = BATCH,
                        ticket_type: str | None = None,
                        ) -> AsyncIterator[tuple[list[InboundMessage], list[Result]]]:
    """Each batch's messages and results, in order; batch n+1 parses while n is stored."""
    parsing: asyncio.Task | None = None
    async for chunk in _chunks(raws, batch):
        upcoming = asyncio.ensure_future(pool.parse(chunk, pipeline.clock(),
                                                    pipeline.worker_parse(parse_safely)))
        if parsing is not None:
            messages = await parsing
            yield messages, await pipeline.ingest_many(messages, ticket_type)
        parsing = upcoming
    if parsing is not None:
        messages = await parsing
        yield messages, await pipeline.ingest_many(messages, ticket_type)


async def _chunks(raws: AsyncIterable[bytes] | Iterable[bytes],
                  size: int) -> AsyncIterator[list[bytes]]:
    """Lists of at most `size` mails and, but for one larger mail, BATCH_BYTES bytes."""
    cutter: Batches[bytes] = Batches(size, BATCH_BYTES)
    async for raw in raws if isinstance(raws, AsyncIterable) else _streamed(raws):
        if (done := cutter.add(raw, len(raw))) is not None:
            yield done
    if (last := cutter.rest()) is not None:
        yield last


async def _streamed(raws: Iterable[bytes]) -> AsyncIterator[bytes]:
    for raw in raws:
        yield raw
