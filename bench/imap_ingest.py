"""End to end over IMAP: a private Dovecot, `helpgate run` as a real process, real mail.

Three figures, each from what a user would see:

1. throughput: N mails (default 2,000: new requests and replies with quoted history,
   utf-8 and windows-1251, HTML alternatives, some attachments; bench/pipeline.py's
   generator) are appended to the mailbox, then `helpgate run` starts and reads them; the
   clock runs until every mail is a ticket or a comment (checked in its database);
2. IDLE pickup latency: with the gateway idle, single mails are appended one at a time;
   for each, the time until its ticket exists, next to the time an independent IMAP IDLE
   client of ours got Dovecot's EXISTS push for the same APPEND. Dovecot batches its IDLE
   notifications (about 0.5 s), so the push is the floor; what helpgate adds is the rest;
3. memory (--rss-mails 20000): the gateway is stopped, that many mails are appended, and
   a fresh gateway works through the backlog while its RSS is sampled from /proc.

    .venv/bin/python bench/imap_ingest.py [--mails 2000] [--singles 10] [--rss-mails 0]
                                          [--profile PATH]   (pyinstrument, where time goes)

Dovecot runs from a temp folder on free loopback ports (tests/dovecot.py), helpgate on an
SQLite database in a temp folder. Exits non-zero if a mail did not end as generated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import imaplib
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aioimaplib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import COMPANIES, CONTACTS_PER_COMPANY, Generator  # noqa: E402

from tests.dovecot import PASSWORD, USER, Dovecot  # noqa: E402
from tests.mailservers import make_certificate  # noqa: E402

HELPGATE = str(Path(sys.executable).parent / "helpgate")
POLL = 0.002          # how often the database is asked whether a single mail is in
APPEND_BATCH = 500    # mails appended per connection before it is renewed
SLICE = 2000          # RSS is printed every this many mails
PROFILE = ""          # --profile: a pyinstrument report of each gateway run there


class MixedGenerator(Generator):
    """bench/pipeline.py's mails, with a share of text parts in windows-1251 (8bit), as
    The Bat! and Outlook still send Russian mail."""

    def _text_part(self, subtype: str, text: str) -> str:
        if self.random.random() < 0.25:
            # Marked here, encoded in _build: the template is text, the mail is bytes.
            return (f"Content-Type: text/{subtype}; charset=windows-1251\n"
                    f"Content-Transfer-Encoding: 8bit\n\n\x01{text}\x02\n")
        return super()._text_part(subtype, text)

    def _build(self, address: str, name: str, subject: str, body: str) -> bytes:
        return _CP1251.sub(lambda m: m.group(1).decode().encode("cp1251", "replace"),
                           super()._build(address, name, subject, body))


_CP1251 = re.compile(rb"\x01(.*?)\x02", re.S)


# ------------------------------------------------------------------------ helpgate
def write_config(folder: Path, dovecot: Dovecot) -> dict[str, str]:
    """A config reading the Dovecot mailbox; the environment `helpgate` runs with."""
    config = folder / "helpgate.toml"
    config.write_text(f"""
[database]
url = "sqlite:///{folder / 'helpgate.db'}"

[mail.endpoint]
enabled = false

[threading]
throttle_max = 0

[[mail.imap]]
host = "127.0.0.1"
port = {dovecot.port}
security = "none"
username = "{USER}"
password = "{PASSWORD}"
after = "flag"
idle = true
""", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPGATE_")}
    env["HELPGATE_CONFIG"] = str(config)
    return env


def seed_directory(folder: Path, env: dict[str, str]) -> None:
    entries = {
        "companies": [{"name": f"Company {c}", "domains": [f"company{c}.example"]}
                      for c in range(COMPANIES)],
        "contacts": [{"name": f"User {p} of {c}", "email": f"user{p}@company{c}.example",
                      "company": f"Company {c}"}
                     for c in range(COMPANIES) for p in range(CONTACTS_PER_COMPANY)],
        "employees": [{"name": "Anna", "email": "anna@helpgate.test", "role": "admin"}]}
    path = folder / "directory.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    subprocess.run([HELPGATE, "directory", "import", str(path)], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def start_gateway(folder: Path, env: dict[str, str], name: str,
                  *options: str) -> subprocess.Popen:
    """`helpgate run [options]` in `folder`, its output in `<name>.log` (bench/messenger.py
    starts its gateway here too)."""
    command = [HELPGATE, "run", *options]
    if PROFILE:  # where the gateway's time goes (pip install pyinstrument)
        command = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o",
                   f"{PROFILE}.{name}.txt", HELPGATE, "run", *options]
    # Its log to a file: a pipe nobody reads would stall it once full.
    with open(folder / f"{name}.log", "wb") as log:
        return subprocess.Popen(command, env=env, cwd=folder, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop_gateway(gateway: subprocess.Popen) -> int:
    gateway.send_signal(signal.SIGTERM)
    try:
        return gateway.wait(60)
    except subprocess.TimeoutExpired:
        gateway.kill()
        return gateway.wait()


class Database:
    """The gateway's SQLite database, read-only, as a second process may read it."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)

    def decided(self) -> int:
        return self.connection.execute(
            "SELECT count(*) FROM inbound_messages WHERE state != 'received'").fetchone()[0]

    def actions(self) -> dict[str, int]:
        rows = self.connection.execute(
            "SELECT json_extract(result, '$.action'), count(*) FROM inbound_messages "
            "GROUP BY 1").fetchall()
        return {action: count for action, count in rows}

    def close(self) -> None:
        self.connection.close()


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, in MB."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


