"""Raw email bytes -> InboundMessage: MIME structure, charsets, HTML as text, attachments.

Shared by `helpgate ingest`, the IMAP and SMTP/LMTP adapters and mailbox import, so every
path reads mail the same way. Mail in the wild lies about its charset or names one nobody
knows; that is never a reason to reject it (R-TS-5): we decode with the declared charset
and fall back to detection. What truly cannot be processed (no sender, no content, no
structure) is not dropped either: the message carries a `problem` and gets quarantined.

We use the standard library's parser with the compat32 policy: it is several times faster
than policy.default and mail-parser, and it leaves the raw bytes of a part alone so that
we, not the library, decide how a broken charset is decoded.

Broken structure is read the way mail clients read it, not refused: an mbox envelope
line before the headers is skipped, a multipart whose boundary never appears is re-split
on the boundary it does use or read whole as text, raw 8-bit header values are decoded.
Every value leaves here storable on every backend (charsets.clean_text/clean_line).
"""

from __future__ import annotations

import dataclasses
import email
import email.header
import email.parser
import email.utils
import hashlib
import logging
import re
from datetime import datetime
from email.message import Message

from helpgate.channels.base import DeliveryStatus, InboundAttachment, InboundMessage
from helpgate.channels.mail.blobs import Blobs
from helpgate.channels.mail.charsets import (
    clean_line,
    clean_text,
    decode_bytes,
    unsurrogate,
)
from helpgate.threading.quotes.html import to_text

log = logging.getLogger("helpgate.parse")

# Headers the threading rules read (auto-replies, bounces, loops, lists).
RULE_HEADERS = (
    "auto-submitted", "precedence", "x-precedence", "x-autoreply", "x-autorespond",
    "x-auto-response-suppress", "x-loop", "return-path", "x-failed-recipients",
    "list-id", "list-unsubscribe", "x-helpgate-ticket", "content-type",
)
# The longest address RFC 5321 lets through (a path is at most 256 octets with <>).
MAX_ADDRESS = 254
# What the store keeps of one-line values (its column sizes, the same on every backend).
MAX_NAME, MAX_DATE, MAX_ID, MAX_FILENAME, MAX_CTYPE = 255, 100, 500, 500, 200
MAX_HEADER = 2000
MAX_HEADER_BLOCK = 256 * 1024
# MIME nesting deeper than any client writes; beyond it a part is kept as an attachment.
MAX_DEPTH = 100
_MSG_ID = re.compile(r"<[^<>\s]+>")
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")
_BODY_MESSAGE_ID = re.compile(r"^\s*Message-I[Dd]:\s*(<[^<>\s]+>)", re.M)
# An mbox envelope line ("From sender@example.com  Tue Oct 29 03:52:03 2013").
_ENVELOPE = re.compile(rb"From [^:\s][^\r\n]*\r?\n")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_SPACE_BEFORE_COLON = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.M)
_SPACES = b" \t\r\n\x0b\x0c"
_HASH_CHUNK = 1 << 20
# A boundary line followed by a header line: how a multipart with a lost boundary
# parameter, or one that lies about it, still shows where its parts start.
_BOUNDARY_LINE = re.compile(rb"^--([^\s\r\n][^\r\n]{0,199}?)[ \t]*\r?\n(?=[!-9;-~]+:)", re.M)
_BOUNCE_SENDERS = ("mailer-daemon", "postmaster")


def parse_email(raw: bytes, received_at: datetime, channel: str = "email") -> InboundMessage:
    """Parse raw RFC 5322 bytes. Never raises on bad mail: problems are reported instead."""
    if not raw or raw.isspace():
        return InboundMessage(channel=channel, raw=raw, dedupe_key=_digest_key(raw),
                              received_at=received_at, problem="empty message: no content")
    content = _obsolete_colons(strip_envelope(raw))
    blobs = Blobs(content)
    msg = _message(blobs.reduce())
    message_id = clean_line(_first_id(_header(msg, "message-id")), MAX_ID) or None
    name, address = _sender(msg)
    body = _Body(blobs)
    body.collect(msg)
    text = body.text()
    from_html = False
    if not text.strip() and body.html is not None:
        text, from_html = html_to_text(body.html), True
    headers = {h: clean_line(_header(msg, h), MAX_HEADER) for h in RULE_HEADERS
               if msg.get(h) is not None}
    subject = clean_line(_header(msg, "subject"))
    report = _delivery_status(msg, body, address)
    problem = _problem(content, msg, address, subject, text, body, report)
    reply_to = _addresses(msg, "reply-to")
    return InboundMessage(
        channel=channel, raw=raw, received_at=received_at,
        dedupe_key=_dedupe_key(message_id, content, msg),
        sender_email=address, sender_name=name,
        reply_to=reply_to[0] if reply_to else None,
        to=tuple(_addresses(msg, "to")), cc=tuple(_addresses(msg, "cc")),
        subject=subject, message_id=message_id,
        in_reply_to=_ids(_header(msg, "in-reply-to")),
        references=_ids(_header(msg, "references")),
        date=clean_line(_header(msg, "date"), MAX_DATE) or None, text=clean_text(text),
        html=clean_text(body.html) if body.html is not None else None,
        text_from_html=from_html, attachments=tuple(body.attachments), headers=headers,
        delivery_status=report, problem=problem,
    )


