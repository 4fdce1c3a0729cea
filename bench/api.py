"""The staff HTTP API under concurrency: requests/s and latency (p50, p99) for the ticket
list and for a reply.

A fresh database gets the sample directory and N tickets (default 500, through the real
pipeline); the API (gateway/api.py, rate limit off) then runs in a process of its own
(the second core), as `helpgate run` would serve it, on a free loopback port. The client
keeps C requests in flight (default 16) with one token:

- `GET /tickets?limit=50`, a first page or a page further on (the cursor), R requests;
- `POST /tickets/N/reply` to tickets in turn, R requests: each one a comment and an
  outbox row committed, the same path as `helpgate reply`.

    .venv/bin/python bench/api.py [--tickets 500] [--requests 2000] [--concurrency 16]
        [--database URL]

With --database postgresql://… everything goes into a schema of its own in that
database, dropped at the end. Exits non-zero if any request did not succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from helpgate.config.schema import Config  # noqa: E402
from helpgate.gateway.api import Api  # noqa: E402
from helpgate.gateway.pipeline import Pipeline  # noqa: E402
from helpgate.ticketstore import api_tokens, people  # noqa: E402
from helpgate.ticketstore.repository import Store  # noqa: E402
from tests.gateway.cli_helpers import DIRECTORY  # noqa: E402
from tests.mailfactory import mail  # noqa: E402

CONFIG = Config.model_validate({"api": {"rate_limit": 0}})


def store_for(url: str, schema: str | None) -> Store:
    return Store(url, connect_args={"server_settings": {"search_path": schema}}
                 if schema else None)


def serve(url: str, schema: str | None, pipe) -> None:
    """In the child process: the API until told to stop."""
    async def main() -> None:
        store = store_for(url, schema)
        runner = web.AppRunner(Api(CONFIG, store).app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        pipe.send(site._server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        await runner.cleanup()
        await store.close()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())


async def seed(store: Store, tickets: int) -> tuple[str, list[int]]:
    now = datetime.now(timezone.utc)
    await store.ensure_schema()
    await store.run(people.import_directory, people.DirectoryFile.model_validate(DIRECTORY),
                    now)
    pipeline = Pipeline(CONFIG, store)
    numbers = []
    for n in range(tickets):
        # A sender each: the throttle would hold back one sender's 61st mail an hour.
        result = await pipeline.ingest_email(mail(sender=f"client{n}@company{n % 50}.ru",
                                                  subject=f"Вопрос {n}",
                                                  body=f"Здравствуйте! Вопрос номер {n}."))
        numbers.append(result.ticket)
    token = (await store.run(api_tokens.issue, "vera@helpgate.test", "bench", now))["token"]
    return token, numbers


async def load(base: str, token: str, requests: int, concurrency: int, make) -> dict:
    """`requests` calls of `make(session, i)` with `concurrency` in flight."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(requests))
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as session:
        async def worker() -> None:
            nonlocal failures
            for i in counter:
                began = time.perf_counter()
                async with make(session, i) as response:
                    await response.read()
                    if response.status >= 300:
                        failures += 1
                        if failures == 1:
                            print(f"first failure: {response.status} {await response.text()}")
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {"requests": requests, "failures": failures, "per_second": requests / elapsed,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=500)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database", help="database URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="helpgate-bench-api-")
    url = args.database or f"sqlite:///{os.path.join(folder, 'helpgate.db')}"
    schema = f"bench_{uuid.uuid4().hex[:10]}" if url.startswith("postgres") else None
    if schema:
        await _schema(url, f'CREATE SCHEMA "{schema}"')
    store = store_for(url, schema)
    try:
        began = time.perf_counter()
        token, numbers = await seed(store, args.tickets)
        print(f"seeded {len(numbers)} tickets in {time.perf_counter() - began:.1f} s "
              f"({url.split('@')[-1].split('?')[0]})")
        await store.close()
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.get_context("spawn").Process(
            target=serve, args=(url, schema, child))
        server.start()
        try:
            port = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
            base = f"http://127.0.0.1:{port}"
            cursor = str(numbers[len(numbers) // 2])
            results = {
                "GET /tickets": await load(
                    base, token, args.requests, args.concurrency,
                    lambda s, i: s.get("/tickets", params={"limit": "50"} if i % 2 else
                                       {"limit": "50", "cursor": cursor})),
                "POST /tickets/N/reply": await load(
                    base, token, args.requests, args.concurrency,
                    lambda s, i: s.post(f"/tickets/{numbers[i % len(numbers)]}/reply",
                                        json={"text": f"Ответ {i}"})),
            }
        finally:
            parent.send("stop")
            server.join(30)
    finally:
        if schema:
            await _schema(url, f'DROP SCHEMA "{schema}" CASCADE')
    print(f"concurrency {args.concurrency}, {args.requests} requests each")
    for name, r in results.items():
        print(f"{name:<24} {r['per_second']:8.0f} requests/s   p50 {r['p50_ms']:7.1f} ms   "
              f"p99 {r['p99_ms']:7.1f} ms   failures {r['failures']}")
    return 1 if any(r["failures"] for r in results.values()) else 0


async def _schema(url: str, statement: str) -> None:
    import asyncpg
    dsn = url.split("?")[0].replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
