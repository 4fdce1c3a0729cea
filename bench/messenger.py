"""End to end over Telegram: the fake Bot API, `helpgate run` as a real process, polling.

N Telegram updates (default 5,000: customers' text messages from ~500 users, one in ten
with a small document) are queued at the fake Bot API (tests/fakes/telegram.py) before
the gateway starts; then `helpgate run` starts with a [telegram] section pointing at the
fake and reads them by long polling, fetching each document with getFile and the file
URL. The clock runs until every update is a ticket or a comment in the gateway's SQLite
database (read from this process), and reports updates/s end to end (process start
included) and from the first decision, and the gateway's peak RSS (VmHWM, /proc).

The fake runs here, on an event loop in a thread of its own, while the gateway runs as a
subprocess; so the fake's own work (JSON of getUpdates, the acknowledgements the gateway
sends to each new ticket's customer) is part of what is measured, as Telegram's would be.

    .venv/bin/python bench/messenger.py [--updates 5000] [--users 500] [--documents 0.1]

Exits non-zero if an update did not end stored exactly once (one inbound record, one
customer comment, its document attached) or the gateway did not stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.telegram import FakeTelegram  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
# The gateway as a process, and its memory: as bench/imap_ingest.py runs it.
from imap_ingest import rss_mb, stop_gateway  # noqa: E402
from imap_ingest import start_gateway as start_process  # noqa: E402

PY_SPY = str(Path(sys.executable).parent / "py-spy")
WORDS = ("printer", "invoice", "login", "password", "delivery", "order", "refund", "app",
         "crashes", "cannot", "please", "help", "urgent", "again", "still", "broken",
         "принтер", "счёт", "не", "работает", "заказ", "доставка", "пароль", "срочно")


class FakeInThread:
    """The fake Bot API on an event loop in its own thread: the benchmark's main thread
    stays free to watch the database and the gateway process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-telegram",
                                       daemon=True)
        self.fake: FakeTelegram | None = None

    def __enter__(self) -> FakeInThread:
        self.thread.start()
        self.fake = self.call(self._up())
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self.call(self.fake.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @staticmethod
    async def _up() -> FakeTelegram:
        fake = FakeTelegram()
        await fake.__aenter__()
        return fake

    def call(self, coro):
        """Run a coroutine on the fake's loop (its state is that loop's alone)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


async def queue_updates(tg: FakeTelegram, updates: int, users: int,
                        documents: float) -> dict[int, str | None]:
    """update_id -> the document's file name (None: text only), queued in order."""
    rng = random.Random(7)
    people = [tg.user(500000 + n, f"Customer{n}", f"customer{n}",
                      language_code=rng.choice(("ru", "en")))
              for n in range(users)]
    queued: dict[int, str | None] = {}
    for n in range(updates):
        who = rng.choice(people)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 40)))
        if rng.random() < documents:
            name = f"report-{n}.txt"
            data = (f"log of update {n}\n" * rng.randint(10, 400)).encode()
            sent = tg.send_document(who, data, name, "text/plain", caption=text)
            queued[sent.update["update_id"]] = name
        else:
            sent = tg.send_text(who, f"{text} #{n}")
            queued[sent.update["update_id"]] = None
    return queued


async def _counts(tg: FakeTelegram) -> dict[str, int]:
    # Read on the fake's loop: its handlers change the counter there.
    return dict(tg.requests.most_common())