# ------------------------------------------------------------------------- mailbox
def append_all(dovecot: Dovecot, mails) -> int:
    """Every mail appended, a connection per APPEND_BATCH; returns how many."""
    count = 0
    client = None
    try:
        for raw in mails:
            if count % APPEND_BATCH == 0:
                if client is not None:
                    client.logout()
                client = dovecot.client()
            status, _ = client.append("INBOX", "", imaplib.Time2Internaldate(time.time()),
                                      raw.replace(b"\n", b"\r\n"))
            if status != "OK":
                raise RuntimeError(f"APPEND failed: {status}")
            count += 1
    finally:
        if client is not None:
            client.logout()
    return count


# -------------------------------------------------------------------------- phases
def throughput(dovecot: Dovecot, folder: Path, env: dict[str, str], generator: Generator,
               mails: int) -> subprocess.Popen:
    """Phase 1: the mailbox full first, then the gateway started and timed to the end."""
    started = time.perf_counter()
    append_all(dovecot, generator.mails(mails))
    print(f"{mails} mails appended to Dovecot in {time.perf_counter() - started:.1f} s "
          "(not timed)")
    started = time.perf_counter()
    gateway = start_gateway(folder, env, "gateway")
    database = wait_for_database(folder / "helpgate.db", gateway)
    first = None
    peak = 0.0
    while (done := database.decided()) < mails:
        if gateway.poll() is not None:
            raise RuntimeError(f"helpgate exited with {gateway.returncode}; see its log")
        if done and first is None:
            first = time.perf_counter()
        peak = max(peak, rss_mb(gateway.pid)[0])
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    after_first = time.perf_counter() - (first or started)
    print(f"{mails} mails in {elapsed:.2f} s end to end: {mails / elapsed:.0f} mails/s "
          f"(process start included; {mails / after_first:.0f} mails/s from the first "
          f"decision); helpgate RSS peak {rss_mb(gateway.pid)[1]:.0f} MB")
    database.close()
    return gateway


def wait_for_database(path: Path, gateway: subprocess.Popen) -> Database:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise RuntimeError(f"helpgate exited with {gateway.returncode}; see its log")
        with contextlib.suppress(sqlite3.Error):
            database = Database(path)
            database.decided()
            return database
        time.sleep(0.01)
    raise RuntimeError("helpgate made no database within 60 s")


async def latency(dovecot: Dovecot, folder: Path, generator: Generator,
                  singles: int) -> list[tuple[float, float]]:
    """Phase 2: (Dovecot's IDLE push, helpgate's pickup) in seconds after each APPEND."""
    watcher = await _imap(dovecot)
    appender = await _imap(dovecot)
    database = Database(folder / "helpgate.db")
    await asyncio.sleep(1.0)  # the gateway back in IDLE after its batch
    found = []
    try:
        for raw in generator.mails(singles):
            await watcher.select("INBOX")
            before = database.decided()
            idling = await watcher.idle_start(timeout=60)
            await asyncio.sleep(0.2)  # both clients idle when the mail lands
            found.append(await _one_single(watcher, appender, database, raw, before))
            watcher.idle_done()
            await asyncio.wait_for(idling, 10)
            await asyncio.sleep(0.5)
    finally:
        database.close()
        for client in (watcher, appender):
            await client.logout()
    return found


async def _one_single(watcher, appender, database: Database, raw: bytes,
                      before: int) -> tuple[float, float]:
    started = time.perf_counter()
    push = asyncio.ensure_future(_push(watcher, started))
    await appender.append(raw.replace(b"\n", b"\r\n"), mailbox="INBOX")
    # Another process's database: nothing to wait on but asking again.
    while database.decided() <= before:  # noqa: ASYNC110
        await asyncio.sleep(POLL)
    pickup = time.perf_counter() - started
    return await asyncio.wait_for(push, 10), pickup


