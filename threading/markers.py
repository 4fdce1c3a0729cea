"""The ways helpgate marks its own mail: the subject marker, our Message-IDs and the
staff reply address.

They are written by the outbound side and read back by the subject_marker, references,
own_address and staff_auth rules, so each format lives in one place (R-TH-1, R-OUT-2).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
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


def thread_root(number: int, domain: str) -> str:
    """The ticket's thread root: no mail has this Message-ID, every notification of the
    ticket names it in References (so clients group them); it maps back to the ticket."""
    return f"<{MESSAGE_ID_PREFIX}{number}.0@{domain}>"


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


# A staff reply token: 128 random bits in lower-case base32, so a mail system that folds
# the case of local parts cannot change it, and only [a-z2-7] ever goes into an address.
_TOKEN = re.compile(r"^[a-z2-7]{26}$")


# Each random byte's low five bits pick a letter (256 is a multiple of 32: every letter
# equally likely), 26 of them 130 bits, by one C call: base64.b32encode is Python code, and
# every staff notification takes a token.
_BASE32 = bytes(b"abcdefghijklmnopqrstuvwxyz234567"[value & 31] for value in range(256))


def new_reply_token() -> str:
    return secrets.token_bytes(26).translate(_BASE32).decode("ascii")


def reply_address(address: str, token: str) -> str:
    """Our address with the token as its plus-tag: support+<token>@example.com."""
    local, _, domain = address.rpartition("@")
    return f"{local}+{token}@{domain}"


def reply_tokens(recipients: Iterable[str], own: Iterable[str]) -> list[str]:
    """The tokens in the plus-tags of recipients whose local part is one of ours.

    The domain is not compared: a mail system may rewrite it on the way in, and the token
    alone is the secret."""
    bases = {a.rpartition("@")[0].lower() for a in own if "@" in a}
    found = []
    for recipient in recipients:
        local = recipient.strip().strip("<>").rpartition("@")[0].lower()
        base, plus, tag = local.partition("+")
        if plus and base in bases and _TOKEN.match(tag) and tag not in found:
            found.append(tag)
    return found
