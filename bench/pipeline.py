"""Throughput and memory of the in-process pipeline on the embedded SQLite store.

Generates mails (70 % new requests, 30 % replies with the subject marker and quoted history
under our separator, about 10 % with an attachment, some HTML alternatives), pushes them
through `Pipeline.ingest_many` in batches the way a mailbox fetch or import does, and prints
mails/s, RSS after every slice and the peak RSS. Exits non-zero when a mail did not end as
generated (every new mail a ticket, every reply a comment), so a fast wrong run cannot pass.

    .venv/bin/python bench/pipeline.py [--mails 10000] [--batch 100] [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import resource
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpgate.config.schema import Config  # noqa: E402
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
    """Deterministic mails; replies refer to tickets the pipeline has actually opened."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.sequence = 0

    def sender(self) -> tuple[str, str]:
        company = self.random.randrange(COMPANIES + 40)  # some senders are unknown
        person = self.random.randrange(CONTACTS_PER_COMPANY + 2)
        return f"user{person}@company{company}.example", f"User {person} of {company}"

    def new_mail(self) -> bytes:
        address, name = self.sender()
        russian = self.random.random() < 0.7
        phrases = PHRASES_RU if russian else PHRASES_EN
        body = "\n\n".join(["Здравствуйте!" if russian else "Hello,",
                            self.random.choice(phrases), self.random.choice(phrases),
                            f"{name}\n+7 916 {self.random.randrange(10**7):07d}"])
        return self._build(address, name, self.random.choice(phrases)[:40], body)

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
        msg = EmailMessage()
        msg["From"] = f"{name} <{address}>"
        msg["To"] = "support@helpgate.localhost"
        msg["Subject"] = subject
        msg["Message-ID"] = f"<bench{self.sequence}@client.example>"
        msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0300"
        msg.set_content(body)
        if self.random.random() < 0.2:
            msg.add_alternative(f"<div>{body.replace(chr(10), '<br>')}</div>", subtype="html")
        if self.random.random() < 0.1:
            size = self.random.randrange(5_000, 200_000)
            msg.add_attachment(self.random.randbytes(size), maintype="application",
                               subtype="octet-stream", filename=f"scan{self.sequence}.bin")
        return bytes(msg)


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


async def run(mails: int, batch: int, db: str) -> int:
    store = Store(f"sqlite:///{db}")
    await store.ensure_schema()
    # Many mails from few senders within an hour: the flood limit is not what is measured.
    config = Config(threading={"throttle_max": 0})
    pipeline = Pipeline(config, store)
    await seed_directory(store, pipeline.clock())
    generator = Generator(seed=7)
    tickets: list[tuple[int, str]] = []
    expected = collections.Counter()
    actions = collections.Counter()
    elapsed = 0.0
    print(f"{'mails':>7} {'mails/s':>9} {'slice/s':>9} {'RSS MB':>8}")
    slice_elapsed = 0.0
    done = 0
    while done < mails:
        size = min(batch, mails - done)
        raws = []
        for _ in range(size):
            if tickets and generator.random.random() < 0.3:
                number, subject = generator.random.choice(tickets)
                raws.append(generator.reply(number, subject))
                expected["comment"] += 1
            else:
                raws.append(generator.new_mail())
                expected["new_ticket"] += 1
        started = time.perf_counter()
        results = await pipeline.ingest_many([pipeline.parse(raw) for raw in raws])
        took = time.perf_counter() - started
        elapsed += took
        slice_elapsed += took
        for raw, result in zip(raws, results, strict=True):
            actions[result.action] += 1
            if result.action == "new_ticket":
                subject = raw.split(b"Subject: ", 1)[1].split(b"\n", 1)[0].decode()
                tickets.append((result.ticket, subject))
        done += size
        if done % SLICE == 0 or done == mails:
            print(f"{done:>7} {done / elapsed:>9.0f} {SLICE / slice_elapsed:>9.0f} "
                  f"{rss_mb():>8.1f}", flush=True)
            slice_elapsed = 0.0
    await store.close()
    print(f"\n{mails} mails in {elapsed:.2f} s: {mails / elapsed:.0f} mails/s "
          f"(batches of {batch}); peak RSS {peak_rss_mb():.0f} MB")
    print("actions:", dict(actions), " expected:", dict(expected))
    return 0 if actions == expected else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--db", help="SQLite file (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(run(args.mails, args.batch, args.db or f"{folder}/bench.db"))


if __name__ == "__main__":
    sys.exit(main())
