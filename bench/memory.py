"""Peak memory of `helpgate ingest` for one large mail, next to the same for a small one.

A help desk gets scans and photos every day; one mail must not cost ten times its size
(issue #14: a 30 MB attachment once cost ~450 MB). This runs the real CLI in a fresh
process per mail, on a fresh SQLite database, and reads the peak RSS the kernel reports
for it (getrusage of the child). Prints the figures; asserts nothing.

    .venv/bin/python bench/memory.py [--mb 30] [--database URL]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

HELPGATE = str(Path(sys.executable).parent / "helpgate")


def big_mail(megabytes: int) -> bytes:
    message = EmailMessage()
    message["From"] = "ivan@romashka.ru"
    message["To"] = "support@helpgate.localhost"
    message["Subject"] = "Скан договора"
    message["Message-ID"] = f"<big-{time.time_ns()}@romashka.ru>"
    message.set_content("Добрый день! Скан во вложении.")
    message.add_attachment(os.urandom(megabytes * 1024 * 1024), maintype="application",
                           subtype="pdf", filename="Договор.pdf")
    return bytes(message)


def small_mail() -> bytes:
    return ("From: ivan@romashka.ru\r\nSubject: Принтер\r\n"
            f"Message-ID: <small-{time.time_ns()}@romashka.ru>\r\n\r\nНе печатает.\r\n"
            ).encode()


def peak_rss_of_ingest(raw: bytes, folder: Path, database: str | None) -> tuple[float, str]:
    """(peak RSS in MB, the ingest's JSON line) of one `helpgate ingest` process."""
    mail = folder / "mail.eml"
    mail.write_bytes(raw)
    config = folder / "helpgate.toml"
    config.write_text('[mail]\nmax_message_size = "200MB"\nmax_attachment_size = "200MB"\n')
    env = {**os.environ, "HELPGATE_CONFIG": str(config),
           "HELPGATE_DATABASE_URL": database or f"sqlite:///{folder / 'helpgate.db'}"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([HELPGATE, "ingest", str(mail)], env=env, capture_output=True,
                          text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far: measure the big one last.
    return max(after, before) / 1024, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=30, help="attachment size in MB")
    parser.add_argument("--database", help="database URL (default: a fresh SQLite file); "
                        "give PostgreSQL an empty database or schema of its own")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base, _ = peak_rss_of_ingest(small_mail(), folder, args.database)
        raw = big_mail(args.mb)
        peak, result = peak_rss_of_ingest(raw, folder, args.database)
    size = len(raw) / 1024 / 1024
    print(f"small mail: peak RSS {base:.0f} MB (the process's constant)")
    print(f"{args.mb} MB attachment, mail {size:.1f} MB: peak RSS {peak:.0f} MB, "
          f"{peak - base:.0f} MB above the constant = {(peak - base) / size:.2f}x the mail")
    print(f"result: {result[:120]}")


if __name__ == "__main__":
    main()
