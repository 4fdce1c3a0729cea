"""Raw email bytes -> InboundMessage: MIME structure, charsets, HTML as text, attachments.

Shared by `helpgate ingest`, the IMAP and SMTP/LMTP adapters and mailbox import, so every
path reads mail the same way. Mail in the wild lies about its charset or names one nobody
knows; that is never a reason to reject it (R-TS-5): we decode with the declared charset
and fall back to detection. What truly cannot be processed (no sender, no content, no
structure) is not dropped either: the message carries a `problem` and gets quarantined.

We use the standard library's parser with the compat32 policy: it is several times faster
than policy.default and mail-parser, and it leaves the raw bytes of a part alone so that
we, not the library, decide how a broken charset is decoded.
"""

from __future__ import annotations

import codecs
import contextlib
import email
import email.header
import email.utils
import hashlib
import logging
import re
import textwrap
from datetime import datetime
from email.message import Message

import cchardet
from inscriptis import get_text

from helpgate.channels.base import DeliveryStatus, InboundAttachment, InboundMessage

log = logging.getLogger("helpgate.parse")

# Headers the threading rules read (auto-replies, bounces, loops, lists).
RULE_HEADERS = (
    "auto-submitted", "precedence", "x-precedence", "x-autoreply", "x-autorespond",
    "x-auto-response-suppress", "x-loop", "return-path", "x-failed-recipients",
    "list-id", "list-unsubscribe", "x-helpgate-ticket", "content-type",
)
# Detected encodings we trust; below this confidence Cyrillic fallbacks are tried first.
MIN_CONFIDENCE = 0.5
_MSG_ID = re.compile(r"<[^<>\s]+>")
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")
_BODY_MESSAGE_ID = re.compile(r"^\s*Message-I[Dd]:\s*(<[^<>\s]+>)", re.M)


def parse_email(raw: bytes, received_at: datetime, channel: str = "email") -> InboundMessage:
    """Parse raw RFC 5322 bytes. Never raises on bad mail: problems are reported instead."""
    if not raw.strip():
        return InboundMessage(channel=channel, raw=raw, dedupe_key=_digest_key(raw),
                              received_at=received_at, problem="empty message: no content")
    msg = email.message_from_bytes(raw)
    message_id = _first_id(_header(msg, "message-id"))
    dedupe_key = f"mid:{message_id}" if message_id else _digest_key(raw)
    name, address = _sender(msg)
    body = _Body()
    body.collect(msg)
    text = body.text()
    from_html = False
    if not text.strip() and body.html is not None:
        text, from_html = html_to_text(body.html), True
    headers = {h: _header(msg, h) for h in RULE_HEADERS if msg.get(h) is not None}
    problem = _problem(raw, msg, address, text, body)
    reply_to = _addresses(msg, "reply-to")
    return InboundMessage(
        channel=channel, raw=raw, dedupe_key=dedupe_key, received_at=received_at,
        sender_email=address, sender_name=name,
        reply_to=reply_to[0] if reply_to else None,
        to=tuple(_addresses(msg, "to")), cc=tuple(_addresses(msg, "cc")),
        subject=_header(msg, "subject").strip(), message_id=message_id,
        in_reply_to=tuple(_MSG_ID.findall(_header(msg, "in-reply-to"))),
        references=tuple(_MSG_ID.findall(_header(msg, "references"))),
        date=_header(msg, "date") or None, text=text, html=body.html,
        text_from_html=from_html, attachments=tuple(body.attachments), headers=headers,
        delivery_status=_delivery_status(msg, body), problem=problem,
    )


def parse_safely(raw: bytes, received_at: datetime, channel: str = "email") -> InboundMessage:
    """`parse_email`, and should the parser itself fail, a message to quarantine with the
    reason: a parser bug must not lose the mail (R-TS-5)."""
    try:
        return parse_email(raw, received_at, channel)
    except Exception as exc:
        log.exception("parsing failed")
        return InboundMessage(channel=channel, raw=raw, received_at=received_at,
                              dedupe_key=_digest_key(raw),
                              problem=f"unparseable message: {type(exc).__name__}: {exc}")


def parse_all(raws: list[bytes], received_at: datetime,
              channel: str = "email") -> list[InboundMessage]:
    """A batch at once: what a parser worker process is given (gateway/bulk.py)."""
    return [parse_safely(raw, received_at, channel) for raw in raws]


