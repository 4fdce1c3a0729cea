"""The subject a new ticket keeps: without reply and forward prefixes and old markers.

A message that opens a new ticket is often an answer to an old one (after the reopen
window, or to a closed ticket): stored as it came, its subject would read
"[#2] Re: [#1] Printer" in every later notification. Prefixes are those of the mail
clients of the languages we support (the quote stripper's list, threading/quotes/), with
the counters some add ("Re[2]:", "RE(3):"), in any case and order.
"""

from __future__ import annotations

import re

from helpgate.threading.markers import marker_pattern

# Reply and forward prefixes: English, Russian, Ukrainian, Bulgarian, German, Dutch,
# Scandinavian, Finnish, French, Spanish, Portuguese, Italian, Polish, Czech, Turkish,
# Chinese, Japanese, Korean.
PREFIXES = (
    "re", "fw", "fwd", "ответ", "отв", "пересл", "переслать", "на", "відп",
    "aw", "wg", "antw", "antwort", "sv", "vs", "vb", "vl", "tr", "rv", "res",
    "enc", "rif", "odp", "pd", "přep", "ynt", "ilt", "回复", "回覆", "答复",
    "答覆", "转发", "轉寄", "轉發", "返信", "転送", "답장", "전달",
)
_PREFIX = re.compile(
    r"^\s*(?:" + "|".join(sorted((re.escape(p) for p in set(PREFIXES)), key=len,
                                 reverse=True))
    + r")\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*", re.IGNORECASE)
# Characters that end a header line for some parser; a subject keeps a space instead.
_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def new_ticket_subject(subject: str, marker: str) -> str:
    """`subject` without leading reply/forward prefixes and without any of our markers."""
    text = _BREAKING.sub(" ", subject or "")
    markers = marker_pattern(marker)
    while True:
        shorter = _PREFIX.sub("", text, count=1)
        found = markers.match(shorter.lstrip())
        if found:
            shorter = shorter.lstrip()[found.end():]
        if shorter == text:
            break
        text = shorter
    # Only the spaces around a dropped marker are joined: the rest is kept as written.
    return re.sub(r"\s*(?:" + markers.pattern + r")\s*", " ", text).strip()


def chat_subject(text: str, length: int = 120) -> str:
    """A chat message has no subject: its first line names its ticket. Taken when the
    ticket is made, never read as the message's subject (a marker typed in a chat must
    not move it into somebody else's ticket)."""
    first = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
    return first if len(first) <= length else first[:length - 1] + "…"
