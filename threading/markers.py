"""The two ways helpgate marks its own mail: the subject marker and our Message-IDs.

Both are written by outbound/compose.py and read back by the subject_marker, references
and own_address rules, so the format lives in one place (R-TH-1, R-OUT-2).
"""

from __future__ import annotations

import re
import secrets
from functools import lru_cache

MESSAGE_ID_PREFIX = "hg"


@lru_cache(maxsize=16)
def marker_pattern(marker: str) -> re.Pattern:
    """A regex finding `marker` (e.g. "[#{number}]") with any number in a subject."""
    before, after = marker.split("{number}")
    return re.compile(re.escape(before.strip()) + r"\s*(\d{1,18})\s*" + re.escape(after.strip()))


def format_marker(marker: str, number: int) -> str:
    return marker.replace("{number}", str(number))


def marker_numbers(marker: str, subject: str) -> list[int]:
    return [int(m) for m in marker_pattern(marker).findall(subject or "")]


def make_message_id(number: int | None, domain: str) -> str:
    """A fresh Message-ID of ours; it carries the ticket number so replies thread back."""
    ticket = str(number) if number is not None else "0"
    return f"<{MESSAGE_ID_PREFIX}{ticket}.{secrets.token_hex(8)}@{domain}>"


@lru_cache(maxsize=16)
def _own_id_pattern(domain: str) -> re.Pattern:
    return re.compile(rf"^<{MESSAGE_ID_PREFIX}(\d{{1,18}})\.[0-9a-f]+@{re.escape(domain)}>$", re.I)


def ticket_of_message_id(message_id: str, domain: str) -> int | None:
    """The ticket number one of our Message-IDs encodes; None for anyone else's."""
    match = _own_id_pattern(domain).match(message_id.strip())
    if not match:
        return None
    return int(match.group(1)) or None


def is_own_message_id(message_id: str | None, domain: str) -> bool:
    return bool(message_id) and _own_id_pattern(domain).match(message_id.strip()) is not None
