"""The outbox draining to the fake services: delivered/s, no duplicate, no loss.

N outbox rows (default 10,000: staff answers, each with a text of its own to a recipient
of its own) are queued in a fresh database; then the real OutboxWorker with the channel's
real transport sends them to a fake of the service that fails a share of the sends at
random (default 10 %: transient, nothing sent), so those rows are retried with the
outbox's backoff (`retry_after` set short here, so the figure is the worker's and not the
backoff's). The clock runs from the worker's start until no row is left to send.

The channels (--channel):
- sms (the default): the fake SMS gateways of tests/fakes/sms.py (--provider), a 503;
- telegram: the fake Bot API (tests/fakes/telegram.py), sendMessage answering 502;
- vk: the fake VK API (tests/fakes/vk.py), messages.send answering error 10. vk-api waits
  1/20 s before each call of a community token, because VK allows a community 20 calls
  a second; that wait is off here, as in the tests, so the figure is the outbox's;
- email: an aiosmtpd relay (tests/mailservers.py), RCPT answering 451.

The fake runs in a process of its own (the second core), as the service would be
elsewhere; at the end it hands back every message it took. The proof:
- zero duplicates: no text was taken twice;
- zero losses: every queued text was taken, and every row is "sent".

    .venv/bin/python bench/outbox.py [--messages 10000] [--failures 0.1]
        [--channel sms|telegram|vk|email|all] [--provider smsc|smsru|smsaero|all]
        [--database URL] [--in-flight N]

--in-flight sets `outbox.in_flight` (default: the configuration's default). With
--database postgresql://… the rows go into a schema of their own in that database,
dropped at the end.

Exits non-zero if a message was sent twice, not at all, or left in any other state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import re
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
from tests.fakes.telegram import FakeTelegram  # noqa: E402
from tests.fakes.vk import FakeVK  # noqa: E402
from tests.mailservers import Relay  # noqa: E402

BATCH = 1000
CHANNELS = ("sms", "telegram", "vk", "email")
# Recipients: a Telegram chat or VK peer id each, from here on.
FIRST_ID = 700_000
GROUP = 4242
WORDS = re.compile(r"Ответ по заявке: \d+")


def serve_fake(channel: str, provider: str, failures: float, messages: int, pipe) -> None:
    """In the child process: the fake service until told to stop, then the texts it took
    and how many sends it failed on purpose."""
    async def main() -> None:
        async with _fake(channel, provider, messages) as (fake, settings):
            if channel == "email":
                fake.handler.transient_rate = failures
            else:
                fake.transient_rate = failures
            pipe.send(settings)
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
            pipe.send(_taken(channel, fake))
    asyncio.run(main())


@contextlib.asynccontextmanager
async def _fake(channel: str, provider: str, messages: int):
    """(the fake, the config sections pointing at it)."""
    if channel == "sms":
        async with FAKES[provider](balance=10_000_000) as fake:
            yield fake, {"sms": settings_for(fake, timeout=10)}
    elif channel == "telegram":
        async with FakeTelegram() as fake:
            for n in range(messages):
                fake.user(FIRST_ID + n, f"Клиент {n}")
            yield fake, {"telegram": {"token": fake.token, "api_base_url": fake.base_url}}
    elif channel == "vk":
        async with FakeVK(group_id=GROUP, token="vk-bench-token") as fake:
            for n in range(messages):
                fake.user(FIRST_ID + n)
            yield fake, {"vk": {"token": fake.token, "group_id": GROUP,
                                "api_base_url": fake.base_url}}
    else:
        relay = await Relay().start()
        try:
            yield relay, {"mail": {"smtp": relay.smtp_config(timeout=10.0)}}
        finally:
            await relay.stop()


def _taken(channel: str, fake) -> tuple[list[str], int]:
    """The texts the fake took, and the sends it failed on purpose."""
    if channel == "sms":
        return [sms.text for sms in fake.sent], fake.requests.get("send", 0) - len(fake.sent)
    if channel == "telegram":
        return ([sent["text"] for sent in fake.sent],
                fake.requests.get("sendMessage", 0) - len(fake.sent))
    if channel == "vk":
        return ([sent.message for sent in fake.sent],
                fake.requests.get("messages.send", 0) - len(fake.sent))
    received = fake.received
    return [item.text() for item in received], fake.handler.busy


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def queue(session, channel: str, start: int, count: int, now: datetime) -> None:
    insert_rows(session, OutboxMessage, [{
        "dedupe_key": f"bench:{n}", "channel": channel, "kind": "comment",
        "recipient": _recipient(channel, n),
        "subject": f"Заявка {n}" if channel == "email" else None,
        "text": f"Ответ по заявке: {n}\n", "content": f"Ответ по заявке: {n}",
        "message_id": f"<bench.{n}@helpgate.test>" if channel == "email" else None,
        "state": "queued", "attempts": 0, "next_attempt_at": now, "created_at": now}
        for n in range(start, start + count)])


def _recipient(channel: str, n: int) -> str:
    if channel == "sms":
        return f"+7916{n:07d}"
    if channel == "email":
        return f"client{n}@customer.example"
    return str(FIRST_ID + n)


def states(session) -> dict[str, int]:
    return dict(session.execute(select(OutboxMessage.state, func.count())
                                .group_by(OutboxMessage.state)).all())


async def run(channel: str, provider: str, messages: int, failures: float, url: str,
              in_flight: int | None = None) -> bool:
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve_fake, daemon=True, args=(
        channel, provider, failures, messages, child))
    server.start()
    sections = parent.recv()
    config = Config(**sections, database={"url": url},
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
        await store.run(queue, channel, start, min(BATCH, messages - start), now)
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
    taken, failed = parent.recv()
    server.join(timeout=10)

    texts = Counter(match for text in taken for match in WORDS.findall(text or ""))
    duplicates = sum(count - 1 for count in texts.values() if count > 1)
    expected = {f"Ответ по заявке: {n}" for n in range(messages)}
    lost = len(expected - set(texts))
    wrong = {state: n for state, n in counts.items() if state != "sent"}
    name = provider if channel == "sms" else channel
    print(f"{name:>8}: {messages} messages, {failures:.0%} transient failures, "
          f"in flight {config.outbox.in_flight} ({failed} sends failed and retried): "
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
    parser.add_argument("--channel", choices=[*CHANNELS, "all"], default="sms")
    parser.add_argument("--provider", choices=[*FAKES, "all"], default="all",
                        help="the SMS gateway (--channel sms)")
    parser.add_argument("--database", help="a database URL (default: a new SQLite file)")
    parser.add_argument("--in-flight", type=int, help="outbox.in_flight")
    args = parser.parse_args()
    # The retried sends are the point; their warnings would only slow the run down.
    logging.getLogger("helpgate").setLevel(logging.ERROR)
    print(f"{os.cpu_count()} CPUs; database: {args.database or 'SQLite (a new file)'}")
    from helpgate.channels.vk import api as vk_api_client
    # The fake needs no pause between calls (see the docstring).
    vk_api_client.BoundedVkApi.RPS_DELAY = 0
    vk_api_client.RPS_PAUSE = 0
    runs = [(channel, provider) for channel in (CHANNELS if args.channel == "all"
                                                else [args.channel])
            for provider in ((FAKES if args.provider == "all" else [args.provider])
                             if channel == "sms" else [""])]
    ok = True
    for channel, provider in runs:
        with tempfile.TemporaryDirectory() as tmp:
            url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
            ok &= asyncio.run(run(channel, provider, args.messages, args.failures, url,
                                  args.in_flight))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