def _message(content: bytes) -> Message:
    try:
        return email.message_from_bytes(content)
    except RecursionError:
        # MIME nested deeper than the standard library's parser can recurse (hundreds
        # of levels, no client writes that): the headers, and the body read as text.
        msg = email.parser.BytesParser().parsebytes(content, headersonly=True)
        msg.set_type("text/plain")
        return msg


def header_part(raw: bytes) -> bytes:
    """The header block of a raw mail (up to its first blank line)."""
    match = _BLANK_LINE.search(raw)
    return raw[:match.end()] if match else raw[:MAX_HEADER_BLOCK]


def oversized(head: bytes, size: int, limit: int, received_at: datetime,
              channel: str = "email") -> InboundMessage:
    """A mail over mail.max_message_size, of which only the header is kept: quarantined
    with the reason, so staff see who wrote and the mailbox is not blocked."""
    message = parse_safely(head, received_at, channel)
    return dataclasses.replace(
        message, problem=f"message of {size} bytes is over mail.max_message_size "
                         f"({limit}); only its header was kept")


def _obsolete_colons(raw: bytes) -> bytes:
    """Header fields written "Subject : …" (RFC 5322's obsolete syntax, still sent by old
    software) as "Subject: …": the standard library would end the header there."""
    end = _BLANK_LINE.search(raw, 0, MAX_HEADER_BLOCK)
    head = raw[:end.start() if end else MAX_HEADER_BLOCK]
    if not _SPACE_BEFORE_COLON.search(head):
        return raw
    return _SPACE_BEFORE_COLON.sub(rb"\1:", head) + raw[len(head):]


def strip_envelope(raw: bytes) -> bytes:
    """The mail without the mbox envelope line procmail, fetchmail, Postfix's pipe (F flag)
    and saved .mbox files put before the headers."""
    start = 0
    while start < len(raw) and raw[start] in b"\r\n":
        start += 1
    match = _ENVELOPE.match(raw, start)
    return raw[match.end():] if match else raw


def parse_safely(raw: bytes, received_at: datetime, channel: str = "email") -> InboundMessage:
    """`parse_email`, and should the parser itself fail, a message to quarantine with the
    reason: a parser bug must not lose the mail (R-TS-5)."""
    try:
        return parse_email(raw, received_at, channel)
    except Exception as exc:
        log.exception("parsing failed")
        return InboundMessage(channel=channel, raw=raw, received_at=received_at,
                              dedupe_key=_digest_key(raw),
                              problem=clean_line("unparseable message: "
                                                 f"{type(exc).__name__}: {exc}", 1000))


def decode_header(value: str | None) -> str:
    """An RFC 2047 header value (or raw 8-bit bytes smuggled in as surrogates) -> text."""
    if not value:
        return ""
    value = str(value)
    if "=?" not in value:
        return _unfold(unsurrogate(value))
    parts = []
    try:
        chunks = email.header.decode_header(unsurrogate(value))
    except (email.errors.HeaderParseError, ValueError, LookupError):
        return _unfold(unsurrogate(value))
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            parts.append(chunk)
        else:
            parts.append(decode_bytes(chunk, charset))
    # Plain chunks keep their own spaces and adjacent encoded words arrive merged.
    return _unfold("".join(parts))


def html_to_text(html: str) -> str:
    """Readable text of an HTML body (threading/quotes/html.py renders it, so the quote
    stripper reads the same lines as the comment holds)."""
    return to_text(html)


