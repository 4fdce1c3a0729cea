"""Throughput and memory of the in-process pipeline on the embedded SQLite store.

Generates mails (70 % new requests, 30 % replies with the subject marker and quoted history
under our separator, about 10 % with an attachment, some HTML alternatives), pushes them
through `Pipeline.ingest_many` in batches the way a mailbox fetch or import does, and prints
mails/s, RSS after every slice and the peak RSS. Exits non-zero when a mail did not end as
generated (every new mail a ticket, every reply a comment), so a fast wrong run cannot pass.

The mails are generated before the clock starts and spooled to a file: the timed stream
only reads them back, as a mailbox fetch hands over bytes, so neither the generator's CPU
nor a list of every mail in memory is in the figures.

    .venv/bin/python bench/pipeline.py [--mails 10000] [--batch 200] [--db PATH] [--workers N]

Parsing runs in worker processes overlapping the store's work (gateway/bulk.py), as a
mailbox import does; the figures are wall-clock time over the whole stream.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import email.header
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpgate.config.schema import Config  # noqa: E402
from helpgate.gateway.bulk import BATCH, ParserPool, ingest_stream  # noqa: E402
from helpgate.gateway.pipeline import Pipeline  # noqa: E402
from helpgate.ticketstore import people  # noqa: E402
from helpgate.ticketstore.repository import Store  # noqa: E402

SEPARATOR = "##- Пожалуйста, пишите ответ выше этой строки -##"
COMPANIES = 300
CONTACTS_PER_COMPANY = 3
SLICE = 1000
PHRASES_RU = ["Не печатает принтер в бухгалтерии.", "Не приходит почта с утра.",
              "Прошу восстановить доступ к 1С.", "Сломался монитор, нужна замена.",
              "Медленно работает интернет в переговорной.", "Нужна учётная запись новому "
              "сотруднику, выходит в понедельник."]
PHRASES_EN = ["The VPN drops every ten minutes.", "Please reset my password.",
              "Outlook keeps asking for credentials.", "Our shared drive is read-only."]


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Generator:
    """Deterministic mails; replies refer to tickets earlier mails of the run open.

    Generated before the pipeline runs, so ticket numbers are predicted: on a fresh
    database every new request opens the next number (the run checks it did).
    """

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.sequence = 0
        self.tickets: list[tuple[int, str]] = []
        self.expected = collections.Counter()

    def mails(self, count: int) -> Iterator[bytes]:
        for _ in range(count):
            if self.tickets and self.random.random() < 0.3:
                self.expected["comment"] += 1
                yield self.reply(*self.random.choice(self.tickets))
            else:
                self.expected["new_ticket"] += 1
                subject = self.random.choice(PHRASES_RU + PHRASES_EN)[:40].strip()
                self.tickets.append((len(self.tickets) + 1, subject))
                yield self.new_mail(subject)

    def sender(self) -> tuple[str, str]:
        company = self.random.randrange(COMPANIES + 40)  # some senders are unknown
        person = self.random.randrange(CONTACTS_PER_COMPANY + 2)
        return f"user{person}@company{company}.example", f"User {person} of {company}"

    def new_mail(self, subject: str) -> bytes:
        address, name = self.sender()
        russian = self.random.random() < 0.7
        phrases = PHRASES_RU if russian else PHRASES_EN
        body = "\n\n".join(["Здравствуйте!" if russian else "Hello,",
                            self.random.choice(phrases), self.random.choice(phrases),
                            f"{name}\n+7 916 {self.random.randrange(10**7):07d}"])
        return self._build(address, name, subject, body)

    def reply(self, number: int, subject: str) -> bytes:
        address, name = self.sender()
        quoted = "\n".join(f"> {line}" for line in [
            SEPARATOR, "", "Здравствуйте!", "",
            f"Ваше обращение зарегистрировано под номером {number}.", "",
            "> " + self.random.choice(PHRASES_RU)])
        body = (f"{self.random.choice(PHRASES_RU)}\n\n{name}\n\n"
                f"пн, 23 нояб. 2026 г. в 10:05, Support <support@helpgate.localhost>:\n\n"
                f"{quoted}\n")
        return self._build(address, name, f"Re: [#{number}] {subject}", body)

    def _build(self, address: str, name: str, subject: str, body: str) -> bytes:
        self.sequence += 1
        boundary = f"b{self.sequence}"
        parts = [self._text_part("plain", body)]
        if self.random.random() < 0.2:
            parts.append(self._text_part("html", f"<div>{body.replace(chr(10), '<br>')}</div>"))
        if len(parts) > 1:
            parts = [_multipart("alternative", f"{boundary}a", parts)]
        if self.random.random() < 0.1:
            data = self.random.randbytes(self.random.randrange(5_000, 200_000))
            parts.append(f"Content-Type: application/octet-stream\n"
                         f"Content-Disposition: attachment; filename=\"scan{self.sequence}.bin\"\n"
                         f"Content-Transfer-Encoding: base64\n\n"
                         f"{base64.encodebytes(data).decode()}")
        content = parts[0] if len(parts) == 1 else _multipart("mixed", boundary, parts)
        encoded_name = email.header.Header(name, "utf-8").encode()
        encoded_subject = email.header.Header(subject, "utf-8").encode()
        return (f"From: {encoded_name} <{address}>\nTo: support@helpgate.localhost\n"
                f"Subject: {encoded_subject}\nMessage-ID: <bench{self.sequence}@client.example>\n"
                f"Date: Mon, 23 Nov 2026 10:00:00 +0300\nMIME-Version: 1.0\n"
                f"{content}").encode()

    def _text_part(self, subtype: str, text: str) -> str:
        # Clients send Cyrillic as base64 (Gmail, Outlook) or 8bit (Yandex, Mail.ru).
        if self.random.random() < 0.5:
            return (f"Content-Type: text/{subtype}; charset=utf-8\n"
                    f"Content-Transfer-Encoding: base64\n\n"
                    f"{base64.encodebytes(text.encode()).decode()}")
        return (f"Content-Type: text/{subtype}; charset=utf-8\n"
                f"Content-Transfer-Encoding: 8bit\n\n{text}\n")


def _multipart(subtype: str, boundary: str, parts: list[str]) -> str:
    inner = "".join(f"--{boundary}\n{part}\n" for part in parts)
    return f"Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\n\n{inner}--{boundary}--\n"


async def seed_directory(store: Store, now) -> None:
    entries = people.DirectoryFile(
        companies=[people.CompanyEntry(name=f"Company {c}", domains=[f"company{c}.example"])
                   for c in range(COMPANIES)],
        contacts=[people.ContactEntry(name=f"User {p} of {c}",
                                      email=f"user{p}@company{c}.example",
                                      company=f"Company {c}")
                  for c in range(COMPANIES) for p in range(CONTACTS_PER_COMPANY)],
        employees=[people.EmployeeEntry(name="Anna", email="anna@helpgate.test", role="admin")])
    await store.run(people.import_directory, entries, now)


def spool(generator: Generator, count: int, path: str) -> None:
    """Every mail written to a file before the clock starts, length-prefixed."""
    with open(path, "wb") as out:
        for raw in generator.mails(count):
            out.write(len(raw).to_bytes(4, "big"))
            out.write(raw)


def unspool(path: str) -> Iterator[bytes]:
    with open(path, "rb") as spooled:
        while size := spooled.read(4):
            yield spooled.read(int.from_bytes(size, "big"))


async def run(mails: int, batch: int, db: str, workers: int | None, folder: str) -> int:
    generator = Generator(seed=7)
    spooled = f"{folder}/mails.spool"
    generated = time.perf_counter()
    spool(generator, mails, spooled)
    print(f"{mails} mails generated in {time.perf_counter() - generated:.1f} s (not timed)")
    store = Store(f"sqlite:///{db}")
    await store.ensure_schema()
    # Many mails from few senders within an hour: the flood limit is not what is measured.
    config = Config(threading={"throttle_max": 0})
    pipeline = Pipeline(config, store)
    await seed_directory(store, pipeline.clock())
    actions = collections.Counter()
    done = 0
    async with ParserPool(workers) as pool:
        print(f"{pool.workers} parser worker process(es); batches of {batch}")
        print(f"{'mails':>7} {'mails/s':>9} {'slice/s':>9} {'RSS MB':>8}")
        started = slice_started = time.perf_counter()
        async for _, results in ingest_stream(pipeline, unspool(spooled), pool, batch):
            actions.update(str(result.action) for result in results)
            done += len(results)
            if done % SLICE == 0 or done == mails:
                now = time.perf_counter()
                print(f"{done:>7} {done / (now - started):>9.0f} "
                      f"{SLICE / (now - slice_started):>9.0f} {rss_mb():>8.1f}", flush=True)
                slice_started = now
        elapsed = time.perf_counter() - started
        workers_rss = sum(_rss_of(child.pid) for child in multiprocessing.active_children())
    await store.close()
    print(f"\n{mails} mails in {elapsed:.2f} s: {mails / elapsed:.0f} mails/s, generating "
          f"excluded; peak RSS {peak_rss_mb():.0f} MB (+ parser workers {workers_rss:.0f} MB)")
    print("actions:", dict(actions), " expected:", dict(generator.expected))
    # The predicted ticket numbers hold only on a fresh database: check they did.
    tickets = _ticket_subjects(db)
    wrong = [number for number, subject in generator.tickets if tickets.get(number) != subject]
    if wrong:
        print(f"{len(wrong)} tickets are not the ones predicted, e.g. #{wrong[0]} "
              "(was --db a fresh database?)")
    return 0 if actions == generator.expected and not wrong else 1


def _ticket_subjects(db: str) -> dict[int, str]:
    import sqlite3
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return dict(connection.execute("SELECT number, subject FROM tickets"))


def _rss_of(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=BATCH,
                        help=f"mails per batch (default {BATCH}, as a mailbox import)")
    parser.add_argument("--db", help="a fresh SQLite file (default: a temporary one)")
    parser.add_argument("--workers", type=int, help="parser processes (default: cores - 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(run(args.mails, args.batch, args.db or f"{folder}/bench.db",
                               args.workers, folder))


if __name__ == "__main__":
    sys.exit(main())