async def _push(watcher, started: float) -> float:
    while True:
        lines = await watcher.wait_server_push(timeout=10)
        if any(b"EXISTS" in bytes(line) for line in lines if isinstance(line, bytes)):
            return time.perf_counter() - started


async def _imap(dovecot: Dovecot) -> aioimaplib.IMAP4:
    client = aioimaplib.IMAP4("127.0.0.1", dovecot.port, timeout=30)
    await client.wait_hello_from_server()
    await client.login(USER, PASSWORD)
    await client.select("INBOX")
    return client


def memory(dovecot: Dovecot, folder: Path, env: dict[str, str], generator: Generator,
           mails: int, already: int) -> None:
    """Phase 3: a backlog of `mails` for a fresh gateway, its RSS every SLICE mails."""
    started = time.perf_counter()
    append_all(dovecot, generator.mails(mails))
    print(f"\n{mails} more mails appended in {time.perf_counter() - started:.1f} s "
          "(not timed); a fresh gateway works through them:")
    started = time.perf_counter()
    gateway = start_gateway(folder, env, "gateway-rss")
    database = wait_for_database(folder / "helpgate.db", gateway)
    print(f"{'mails':>7} {'mails/s':>9} {'RSS MB':>8}")
    mark = SLICE
    try:
        while (done := database.decided() - already) < mails:
            if gateway.poll() is not None:
                raise RuntimeError(f"helpgate exited with {gateway.returncode}; see its log")
            if done >= mark:
                print(f"{done:>7} {done / (time.perf_counter() - started):>9.0f} "
                      f"{rss_mb(gateway.pid)[0]:>8.1f}", flush=True)
                mark += SLICE
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        print(f"{mails} mails in {elapsed:.1f} s: {mails / elapsed:.0f} mails/s; RSS now "
              f"{rss_mb(gateway.pid)[0]:.0f} MB, peak {rss_mb(gateway.pid)[1]:.0f} MB")
    finally:
        database.close()
        stop_gateway(gateway)


# ---------------------------------------------------------------------------- main
def run(args: argparse.Namespace, folder: Path) -> int:
    # A production-like keepalive: the gateway learns of new mail from the push alone.
    dovecot = Dovecot(make_certificate(folder), idle_notify_interval=120)
    dovecot.start()
    gateway = None
    try:
        env = write_config(folder, dovecot)
        seed_directory(folder, env)
        generator = MixedGenerator(seed=7)
        gateway = throughput(dovecot, folder, env, generator, args.mails)
        pairs = asyncio.run(latency(dovecot, folder, generator, args.singles))
        report_latency(pairs)
        code = stop_gateway(gateway)
        gateway = None
        if code != 0:
            print(f"helpgate exited with {code}")
            return 1
        total = args.mails + args.singles
        if args.rss_mails:
            memory(dovecot, folder, env, generator, args.rss_mails, total)
            total += args.rss_mails
        return check(folder, generator, total)
    finally:
        if gateway is not None:
            stop_gateway(gateway)
        dovecot.cleanup()


def report_latency(pairs: list[tuple[float, float]]) -> None:
    pushes = [push * 1000 for push, _ in pairs]
    pickups = [pickup * 1000 for _, pickup in pairs]
    added = [pickup - push for push, pickup in zip(pushes, pickups, strict=True)]
    print(f"\nIDLE, {len(pairs)} single mails, ms after APPEND   median    max")
    print(f"  Dovecot's EXISTS push to an IDLE client   {statistics.median(pushes):>6.0f} "
          f"{max(pushes):>6.0f}")
    print(f"  helpgate: its ticket exists               {statistics.median(pickups):>6.0f} "
          f"{max(pickups):>6.0f}")
    print(f"  helpgate's own share (pickup - push)      {statistics.median(added):>6.0f} "
          f"{max(added):>6.0f}")


def check(folder: Path, generator: Generator, total: int) -> int:
    database = Database(folder / "helpgate.db")
    try:
        actions = database.actions()
    finally:
        database.close()
    expected = {str(k): v for k, v in generator.expected.items()}
    print("actions:", actions, " expected:", expected)
    return 0 if actions == expected and sum(actions.values()) == total else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--singles", type=int, default=10,
                        help="single mails whose IDLE pickup is timed")
    parser.add_argument("--rss-mails", type=int, default=0,
                        help="then a backlog of this many for a fresh gateway, RSS sampled "
                             "(the issue's figure: 20000)")
    parser.add_argument("--profile", metavar="PATH",
                        help="run the gateway under pyinstrument; reports to PATH.*.txt")
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile or ""
    with tempfile.TemporaryDirectory(prefix="helpgate-imap-bench-") as folder:
        return run(args, Path(folder))


if __name__ == "__main__":
    sys.exit(main())
