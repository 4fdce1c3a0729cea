"""What a parser worker process runs (gateway/bulk.py's ParserPool), on its own.

A worker is spawned, and before its first batch it imports the module of the function it
is handed: here that is this module and the channel's parser, not gateway/bulk.py with
the pipeline and the store behind it, which would add most of a second to every start
(and the pool starts when an IMAP backlog is first seen, while its mails wait).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from helpgate.threading.message import InboundMessage


def parse_each(parse: Callable[[bytes, datetime], InboundMessage], raws: list[bytes],
               now: datetime) -> list[InboundMessage]:
    """A batch at once."""
    return [parse(raw, now) for raw in raws]
