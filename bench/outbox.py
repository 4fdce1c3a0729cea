"""The outbox draining SMS to the fake gateways: delivered/s, no duplicate, no loss.

N outbox rows (default 10,000: staff answers by SMS, each with a text of its own to a
phone of its own) are queued in a fresh database; then the real OutboxWorker with the
real SMS transport sends them to a fake gateway (tests/fakes/sms.py) that fails a share
of the sends at random with a 503 (default 10 %: transient, nothing sent), so those rows
are retried with the outbox's backoff (`retry_after` set short here, so the figure is
the worker's and not the backoff's). The clock runs from the worker's start until no
row is left to send.

The fake runs in a process of its own (the second core), as a provider would be
elsewhere; at the end it hands back every SMS it took. The proof:
- zero duplicates: no text was taken twice by the gateway;
- zero losses: every queued text was taken, and every row is "sent".

    .venv/bin/python bench/outbox.py [--messages 10000] [--failures 0.1]
        [--provider smsc|smsru|smsaero|all] [--database URL] [--in-flight N]

--in-flight sets `outbox.in_flight` (default: the configuration's default).

With --database postgresql://… the rows go into a schema of their own in that database,
dropped at the end.

Exits non-zero if a message was sent twice, not at all, or left in any other state.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from helpgate.config.schema import Config  # noqa: E402
from helpgate.gateway.channels import transports  # noqa: E402
from helpgate.outbound.outbox import OutboxWorker  # noqa: E402
from helpgate.ticketstore.models import OutboxMessage  # noqa: E402
from helpgate.ticketstore.repository import Store, insert_rows  # noqa: E402
from tests.fakes.sms import FAKES, settings_for  # noqa: E402

BATCH = 1000


def serve_fake(provider: str, failures: float, pipe) -> None:
    """In the child process: the fake gateway until told to stop, then what it took."""
    async def main() -> None:
        async with FAKES[provider](balance=10_000_000) as fake:
            fake.transient_rate = failures
            pipe.send(settings_for(fake, timeout=10))
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
            pipe.send(([(sms.phone, sms.text) for sms in fake.sent],
                       dict(fake.requests)))
    asyncio.run(main())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def queue(session, start: int, count: int, now: datetime) -> None:
    insert_rows(session, OutboxMessage, [{
        "dedupe_key": f"bench:{n}", "channel": "sms", "kind": "comment",
        "recipient": f"+7916{n:07d}", "subject": None, "text": f"Ответ {n}\n",
        "content": f"Ответ по заявке: {n}", "state": "queued", "attempts": 0,
        "next_attempt_at": now, "created_at": now} for n in range(start, start + count)])


def states(session) -> dict[str, int]:
    return dict(session.execute(select(OutboxMessage.state, func.count())
                                .group_by(OutboxMessage.state)).all())


async def run(provider: str, messages: int, failures: float, url: str,
              in_flight: int | None = None) -> bool:
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve_fake, args=(provider, failures, child),
                                     daemon=True)
    server.start()
    sms = parent.recv()
    config = Config(sms=sms, database={"url": url},
                    notifications={"employees": "none"},
                    outbox={"retry_after": "0.2s", "retry_max": "1s", "max_attempts": 50,
                            "poll_interval": 0.2,
                            **({"in_flight": in_flight} if in_flight else {})})
    schema = f"bench_{uuid.uuid4().hex[:10]}" if url.startswith("postgres") else None
    if schema:   # a schema of its own in the given database, dropped at the end
        await _schema(url, f'CREATE SCHEMA "{schema}"')
    store = Store(url, connect_args={"server_settings": {"search_path": schema}}
                  if schema else None)
    await store.ensure_schema()
    now = utcnow()
    for start in range(0, messages, BATCH):
        await store.run(queue, start, min(BATCH, messages - start), now)
    sending = transports(config)
    worker = OutboxWorker(store, config, sending, utcnow)
    stop = asyncio.Event()
    began = time.perf_counter()
    most = None   # when 99 % were delivered: the rate before the last retries' backoff
    task = asyncio.create_task(worker.run(stop))
    while True:
        await asyncio.sleep(0.1)
        counts = await store.run(states)
        if most is None and counts.get("sent", 0) >= messages * 0.99:
            most = time.perf_counter() - began
        if not set(counts) & {"queued", "claimed", "sending"}:
            break
    elapsed = time.perf_counter() - began
    stop.set()
    await task
    for transport in sending.values():
        await transport.close()
    await store.close()
    if schema:
        await _schema(url, f'DROP SCHEMA "{schema}" CASCADE')
    parent.send("stop")
    taken, requests = parent.recv()
    server.join(timeout=10)

    texts = Counter(text for _, text in taken)
    duplicates = sum(count - 1 for count in texts.values() if count > 1)
    expected = {f"Ответ по заявке: {n}" for n in range(messages)}
    lost = len(expected - set(texts))
    wrong = {state: n for state, n in counts.items() if state != "sent"}
    print(f"{provider:>8}: {messages} messages, {failures:.0%} transient failures, "
          f"in flight {config.outbox.in_flight} "
          f"({requests.get('send', 0) - len(taken)} sends failed and retried): "
          f"{messages / elapsed:,.0f} delivered/s ({elapsed:.1f} s; the first 99 % at "
          f"{messages * 0.99 / (most or elapsed):,.0f}/s); "
          f"duplicates {duplicates}, losses {lost}, rows not sent {sum(wrong.values())}"
          + (f" {wrong}" if wrong else ""))
    return duplicates == 0 and lost == 0 and not wrong


async def _schema(url: str, statement: str) -> None:
    import asyncpg
    dsn = url.split("?")[0].replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--failures", type=float, default=0.1)
    parser.add_argument("--provider", choices=[*FAKES, "all"], default="all")
    parser.add_argument("--database", help="a database URL (default: a new SQLite file)")
    parser.add_argument("--in-flight", type=int, help="outbox.in_flight")
    args = parser.parse_args()
    # The retried sends are the point; their warnings would only slow the run down.
    logging.getLogger("helpgate").setLevel(logging.ERROR)
    print(f"{os.cpu_count()} CPUs; database: {args.database or 'SQLite (a new file)'}")
    ok = True
    for provider in FAKES if args.provider == "all" else [args.provider]:
        with tempfile.TemporaryDirectory() as tmp:
            url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
            ok &= asyncio.run(run(provider, args.messages, args.failures, url,
                                   args.in_flight))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
