"""What the receiving mail server says it verified: Authentication-Results (RFC 8601).

A mail's From can be forged by anyone; a DKIM signature or a DMARC pass checked by our
own receiving MTA cannot. That MTA records its checks in an Authentication-Results header
field labelled with its authserv-id. Any sender can write such a field too, so only
fields from the authserv-ids the admin named are read, and of each only the topmost one:
the receiving MTA adds its field above everything that came with the message (and should
remove older fields bearing its id, RFC 8601 section 5). Parsing is the `authres`
library's; this module only decides what a parsed field proves.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

import authres

log = logging.getLogger("helpgate.threading")
HEADER = "Authentication-Results"
# Headers by which mail systems record the envelope recipient (RFC 9228 and Postfix's).
ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to")


@dataclass(frozen=True, slots=True)
class Verified:
    """Domains a trusted server vouches for: DKIM signers (d=) and DMARC-passed From."""

    dkim: frozenset[str] = field(default_factory=frozenset)
    dmarc: frozenset[str] = field(default_factory=frozenset)
    # Which trusted authserv-ids had a say, for the decision trail.
    servers: tuple[str, ...] = ()


def header_block(raw: bytes) -> Message:
    """The raw mail's header fields in order: only the header block is read (a mail may
    carry a 30 MB attachment below it)."""
    end = _BLANK_LINE.search(raw, 0, _HEADER_LIMIT)
    return BytesHeaderParser(policy=compat32).parsebytes(
        raw[:end.end() if end else _HEADER_LIMIT])


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_HEADER_LIMIT = 256 * 1024


def envelope_recipients(headers: Message) -> list[str]:
    return [str(v).strip() for name in ENVELOPE_HEADERS for v in headers.get_all(name) or []]


def verified(values: Iterable[str], trusted: Iterable[str]) -> Verified:
    """What the topmost field of each trusted authserv-id reports as passed."""
    wanted = {t.lower() for t in trusted}
    seen: list[str] = []
    dkim: set[str] = set()
    dmarc: set[str] = set()
    for value in values:
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(" ".join(value.split()))
        except authres.AuthResError as exc:
            log.debug("unreadable %s field skipped: %s", HEADER, exc)
            continue
        server = (parsed.authserv_id or "").lower()
        if server not in wanted or server in seen:
            continue  # someone else's, or an older one further down (may be forged)
        seen.append(server)
        for result in parsed.results:
            if (result.result or "").lower() != "pass":
                continue
            method = (result.method or "").lower()
            if method == "dkim":
                dkim.update(_dkim_domains(result))
            elif method == "dmarc":
                dmarc.update(_values(result, "header", "from"))
    return Verified(frozenset(dkim), frozenset(dmarc), tuple(seen))


def _values(result, ptype: str, name: str) -> list[str]:
    return [str(p.value).strip().lower() for p in result.properties
            if (p.type or "").lower() == ptype and (p.name or "").lower() == name and p.value]


def _dkim_domains(result) -> list[str]:
    # header.d names the signing domain; some servers (Gmail) give only header.i=@domain.
    domains = _values(result, "header", "d")
    domains += [i.rpartition("@")[2] for i in _values(result, "header", "i")]
    return [d for d in domains if d]


def dkim_aligned(signer: str, domain: str) -> bool:
    """Relaxed alignment (as DMARC's): the signer is the domain or a parent of it. A bare
    top-level domain never counts."""
    signer, domain = signer.lower().rstrip("."), domain.lower().rstrip(".")
    return "." in signer and (domain == signer or domain.endswith("." + signer))


def proof_for(found: Verified, domain: str) -> str | None:
    """How the trusted servers authenticate mail from `domain`, or None."""
    if domain.lower() in found.dmarc:
        return f"DMARC pass for {domain} ({', '.join(found.servers)})"
    for signer in sorted(found.dkim):
        if dkim_aligned(signer, domain):
            return f"DKIM pass d={signer} ({', '.join(found.servers)})"
    return None
