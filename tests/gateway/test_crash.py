"""kill -9 under load (R-TS-5, R-CH-1, R-CH-2, R-OUT-6): 1,000 mails stream in through our
SMTP endpoint and a Dovecot mailbox while the gateway is killed and restarted. Every mail
must be stored exactly once and no notification may reach the relay twice.

The SMTP senders behave like mail servers: a mail not answered 250 is sent again later,
so a mail stored just before the kill comes again and must be recognised as a duplicate.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import smtplib
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpgate.config.schema import OutboxConfig
from tests.mailfactory import mail
from tests.mailservers import Relay, free_port
from tests.waiting import eventually

# The default: what a gateway killed mid-send may leave uncertain, at most.
IN_FLIGHT = OutboxConfig().in_flight
HELPGATE = str(Path(sys.executable).parent / "helpgate")
PER_CHANNEL = 500
SENDERS = 4


def smtp_mail(n: int) -> bytes:
    return mail(sender=f"smtp{n}@customer{n % 50}.example", subject=f"SMTP {n}",
                message_id=f"<smtp{n}@crash.test>", body=f"Письмо номер {n} по SMTP.")


def imap_mail(n: int) -> bytes:
    return mail(sender=f"imap{n}@customer{n % 50}.example", subject=f"IMAP {n}",
                message_id=f"<imap{n}@crash.test>", body=f"Письмо номер {n} через IMAP.")


def send_until_accepted(port: int, numbers: range, stop_after: float) -> int:
    """A mail server's persistence: each mail again until it is answered 250."""
    retries = 0
    for n in numbers:
        raw = smtp_mail(n).replace(b"\n", b"\r\n")
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                    client.sendmail(f"smtp{n}@x.example", ["support@helpgate.localhost"], raw)
                break
            except (OSError, smtplib.SMTPException):
                retries += 1
                if time.monotonic() > stop_after:
                    raise
                time.sleep(0.1)
    return retries