class _Body:
    """Walks the MIME tree once: text parts, HTML part, attachments, report parts."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs
        self.plain: list[str] = []
        self.html: str | None = None
        self.attachments: list[InboundAttachment] = []
        self.status_parts: list[Message] = []
        self.original_headers: Message | None = None

    def text(self) -> str:
        return "\n\n".join(p.strip("\n") for p in self.plain if p.strip())

    def collect(self, part: Message, in_report: bool = False, depth: int = 0) -> None:
        ctype = part.get_content_type()
        # message/* parts look multipart to compat32 (their payload is a list of
        # messages): they are report data or attached mail, never this mail's body.
        if in_report and ctype == "message/delivery-status":
            self.status_parts.append(part)
            return
        if in_report and ctype in ("message/rfc822", "text/rfc822-headers"):
            self.original_headers = _embedded_headers(part)
            return
        if ctype.startswith("multipart/") and depth < MAX_DEPTH:
            self._multipart(part, ctype, in_report, depth)
            return
        filename = _filename(part)
        disposition = _param_header(part, "content-disposition").split(";")[0].strip().lower()
        is_body_text = (ctype in ("text/plain", "text/html") and not filename
                        and disposition != "attachment")
        if not is_body_text:
            self._attachment(part, ctype, filename)
            return
        text = decode_bytes(self._payload(part), _charset(part))
        if ctype == "text/plain" and (_parameter(part, "format", "content-type") or "") \
                .lower() == "flowed":
            delsp = (_parameter(part, "delsp", "content-type") or "").lower() == "yes"
            text = unflow(text, delsp)
        self._text(ctype, text)

    def _text(self, ctype: str, content: str) -> None:
        if ctype == "text/plain":
            self.plain.append(content)
        elif self.html is None:
            self.html = content

    def _multipart(self, part: Message, ctype: str, in_report: bool, depth: int) -> None:
        children = part.get_payload()
        if not isinstance(children, list):
            # No boundary parameter, or it never appears: read it as a client would.
            self._lost_boundary(part, in_report, depth)
            return
        if ctype == "multipart/alternative":
            chosen = self._alternative(children)
            for child in children:
                if all(child is not c for c in chosen):
                    self._files_only(child, depth + 1)
            children = chosen
        for child in children:
            self.collect(child, in_report or ctype == "multipart/report", depth + 1)

    def _files_only(self, part: Message, depth: int) -> None:
        """The files of a rendering not read as the text (Apple Mail's attachments and
        pasted images inside the HTML branch, Outlook's text/calendar invitation): the
        other rendering carries the words, but the files exist only here."""
        if part.get_content_type().startswith("multipart/") and depth < MAX_DEPTH:
            children = part.get_payload()
            for child in children if isinstance(children, list) else []:
                self._files_only(child, depth + 1)
            return
        ctype = part.get_content_type()
        if ctype in ("text/plain", "text/html") and not _filename(part):
            return  # another rendering of the words
        self._attachment(part, ctype, _filename(part))

    def _lost_boundary(self, part: Message, in_report: bool, depth: int) -> None:
        """A multipart whose parts cannot be found by its declared boundary: re-split it
        on the boundary its body does use; failing that, the whole body is the text."""
        data = self._payload(part)
        match = _BOUNDARY_LINE.search(data)
        if match:
            boundary = match.group(1).decode("ascii", "replace").replace('"', "")
            rebuilt = email.message_from_bytes(
                f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode()
                + data)
            if isinstance(rebuilt.get_payload(), list):
                self.collect(rebuilt, in_report, depth + 1)
                return
        text = decode_bytes(data, _charset(part))
        self._text("text/html" if _looks_like_html(text) else "text/plain", text)

    @staticmethod
    def _alternative(children: list[Message]) -> list[Message]:
        # In multipart/alternative keep one rendering: plain text first (R-TH-2 reads it),
        # and the HTML one as well so HTML-only stripping has the markup at hand.
        plain = [c for c in children if c.get_content_type() == "text/plain"]
        html = [c for c in children if c.get_content_type() == "text/html"]
        other = [c for c in children if c.get_content_type().startswith("multipart/")]
        if plain:
            return plain[:1] + html[:1]
        return (other or html or children)[:1] + (html[:1] if other else [])

    def _attachment(self, part: Message, ctype: str, filename: str | None) -> None:
        ctype = clean_line(ctype, MAX_CTYPE) or "application/octet-stream"
        if ctype == "message/rfc822":
            inner = part.get_payload()
            data = self.blobs.restore(_as_bytes(inner[0])) if isinstance(inner, list) \
                and inner else self._payload(part)
            name = filename or (_header(inner[0], "subject") if isinstance(inner, list)
                                and inner else "") or "message"
            self.attachments.append(InboundAttachment(_eml_name(name), ctype, data))
            return
        extension = {"text/plain": ".txt", "text/html": ".html",
                     "text/calendar": ".ics"}.get(ctype, "")
        name = filename or f"attachment-{len(self.attachments) + 1}{extension}"
        self.attachments.append(InboundAttachment(name, ctype, self._payload(part)))

    def _payload(self, part: Message) -> bytes:
        payload = _undecoded(part)
        if isinstance(payload, str) and self.blobs.holds(payload):
            return self.blobs.decode(payload, str(part.get("content-transfer-encoding", "")))
        return self.blobs.restore(_payload(part))


def unflow(text: str, delsp: bool) -> str:
    """format=flowed text (RFC 3676: Thunderbird, Apple Mail) as the lines the writer
    typed: a line ending in a space continues on the next one of the same quote depth,
    the stuffed space at a line's start goes, and with delsp=yes so does the soft break's
    own space (it split a word)."""
    out: list[str] = []
    pending: tuple[int, str] | None = None
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        body = line[depth:]
        body = body[1:] if body.startswith(" ") else body
        soft = body.endswith(" ") and body.rstrip(" ") != "--"  # "-- " ends a text
        if soft and delsp:
            body = body[:-1]
        if pending is not None and pending[0] != depth:
            out.append(_quoted(*pending))
            pending = None
        pending = (depth, (pending[1] if pending else "") + body)
        if not soft:
            out.append(_quoted(*pending))
            pending = None
    if pending is not None:
        out.append(_quoted(*pending))
    return "\n".join(out)


def _quoted(depth: int, body: str) -> str:
    return f"{'>' * depth} {body}" if depth else body


def _looks_like_html(text: str) -> bool:
    return re.search(r"<(html|body|div|p|br|table)\b", text[:4096], re.I) is not None


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # a transfer encoding compat32 chokes on: the bytes as they are
        data = None
    if data is None:
        payload = _undecoded(part)
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) \
            else _as_bytes(part)
    return data


def _undecoded(part: Message):
    """The part's payload as parsed. compat32 decodes 8-bit text by the charset label
    even here, and a label with a NUL in it raises: then the stored payload itself."""
    try:
        return part.get_payload()
    except (LookupError, ValueError):
        return part._payload  # the parser's own attribute: the only way to the bytes


def _as_bytes(part: Message) -> bytes:
    # A multipart kept whole (nested past MAX_DEPTH): its source, as far as it renders.
    try:
        return part.as_bytes()
    except (RecursionError, LookupError, UnicodeError, ValueError):
        return b""


def _param_header(part: Message, name: str) -> str:
    """A parameter header (Content-Type, Content-Disposition) as text: raw 8-bit values
    (an unencoded UTF-8 file name) are decoded instead of becoming U+FFFD."""
    value = _raw_header(part, name)
    return unsurrogate(str(value)) if value is not None else ""


def _parameter(part: Message, param: str, *headers: str) -> str | None:
    # Parsed by the standard library's own parameter parser (RFC 2231 included); a value
    # with raw 8-bit bytes is decoded first and parsed on a copy holding just it.
    for name in headers:
        raw = _raw_header(part, name)
        if raw is None:
            continue
        probe = part
        if _has_8bit(raw):
            probe = Message()
            probe[name] = unsurrogate(str(raw))
        try:
            found = probe.get_param(param, header=name)
        except Exception:
            continue
        if found is not None:
            return email.utils.collapse_rfc2231_value(found) if isinstance(found, tuple) \
                else str(found)
    return None


def _has_8bit(value) -> bool:
    return not isinstance(value, str) or not value.isascii()


def _charset(part: Message) -> str | None:
    charset = _parameter(part, "charset", "content-type")
    return charset.lower() if charset else None


def _filename(part: Message) -> str | None:
    name = _parameter(part, "filename", "content-disposition")
    if name is None:
        name = _parameter(part, "name", "content-type")
    if name is None:
        return None
    # RFC 2231 is decoded already; RFC 2047 words (=?utf-8?B?…?=) are not.
    return clean_line(decode_header(name), MAX_FILENAME) or None


def _eml_name(subject: str) -> str:
    safe = re.sub(r"[\\/:*?\"<>|\r\n\t]+", " ", decode_header(subject)).strip()[:100]
    return clean_line(safe if safe.endswith(".eml") else f"{safe or 'message'}.eml")


def _embedded_headers(part: Message) -> Message | None:
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload else None
    if isinstance(payload, str):
        return email.message_from_string(payload)
    return None


def _delivery_status(msg: Message, body: _Body, sender: str | None) -> DeliveryStatus | None:
    """RFC 3464 report fields; for free-form bounces, the Message-ID quoted in the text."""
    if not body.status_parts and not _looks_like_bounce(msg, sender):
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
                    fields[key] = clean_line(_unfold(unsurrogate(str(block.get(key)))))
    original = None
    if body.original_headers is not None:
        original = _first_id(_header(body.original_headers, "message-id"))
    if original is None:
        match = _BODY_MESSAGE_ID.search(body.text())
        original = match.group(1) if match else None
    recipient = fields.get("final-recipient") or fields.get("original-recipient")
    if recipient and ";" in recipient:
        recipient = recipient.split(";", 1)[1].strip()
    return DeliveryStatus(original_message_id=clean_line(original, MAX_ID) or None,
                          recipient=clean_line(recipient, 500) or None,
                          action=clean_line(fields.get("action"), 40) or None,
                          status=clean_line(fields.get("status"), 20) or None,
                          diagnostic=clean_line(fields.get("diagnostic-code"), 2000) or None)


def _looks_like_bounce(msg: Message, sender: str | None) -> bool:
    """A delivery report without an RFC 3464 part: from the mailer daemon (often with no
    domain at all, "MAILER-DAEMON (Mail Delivery System)"), or with a null Return-Path
    and no sender of its own."""
    if msg.get("x-failed-recipients") is not None:
        return True
    if sender is not None:
        return sender.split("@")[0] in _BOUNCE_SENDERS
    from_value = _header(msg, "from").strip().lower()
    local = email.utils.parseaddr(from_value)[1].split("@")[0]
    if from_value.startswith(_BOUNCE_SENDERS) or local in _BOUNCE_SENDERS:
        return True
    return _header(msg, "return-path").strip() == "<>" and not local


def _problem(content: bytes, msg: Message, address: str | None, subject: str, text: str,
             body: _Body, report: DeliveryStatus | None) -> str | None:
    first = content[:1024].lstrip(b"\r\n").split(b"\n", 1)[0]
    if not msg.keys() or not _HEADER_LINE.match(first):
        return "unparseable message: it does not start with mail headers"
    if not address and report is None:
        from_value = clean_line(_header(msg, "from"), 200)
        if from_value:
            return f"no sender: the From address {from_value!r} is not a usable address"
        return "no sender: the message has no usable From address"
    # A customer who writes only a subject has made a request.
    if not subject and not text.strip() and not body.attachments and not body.status_parts:
        return "empty message: no subject, no text and no attachments"
    return None


def _sender(msg: Message) -> tuple[str | None, str | None]:
    pairs = _address_pairs(msg, "from")
    if not pairs:
        return None, None
    return pairs[0]


def _addresses(msg: Message, name: str) -> list[str]:
    return [address for _, address in _address_pairs(msg, name)]


def _address_pairs(msg: Message, name: str) -> list[tuple[str | None, str]]:
    # Raw 8-bit values are decoded first: an internationalised address (RFC 6531/6532,
    # a Cyrillic local part or domain) is an address like any other.
    values = [unsurrogate(str(value)) for key, value in msg.raw_items()
              if key.lower() == name]
    out = []
    for display, address in email.utils.getaddresses(values):
        address = address.strip().lower()
        if not _usable_address(address):
            continue
        out.append((clean_line(decode_header(display), MAX_NAME) or None, address))
    return out


def _usable_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    # A quoted local part may hold spaces ("ivan petrov"@romashka.ru, RFC 5321 4.1.2).
    quoted = len(local) > 1 and local.startswith('"') and local.endswith('"')
    return (bool(at and local and domain) and len(address) <= MAX_ADDRESS
            and clean_line(address) == address and " " not in domain
            and (quoted or " " not in local))


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


def _ids(value: str) -> tuple[str, ...]:
    return tuple(clean_line(found, MAX_ID) for found in _MSG_ID.findall(value)[:100])


def _dedupe_key(message_id: str | None, content: bytes, msg: Message) -> str:
    """What makes a second delivery the same message (R-TH-9): its Message-ID and its
    content. Trace headers a server adds on the way (Received, Return-Path, Delivered-To)
    and line-end or re-wrapping differences do not count; another sender, subject, date
    or text under a reused Message-ID does, so a careless client or an attacker reusing
    an ID cannot make us drop a mail."""
    if not message_id:
        return _digest_key(content)
    digest = hashlib.sha256()
    for name in ("from", "date", "subject"):
        digest.update(str(_raw_header(msg, name) or "").encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    blank = _BLANK_LINE.search(content)
    body = memoryview(content)[blank.end():] if blank else memoryview(b"")
    for start in range(0, len(body), _HASH_CHUNK):
        digest.update(bytes(body[start:start + _HASH_CHUNK]).translate(None, _SPACES))
    return f"mid:{digest.hexdigest()[:24]}:{message_id}"[:500]


def _digest_key(raw: bytes) -> str:
    # No Message-ID: the same bytes delivered twice are still the same message.
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value)