def decode_bytes(data: bytes, declared: str | None) -> str:
    """Bytes in a declared charset that may be wrong, unknown or missing -> text."""
    candidates = []
    if declared:
        with contextlib.suppress(LookupError):
            candidates.append(codecs.lookup(declared.strip().strip('"')).name)
    if "utf-8" not in candidates:
        candidates.append("utf-8")
    for charset in candidates:
        try:
            return _lines(data.decode(charset))
        except UnicodeDecodeError:
            continue
    # The declared charset is wrong or unknown: detect. uchardet (cchardet) tells
    # windows-1251 from KOI8-R even on a short line, which is what Russian mail needs.
    guess = cchardet.detect(data)
    encoding = guess.get("encoding")
    if encoding and (guess.get("confidence") or 0) >= MIN_CONFIDENCE:
        try:
            return _lines(data.decode(encoding))
        except (UnicodeDecodeError, LookupError):
            pass
    return _lines(data.decode("windows-1251", errors="replace"))


def _lines(text: str) -> str:
    # Mail travels with CRLF line ends; stored text uses "\n" only.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def decode_header(value: str | None) -> str:
    """An RFC 2047 header value (or raw 8-bit bytes smuggled in as surrogates) -> text."""
    if not value:
        return ""
    value = str(value)
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        return decode_bytes(value.encode("ascii", "surrogateescape"), None)
    if "=?" not in value:
        return _unfold(value)
    parts = []
    try:
        chunks = email.header.decode_header(value)
    except (email.errors.HeaderParseError, ValueError):
        return _unfold(value)
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            parts.append(chunk)
        else:
            parts.append(decode_bytes(chunk, charset))
    # Plain chunks keep their own spaces and adjacent encoded words arrive merged.
    return _unfold("".join(parts))


def html_to_text(html: str) -> str:
    """Readable text of an HTML body: paragraphs and line breaks kept, markup gone."""
    try:
        text = get_text(html)
    except Exception:  # inscriptis/lxml refuse some broken documents: strip tags instead
        text = re.sub(r"<[^>]+>", " ", html)
    lines = [line.rstrip() for line in text.splitlines()]
    return textwrap.dedent("\n".join(lines)).strip("\n")


class _Body:
    """Walks the MIME tree once: text parts, HTML part, attachments, report parts."""

    def __init__(self) -> None:
        self.plain: list[str] = []
        self.html: str | None = None
        self.attachments: list[InboundAttachment] = []
        self.status_parts: list[Message] = []
        self.original_headers: Message | None = None

    def text(self) -> str:
        return "\n\n".join(p.strip("\n") for p in self.plain if p.strip())

    def collect(self, part: Message, in_report: bool = False) -> None:
        ctype = part.get_content_type()
        # message/* parts look multipart to compat32 (their payload is a list of
        # messages): they are report data or attached mail, never this mail's body.
        if in_report and ctype == "message/delivery-status":
            self.status_parts.append(part)
            return
        if in_report and ctype in ("message/rfc822", "text/rfc822-headers"):
            self.original_headers = _embedded_headers(part)
            return
        if part.is_multipart() and not ctype.startswith("message/"):
            report = ctype == "multipart/report"
            children = part.get_payload()
            if ctype == "multipart/alternative":
                children = self._alternative(children)
            for child in children:
                self.collect(child, in_report or report)
            return
        filename = _filename(part)
        disposition = (part.get("content-disposition") or "").split(";")[0].strip().lower()
        is_body_text = (ctype in ("text/plain", "text/html") and not filename
                        and disposition != "attachment")
        if not is_body_text:
            self._attachment(part, ctype, filename)
            return
        content = decode_bytes(_payload(part), part.get_content_charset())
        if ctype == "text/plain":
            self.plain.append(content)
        elif self.html is None:
            self.html = content

    @staticmethod
    def _alternative(children: list[Message]) -> list[Message]:
        # In multipart/alternative keep one rendering: plain text first (R-TH-2 reads it),
        # and the HTML one as well so HTML-only stripping has the markup at hand.
        plain = [c for c in children if c.get_content_type() == "text/plain"]
        html = [c for c in children if c.get_content_type() == "text/html"]
        other = [c for c in children if c.is_multipart()]
        if plain:
            return plain[:1] + html[:1]
        return (other or html or children)[:1] + (html[:1] if other else [])

    def _attachment(self, part: Message, ctype: str, filename: str | None) -> None:
        if ctype == "message/rfc822":
            inner = part.get_payload()
            data = inner[0].as_bytes() if isinstance(inner, list) and inner else _payload(part)
            name = filename or (_header(inner[0], "subject") if isinstance(inner, list)
                                and inner else "") or "message"
            self.attachments.append(InboundAttachment(_eml_name(name), ctype, data))
            return
        extension = {"text/plain": ".txt", "text/html": ".html"}.get(ctype, "")
        name = filename or f"attachment-{len(self.attachments) + 1}{extension}"
        self.attachments.append(InboundAttachment(name, ctype, _payload(part)))


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    if data is None:
        payload = part.get_payload()
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    return data


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except (LookupError, UnicodeError, ValueError):
        name = None
    if name is None:
        return None
    # compat32 decodes RFC 2231 but leaves RFC 2047 words (=?utf-8?B?…?=) and raw 8-bit.
    name = decode_header(name).strip()
    return name or None


