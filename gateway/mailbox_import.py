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


def open_mailbox(kind: str, path: str) -> mailbox.Mailbox:
    location = Path(path)
    if kind == "mbox":
        if not location.is_file():
            raise MailboxError(f"{path} is not an mbox file")
        return mailbox.mbox(location, create=False)
    if not (location / "cur").is_dir() or not (location / "new").is_dir():
        raise MailboxError(f"{path} is not a Maildir (no cur/ and new/ folders)")
    return mailbox.Maildir(location, create=False)


def _messages(box: mailbox.Mailbox) -> Iterator[bytes]:
    # In delivery order, so replies follow what they answer: an mbox is in file order,
    # Maildir names begin with the delivery time.
    keys = sorted(box.keys(), key=_delivery_order) if isinstance(box, mailbox.Maildir) \
        else box.iterkeys()
    for key in keys:
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

