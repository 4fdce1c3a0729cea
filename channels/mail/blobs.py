"""Large encoded bodies kept out of the standard library's parser.

The parser of `email` splits a mail into line objects and joins them again; a 40 MB mail
with a 30 MB attachment costs it over 300 MB. Help desks get scans and photos every day,
so before parsing, every long run of base64-alphabet lines (an encoded attachment; a
boundary, a header and a blank line are never part of such a run) is replaced by a short
placeholder line, and the part's bytes are read back from the raw mail only when that
part is decoded. The parse then costs about the mail's size again, not ten times it.
"""

from __future__ import annotations

import binascii
import quopri
import re

# What compat32's get_payload(decode=True) runs on a base64 part (private, but the one
# definition of how the standard library reads broken base64).
from email._encoded_words import decode_b

# Runs shorter than this are left to the parser: the saving would not pay for the scan.
# (The parser handles a base64 body line by line: a 16 KB one already costs it more
# than the scan of the whole mail.)
MIN_RUN = 16 * 1024
# MIN_RUN until it came down to 16 KB: shorter runs were the standard library's to
# decode, and a damaged one still decodes the way it did then (decode_b's leniency).
PARSER_DECODED = 256 * 1024
# A run is looked for only where one starts (the lookbehind): tried at every position
# inside a shorter run, the repeat would rescan the rest of it each time, quadratic in
# its length (a mail of three 120 KB photos, each run under MIN_RUN: a minute).
_RUN = re.compile(rb"(?<![A-Za-z0-9+/=\r\n])[A-Za-z0-9+/=\r\n]{%d,}" % MIN_RUN)
_TOKEN = re.compile(rb"\x00helpgate-blob-(\d+)\x00")
_NEWLINES = b"\r\n"
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


class Blobs:
    """The raw mail's long encoded runs, each replaced by a placeholder line."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.spans: list[tuple[int, int]] = []

    def reduce(self) -> bytes:
        """The mail with its long runs replaced; the mail itself when it has none."""
        if len(self.raw) < MIN_RUN:
            return self.raw
        pieces, position = [], 0
        for match in _RUN.finditer(self.raw):
            start, end = self._whole_lines(match.start(), match.end())
            if end - start < MIN_RUN:
                continue
            pieces += [memoryview(self.raw)[position:start],
                       b"\x00helpgate-blob-%d\x00" % len(self.spans)]
            self.spans.append((start, end))
            position = end
        if not self.spans:
            return self.raw
        pieces.append(memoryview(self.raw)[position:])
        return b"".join(pieces)

    def _whole_lines(self, start: int, end: int) -> tuple[int, int]:
        # Only complete lines of a body: a run may begin inside a header line ("…base64"),
        # and the blank lines around a body belong to the structure, not the run.
        raw = self.raw
        if start > 0 and raw[start - 1] != ord("\n"):
            start = raw.find(b"\n", start, end) + 1 or end
        while start < end and raw[start] in _NEWLINES:
            start += 1
        while end > start and raw[end - 1] in _NEWLINES:
            end -= 1
        return start, end

    def holds(self, text: str | bytes | None) -> bool:
        if not self.spans or text is None:
            return False
        marker = b"\x00helpgate-blob-" if isinstance(text, bytes) else "\x00helpgate-blob-"
        return marker in text

    def restore(self, data: bytes) -> bytes:
        """Bytes with every placeholder replaced by the raw bytes it stands for."""
        if not self.holds(data):
            return data
        return _TOKEN.sub(lambda m: self._span(int(m.group(1))), data)

    def _base64_pieces(self, data: bytes) -> list[bytes] | None:
        """Each run decoded straight from the raw mail, without first copying it whole;
        None when a piece does not hold whole base64 quanta (then it is joined first)."""
        pieces, position = [], 0
        for match in _TOKEN.finditer(data):
            start, end = self.spans[int(match.group(1))]
            chars = end - start - self.raw.count(b"\n", start, end) - \
                self.raw.count(b"\r", start, end)
            before = _NOT_BASE64.sub(b"", data[position:match.start()])
            if chars % 4 or len(before) % 4:
                return None
            try:
                pieces += [binascii.a2b_base64(before),
                           binascii.a2b_base64(memoryview(self.raw)[start:end])]
            except binascii.Error:
                return None
            position = match.end()
        rest = _NOT_BASE64.sub(b"", data[position:])
        try:
            pieces.append(binascii.a2b_base64(rest))
        except binascii.Error:
            return None
        return pieces

    def _longest(self, data: bytes) -> int:
        """The longest run a placeholder in `data` stands for."""
        return max((self.spans[int(match.group(1))][1] - self.spans[int(match.group(1))][0]
                    for match in _TOKEN.finditer(data)), default=0)

    def _span(self, index: int) -> bytes:
        start, end = self.spans[index]
        return self.raw[start:end]

    def decode(self, payload: str, transfer_encoding: str) -> bytes:
        """A part's body from its placeholder-holding payload, decoded as the part says."""
        data = payload.encode("ascii", "surrogateescape")
        encoding = transfer_encoding.strip().lower()
        if encoding == "base64":
            pieces = self._base64_pieces(data)
            if pieces is not None:
                return b"".join(pieces)
        encoded = self.restore(data)
        if encoding == "base64":
            if self._longest(data) < PARSER_DECODED:
                # Damaged base64 in a body the standard library used to decode itself
                # (before MIN_RUN came down): decoded as it decodes it.
                return decode_b(b"".join(encoded.splitlines()))[0]
            try:
                return binascii.a2b_base64(encoded)
            except binascii.Error:
                # Broken padding: what decodes, as clients show it, never an error.
                clean = _NOT_BASE64.sub(b"", encoded)
                return binascii.a2b_base64(clean[:len(clean) - len(clean) % 4])
        if encoding == "quoted-printable":
            return quopri.decodestring(encoded)
        return encoded