def _eml_name(subject: str) -> str:
    safe = re.sub(r"[\\/:*?\"<>|\r\n\t]+", " ", decode_header(subject)).strip()[:100]
    return safe if safe.endswith(".eml") else f"{safe or 'message'}.eml"


def _embedded_headers(part: Message) -> Message | None:
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload else None
    if isinstance(payload, str):
        return email.message_from_string(payload)
    return None


def _delivery_status(msg: Message, body: _Body) -> DeliveryStatus | None:
    """RFC 3464 report fields; for free-form bounces, the Message-ID quoted in the text."""
    if not body.status_parts and not _looks_like_bounce(msg):
        return None
    fields: dict[str, str] = {}
    for part in body.status_parts:
        payload = part.get_payload()
        blocks = payload if isinstance(payload, list) else [
            email.message_from_string(str(payload))]
        for block in blocks:
            for key in ("final-recipient", "original-recipient", "action", "status",
                        "diagnostic-code"):
                if block.get(key) and key not in fields:
                    fields[key] = _unfold(str(block.get(key)))
    original = None
    if body.original_headers is not None:
        original = _first_id(_header(body.original_headers, "message-id"))
    if original is None:
        match = _BODY_MESSAGE_ID.search(body.text())
        original = match.group(1) if match else None
    recipient = fields.get("final-recipient") or fields.get("original-recipient")
    if recipient and ";" in recipient:
        recipient = recipient.split(";", 1)[1].strip()
    return DeliveryStatus(original_message_id=original, recipient=recipient,
                          action=fields.get("action"), status=fields.get("status"),
                          diagnostic=fields.get("diagnostic-code"))


def _looks_like_bounce(msg: Message) -> bool:
    sender = (_sender(msg)[1] or "").split("@")[0]
    return sender in ("mailer-daemon", "postmaster") or msg.get("x-failed-recipients") is not None


def _problem(raw: bytes, msg: Message, address: str | None, text: str, body: _Body) -> str | None:
    first = raw.lstrip(b"\r\n").split(b"\n", 1)[0]
    if not msg.keys() or not _HEADER_LINE.match(first):
        return "unparseable message: it does not start with mail headers"
    for defect in getattr(msg, "defects", []):
        name = type(defect).__name__
        if name in ("NoBoundaryInMultipartDefect", "StartBoundaryNotFoundDefect",
                    "MultipartInvariantViolationDefect"):
            return f"unparseable MIME structure: {name}"
    if not address:
        return "no sender: the message has no usable From address"
    if not text.strip() and not body.attachments and not body.status_parts:
        return "empty message: no text and no attachments"
    return None


def _sender(msg: Message) -> tuple[str | None, str | None]:
    pairs = _address_pairs(msg, "from")
    if not pairs:
        return None, None
    return pairs[0]


def _addresses(msg: Message, name: str) -> list[str]:
    return [address for _, address in _address_pairs(msg, name)]


def _address_pairs(msg: Message, name: str) -> list[tuple[str | None, str]]:
    values = [value for key, value in msg.raw_items() if key.lower() == name]
    out = []
    for display, address in email.utils.getaddresses([str(v) for v in values]):
        address = address.strip().lower()
        if "@" not in address or " " in address:
            continue
        out.append((decode_header(display).strip() or None, address))
    return out


def _header(msg: Message, name: str) -> str:
    return decode_header(_raw_header(msg, name))


def _raw_header(msg: Message, name: str) -> str | None:
    # compat32 hands out raw 8-bit headers as Header objects that already replaced the
    # bytes with U+FFFD; the stored value still has them (as surrogates) for detection.
    for key, value in msg.raw_items():
        if key.lower() == name:
            return value
    return None


def _first_id(value: str) -> str | None:
    match = _MSG_ID.search(value or "")
    if match:
        return match.group(0)
    value = (value or "").strip()
    return f"<{value}>" if value and " " not in value else None


def _digest_key(raw: bytes) -> str:
    # No Message-ID: the same bytes delivered twice are still the same message.
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value)
