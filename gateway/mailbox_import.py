"""`helpgate import mbox|maildir PATH`: an existing support mailbox's history, brought in
through the same pipeline as live mail (same threading, same quarantine).

Idempotent by construction: every message is kept under its dedupe key (Message-ID, else
its bytes), so a second run finds each one a duplicate and adds nothing. Imported history
is history: no acknowledgement or staff notification goes out for it, which is what a
help desk moving in expects (its customers were answered long ago).
"""

from __future__ import annotations

import collections
import mailbox
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from helpgate.config.schema import Config
from helpgate.gateway.bulk import ParserPool, ingest_stream
from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore.repository import Store


class MailboxError(ValueError):
    """The mailbox cannot be read."""


def open_mailbox(kind: str, path: str) -> mailbox.Mailbox | Mbox:
    location = Path(path)
    if kind == "mbox":
        if not location.is_file():
            raise MailboxError(f"{path} is not an mbox file")
        return Mbox(location)
    if not (location / "cur").is_dir() or not (location / "new").is_dir():
        raise MailboxError(f"{path} is not a Maildir (no cur/ and new/ folders)")
    return mailbox.Maildir(location, create=False)


# An envelope line: "From sender date", the sender one word, the date with a time in it.
_ENVELOPE = re.compile(rb"^From \S+ +.*\d{1,2}:\d\d")
_ESCAPED_FROM = re.compile(rb"^>(>*From )")


class Mbox:
    """An mbox file read as mail clients read it, not as the standard library splits it.

    `mailbox.mbox` starts a new message at every line beginning "From ", so a customer's
    sentence starting with that word ends their mail and loses the line; and it never
    undoes the ">From " quoting writers add (mboxrd). Here a message starts only at an
    envelope line (a sender and a date) after a blank line or at the top, and one ">" of
    a quoted From line is taken off.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def __len__(self) -> int:
        return sum(1 for _ in self._starts())

    def close(self) -> None:
        """Nothing is held open between reads."""

    def messages(self) -> Iterator[bytes]:
        lines: list[bytes] | None = None
        with self.path.open("rb") as source:
            previous_blank = True
            for line in source:
                if _starts_message(line, previous_blank, lines is None):
                    if lines is not None:
                        yield _message(lines)
                    lines = []
                elif lines is not None:
                    lines.append(_ESCAPED_FROM.sub(rb"\1", line))
                previous_blank = not line.strip()
        if lines is not None:
            yield _message(lines)

    def _starts(self) -> Iterator[int]:
        with self.path.open("rb") as source:
            previous_blank = True
            first = True
            for number, line in enumerate(source):
                if _starts_message(line, previous_blank, first):
                    first = False
                    yield number
                previous_blank = not line.strip()


def _starts_message(line: bytes, previous_blank: bool, first: bool) -> bool:
    # The file's first "From " line is an envelope whatever follows the sender.
    return (first and line.startswith(b"From ")) or (previous_blank and
                                                     bool(_ENVELOPE.match(line)))


def _message(lines: list[bytes]) -> bytes:
    # The blank line the writer put before the next envelope is not part of the mail.
    if lines and not lines[-1].strip():
        lines = lines[:-1]
    return b"".join(lines)


def _messages(box: mailbox.Mailbox | Mbox) -> Iterator[bytes]:
    # In delivery order, so replies follow what they answer: an mbox is in file order,
    # Maildir names begin with the delivery time.
    if isinstance(box, Mbox):
        yield from box.messages()
        return
    for key in sorted(box.keys(), key=_delivery_order):
        yield box.get_bytes(key)


_MAILDIR_NAME = re.compile(r"^(\d+)\.(?:M(\d+))?")


def _delivery_order(key: str) -> tuple:
    # "1795427165.M123456P42Q1.host": seconds, then microseconds (not zero-padded).
    match = _MAILDIR_NAME.match(key)
    if match is None:
        return (float("inf"), 0, key)
    return (int(match.group(1)), int(match.group(2) or 0), key)


async def import_mailbox(config: Config, store: Store, kind: str, path: str,
                         ticket_type: str | None, progress: bool = True) -> dict:
    box = open_mailbox(kind, path)
    try:
        total = len(box)
        pipeline = Pipeline(config, store, quiet=True)
        actions: collections.Counter[str] = collections.Counter()
        bar = tqdm(total=total, unit="mail", file=sys.stderr, disable=not progress,
                   desc=f"importing {Path(path).name}")
        async with ParserPool() as pool:
            async for _, results in ingest_stream(pipeline, _messages(box), pool,
                                                  ticket_type=ticket_type):
                actions.update(str(r.action) for r in results)
                bar.update(len(results))
        bar.close()
    finally:
        box.close()
    return {"imported": sum(actions.values()), "actions": dict(sorted(actions.items())),
            "path": path, "format": kind}