def inbound_count(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as connection:
        return connection.execute("SELECT count(*) FROM inbound_messages").fetchone()[0]


async def start_gateway(config: Path, log: Path):
    with open(log, "ab") as output:  # noqa: ASYNC230 - a local log file, opened once
        process = await asyncio.create_subprocess_exec(
            HELPGATE, "--config", str(config), "run", stdout=output, stderr=output,
            env={k: v for k, v in os.environ.items() if not k.startswith("HELPGATE_")})
    return process


async def test_kill_9_under_load_stores_each_mail_once_and_sends_nothing_twice(
        tmp_path, dovecot):
    relay = await Relay().start()
    db = tmp_path / "helpgate.db"
    port = free_port()
    imap = dovecot.imap_config(idle=True)
    config = tmp_path / "helpgate.toml"
    config.write_text(f"""
[database]
url = "sqlite:///{db}"
[mail]
[mail.endpoint]
port = {port}
[mail.smtp]
host = "127.0.0.1"
port = {relay.port}
security = "none"
[[mail.imap]]
host = "{imap['host']}"
port = {imap['port']}
security = "none"
username = "{imap['username']}"
password = "{imap['password']}"
timeout = 5.0
[threading]
throttle_max = 0
[notifications]
employees = "none"
[outbox]
poll_interval = 0.2
""", encoding="utf-8")
    log = tmp_path / "gateway.log"
    gateway = await start_gateway(config, log)
    try:
        await eventually(in_thread(_listening, port), 20, "the endpoint")
        deadline = time.monotonic() + 120
        pool = ThreadPoolExecutor(SENDERS + 1)
        loop = asyncio.get_running_loop()
        share = PER_CHANNEL // SENDERS
        senders = [loop.run_in_executor(pool, send_until_accepted, port,
                                        range(i * share, (i + 1) * share), deadline)
                   for i in range(SENDERS)]
        appending = loop.run_in_executor(pool, dovecot.deliver,
                                         *(imap_mail(n) for n in range(PER_CHANNEL)))
        # Kill it mid-stream, with mail arriving on both channels and acks being sent.
        await eventually(in_thread(_stored_at_least, db, 300), 60, "300 stored mails")
        gateway.send_signal(signal.SIGKILL)
        await gateway.wait()
        killed_at = inbound_count(db)
        await asyncio.sleep(0.5)
        gateway = await start_gateway(config, log)
        retries = sum(await asyncio.gather(*senders))
        await appending
        await eventually(in_thread(_stored_at_least, db, 2 * PER_CHANNEL), 90, "every mail")
        await eventually(in_thread(_outbox_settled, db), 60, "the outbox to drain")
    finally:
        if gateway.returncode is None:
            gateway.send_signal(signal.SIGTERM)
            await asyncio.wait_for(gateway.wait(), 30)
        await relay.stop()
    assert gateway.returncode == 0, log.read_text()[-3000:]
    assert killed_at < 2 * PER_CHANNEL, "the kill came too late to test anything"

    with sqlite3.connect(db) as connection:
        keys = [row[0] for row in connection.execute(
            "SELECT dedupe_key FROM inbound_messages")]
        states = collections.Counter(row[0] for row in connection.execute(
            "SELECT state FROM inbound_messages"))
        tickets = connection.execute("SELECT count(*) FROM tickets").fetchone()[0]
        outbox = collections.Counter(row[0] for row in connection.execute(
            "SELECT state FROM outbox"))
    expected = {f"<smtp{n}@crash.test>" for n in range(PER_CHANNEL)} | \
        {f"<imap{n}@crash.test>" for n in range(PER_CHANNEL)}
    assert len(keys) == len(set(keys)) == 2 * PER_CHANNEL
    # A key is the Message-ID behind a digest of the content (R-TH-9).
    assert {key.rsplit(":", 1)[1] for key in keys} == expected
    assert states == {"processed": 2 * PER_CHANNEL}
    assert tickets == 2 * PER_CHANNEL
    # Each ticket's acknowledgement: sent once, or parked as uncertain when the kill fell
    # between handing it to the relay and recording that — never sent a second time.
    assert sum(outbox.values()) == 2 * PER_CHANNEL
    assert set(outbox) <= {"sent", "uncertain"}
    ids = collections.Counter(r.message["Message-ID"] for r in relay.received)
    assert max(ids.values()) == 1, "a notification reached the relay twice"
    assert len(ids) >= outbox["sent"]
    print(f"\nkilled with {killed_at} stored; SMTP retries {retries}; outbox {dict(outbox)}")


def in_thread(check, *args):
    """A blocking check (sqlite3, a socket) for `eventually`, run off the event loop."""
    return lambda: asyncio.to_thread(check, *args)


def _stored_at_least(db: Path, count: int) -> bool:
    return db.exists() and inbound_count(db) >= count


def _listening(port: int) -> bool:
    import socket
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _outbox_settled(db: Path) -> bool:
    with sqlite3.connect(db, timeout=30) as connection:
        # "claimed": held by a gateway, perhaps the killed one until its heartbeat is stale.
        pending = connection.execute("SELECT count(*) FROM outbox WHERE state IN "
                                     "('queued', 'claimed', 'sending')").fetchone()[0]
        total = connection.execute("SELECT count(*) FROM outbox").fetchone()[0]
    return total >= 2 * PER_CHANNEL and pending == 0


ACKS = 120


async def test_after_kill_9_every_ack_not_certainly_sent_leaves_within_30_s_once(tmp_path):
    """#15.12 (R-OUT-6): the gateway is killed while a slow relay takes its
    acknowledgements. With the default 10-minute lease, the restarted gateway must still
    send, within 30 s, every acknowledgement the dead one had claimed or queued; only the
    ones it had handed to the relay (at most IN_FLIGHT) stay uncertain; none goes twice."""
    relay = await Relay().start()
    relay.handler.delay = 0.05
    db = tmp_path / "helpgate.db"
    port = free_port()
    config = tmp_path / "helpgate.toml"
    config.write_text(f"""
[database]
url = "sqlite:///{db}"
[mail.endpoint]
port = {port}
[mail.smtp]
host = "127.0.0.1"
port = {relay.port}
security = "none"
[threading]
throttle_max = 0
[notifications]
employees = "none"
""", encoding="utf-8")
    log = tmp_path / "gateway.log"
    gateway = await start_gateway(config, log)
    try:
        await eventually(in_thread(_listening, port), 20, "the endpoint")
        await asyncio.to_thread(_send_all, port, ACKS)
        await eventually(lambda: len(relay.received) >= 20, 60, "the first acknowledgements")
        gateway.send_signal(signal.SIGKILL)
        await gateway.wait()
        at_kill = len(relay.received)
        gateway = await start_gateway(config, log)
        await eventually(in_thread(_acks_settled, db), 30,
                         "every acknowledgement to leave within 30 s of the restart")
    finally:
        if gateway.returncode is None:
            gateway.send_signal(signal.SIGTERM)
            await asyncio.wait_for(gateway.wait(), 30)
        await relay.stop()
    assert gateway.returncode == 0, log.read_text()[-3000:]
    assert at_kill < ACKS, "the kill came too late to test anything"
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT state, message_id FROM outbox").fetchall()
    states = collections.Counter(state for state, _ in rows)
    assert set(states) <= {"sent", "uncertain"} and states["uncertain"] <= IN_FLIGHT
    ids = collections.Counter(r.message["Message-ID"] for r in relay.received)
    assert max(ids.values()) == 1, "an acknowledgement reached the relay twice"
    assert {mid for state, mid in rows if state == "sent"} <= set(ids)
    print(f"\nkilled after {at_kill} acks; outbox {dict(states)}")


def _send_all(port: int, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for n in range(count):
            raw = mail(sender=f"ack{n}@customer.example", subject=f"Ack {n}",
                       message_id=f"<ack{n}@crash.test>").replace(b"\n", b"\r\n")
            client.sendmail(f"ack{n}@customer.example", ["support@helpgate.localhost"], raw)


def _acks_settled(db: Path) -> bool:
    with sqlite3.connect(db, timeout=30) as connection:
        states = collections.Counter(row[0] for row in connection.execute(
            "SELECT state FROM outbox"))
    return sum(states.values()) == ACKS and set(states) <= {"sent", "uncertain"}


async def test_kill_9_during_a_stream_of_telegram_updates_stores_each_once(tmp_path):
    """Issue #17: the gateway polling the Bot API (the fake) is killed mid-stream and
    restarted: every update is stored exactly once (the offset is confirmed to Telegram
    only after the updates are stored; one delivered again is a duplicate), and at the
    end Telegram holds none unconfirmed."""
    from tests.fakes.telegram import FakeTelegram

    updates = 600
    db = tmp_path / "helpgate.db"
    async with FakeTelegram() as tg:
        people = [tg.user(5000 + n, f"Клиент {n}") for n in range(60)]
        for n in range(updates):
            tg.send_text(people[n % len(people)], f"Сообщение {n}")
        config = tmp_path / "helpgate.toml"
        config.write_text(f"""
[database]
url = "sqlite:///{db}"
[mail.endpoint]
enabled = false
[threading]
throttle_max = 0
[notifications]
employees = "none"
[telegram]
token = "{tg.token}"
api_base_url = "{tg.base_url}"
polling_timeout = 1
""", encoding="utf-8")
        log = tmp_path / "gateway.log"
        gateway = await start_gateway(config, log)
        try:
            await eventually(in_thread(_migrated_and_stored, db, 150), 60,
                             "150 stored updates")
            gateway.send_signal(signal.SIGKILL)
            await gateway.wait()
            killed_at = inbound_count(db)
            gateway = await start_gateway(config, log)
            await eventually(in_thread(_stored_at_least, db, updates), 90, "every update")
            await eventually(lambda: _confirmed(tg), 30, "the updates confirmed")
        finally:
            if gateway.returncode is None:
                gateway.send_signal(signal.SIGTERM)
                await asyncio.wait_for(gateway.wait(), 30)
    assert gateway.returncode == 0, log.read_text()[-3000:]
    assert killed_at < updates, "the kill came too late to test anything"
    with sqlite3.connect(db) as connection:
        keys = [row[0] for row in connection.execute(
            "SELECT dedupe_key FROM inbound_messages WHERE channel = 'telegram'")]
        states = collections.Counter(row[0] for row in connection.execute(
            "SELECT state FROM inbound_messages"))
        comments = connection.execute("SELECT count(*) FROM comments WHERE "
                                       "author_kind = 'contact'").fetchone()[0]
    assert len(keys) == len(set(keys)) == updates
    assert states == {"processed": updates}
    assert comments == updates
    print(f"\nkilled with {killed_at} of {updates} updates stored")


async def _confirmed(tg) -> bool:
    return not tg.pending


def _migrated_and_stored(db: Path, count: int) -> bool:
    # Nothing listens here to say the gateway is up: the database's table tells.
    try:
        return _stored_at_least(db, count)
    except sqlite3.OperationalError:  # the schema is still being made
        return False
