"""What a parser worker process runs (gateway/bulk.py's ParserPool), on its own.

A worker is spawned, and before its first batch it imports the module of the function it
is handed: here that is this module, the quote stripper and the channel's parser, not
gateway/bulk.py with the pipeline and the store behind it, which would add most of a
second to every start (and the pool starts when an IMAP backlog is first seen, while its
mails wait).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime

from helpgate.threading.markers import marker_numbers
from helpgate.threading.message import InboundMessage
from helpgate.threading.quotes import read_alone


def watch_parent(parent: int) -> None:
    """A worker's initializer: leave when the gateway that spawned it is gone. A gateway
    killed with -9 (or by the OOM killer) takes no child with it: without this each
    crash would leave its workers (and their memory) behind for good."""
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True,
                     name="helpgate-parent-watch").start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)  # nothing of the worker's needs saving: the gateway re-reads the batch


def parse_each(parse: Callable[[bytes, datetime], InboundMessage], raws: list[bytes],
               now: datetime) -> list[InboundMessage]:
    """A batch at once."""
    return [parse(raw, now) for raw in raws]


def parse_and_read(parse: Callable[[bytes, datetime], InboundMessage],
                   separators: tuple[str, ...], marker: str, raw: bytes,
                   now: datetime) -> InboundMessage:
    """`parse`, and for what looks like a new request the quote stripper's reading of it
    on no ticket (threading.quotes.read_alone), here on the second core rather than in
    the store's thread. What looks like a reply (our marker in the subject, a mail it
    answers) is left: its reading needs its ticket's history."""
    message = parse(raw, now)
    if message.problem or not message.text.strip() or message.in_reply_to \
            or message.references or marker_numbers(marker, message.subject):
        return message
    return dataclasses.replace(message, quote_reading=read_alone(message, separators))