def write_config(folder: Path, tg: FakeTelegram) -> dict[str, str]:
    config = folder / "helpgate.toml"
    config.write_text(f"""
[database]
url = "sqlite:///{folder / 'helpgate.db'}"

[mail.endpoint]
enabled = false

[threading]
throttle_max = 0

[telegram]
token = "{tg.token}"
api_base_url = "{tg.base_url}"
mode = "polling"
""", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPGATE_")}
    env["HELPGATE_CONFIG"] = str(config)
    return env


class Database:
    """The gateway's SQLite database, read-only, as a second process may read it."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)

    def decided(self) -> int:
        return self.connection.execute(
            "SELECT count(*) FROM inbound_messages WHERE channel = 'telegram' "
            "AND state != 'received'").fetchone()[0]

    def close(self) -> None:
        self.connection.close()


def wait_for_database(path: Path, gateway: subprocess.Popen) -> Database:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise RuntimeError(f"helpgate exited with {gateway.returncode}; see its log")
        with contextlib.suppress(sqlite3.Error):
            database = Database(path)
            database.decided()
            return database
        time.sleep(0.01)
    raise RuntimeError("helpgate made no database within 120 s")


def verify(path: Path, queued: dict[int, str | None]) -> list[str]:
    """What is wrong with the stored result: each update one inbound record, decided
    as a new ticket or a comment, with exactly one customer comment carrying its
    document."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT i.dedupe_key, i.state, json_extract(i.result, '$.action'), "
            "count(DISTINCT c.id), group_concat(a.filename) FROM inbound_messages i "
            "LEFT JOIN comments c ON c.inbound_id = i.id AND c.author_kind = 'contact' "
            "LEFT JOIN attachments a ON a.comment_id = c.id "
            "WHERE i.channel = 'telegram' GROUP BY i.id").fetchall()
    finally:
        connection.close()
    problems: list[str] = []
    seen: dict[str, int] = {}
    actions: dict[str, int] = {}
    for key, state, action, comments, files in rows:
        seen[key] = seen.get(key, 0) + 1
        actions[action] = actions.get(action, 0) + 1
        update_id = int(key.split(":", 1)[1]) if key.startswith("update:") else None
        if update_id not in queued:
            problems.append(f"{key}: not an update the benchmark queued")
            continue
        if state != "processed" or comments != 1:
            problems.append(f"{key}: state {state}, action {action}, {comments} comments")
        if files != queued[update_id]:
            problems.append(f"{key}: attachments {files!r}, expected {queued[update_id]!r}")
    doubled = [key for key, count in seen.items() if count > 1]
    missing = [u for u in queued if f"update:{u}" not in seen]
    if doubled:
        problems.append(f"{len(doubled)} updates stored more than once, e.g. {doubled[:3]}")
    if missing:
        problems.append(f"{len(missing)} updates not stored, e.g. {missing[:3]}")
    print("actions:", dict(sorted(actions.items(), key=lambda kv: str(kv[0]))))
    return problems


def run(args: argparse.Namespace, folder: Path) -> int:
    with FakeInThread() as fake:
        tg = fake.fake
        started = time.perf_counter()
        queued = fake.call(queue_updates(tg, args.updates, args.users, args.documents))
        with_files = sum(1 for name in queued.values() if name)
        print(f"{len(queued)} updates from {args.users} users ({with_files} with a document) "
              f"queued at the fake Bot API in {time.perf_counter() - started:.1f} s "
              "(not timed)")
        env = write_config(folder, tg)
        started = time.perf_counter()
        gateway = start_process(folder, env, "gateway", "--log-level", "warning")
        profiler = None
        if args.profile:  # where the gateway's time goes (pip install py-spy)
            profiler = subprocess.Popen([PY_SPY, "record", "-f", "raw", "-o", args.profile,
                                         "--pid", str(gateway.pid)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            database = wait_for_database(folder / "helpgate.db", gateway)
            first = None
            while (done := database.decided()) < len(queued):
                if gateway.poll() is not None:
                    raise RuntimeError(f"helpgate exited with {gateway.returncode}; see "
                                       f"{folder / 'gateway.log'}")
                if done and first is None:
                    first = time.perf_counter()
                time.sleep(0.02)
            ended = time.perf_counter()
            database.close()
            peak = rss_mb(gateway.pid)[1]
            elapsed, after_first = ended - started, ended - (first or started)
            print(f"{len(queued)} updates in {elapsed:.2f} s end to end: "
                  f"{len(queued) / elapsed:.0f} updates/s (process start included; "
                  f"{len(queued) / after_first:.0f} updates/s from the first decision, "
                  f"{first - started if first else 0:.2f} s to it); "
                  f"helpgate RSS peak {peak:.0f} MB")
            print(f"Bot API calls: {fake.call(_counts(tg))}")
        finally:
            code = stop_gateway(gateway)
            if profiler is not None:
                profiler.wait(60)   # it writes its report when the gateway exits
        if code != 0:
            print(f"helpgate exited with {code}; see its log")
            return 1
        problems = verify(folder / "helpgate.db", queued)
        for problem in problems[:20]:
            print("WRONG:", problem)
        return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=5000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--documents", type=float, default=0.1,
                        help="the share of updates carrying a document (default 0.1)")
    parser.add_argument("--profile", metavar="PATH",
                        help="sample the gateway with py-spy; raw stacks to PATH")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp folder (database, gateway.log) and print it")
    args = parser.parse_args()
    if args.keep:
        folder = Path(tempfile.mkdtemp(prefix="helpgate-messenger-bench-"))
        print(f"folder: {folder}")
        return run(args, folder)
    with tempfile.TemporaryDirectory(prefix="helpgate-messenger-bench-") as folder:
        return run(args, Path(folder))


if __name__ == "__main__":
    sys.exit(main())
