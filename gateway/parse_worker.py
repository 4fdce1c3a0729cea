"""What a parser worker process runs (gateway/bulk.py's ParserPool), on its own.

A worker is spawned, and before its first batch it imports the module of the function it
is handed: here that is this module and the channel's parser, not gateway/bulk.py with
the pipeline and the store behind it, which would add most of a second to every start
(and the pool starts when an IMAP backlog is first seen, while its mails wait).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import datetime

from helpgate.threading.message import InboundMessage


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
