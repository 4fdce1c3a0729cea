"""Bytes in whatever charset a mail claims -> text, and text made safe to store.

Mail lies about its charset. Real clients do not decode a label literally: they read it
as the WHATWG Encoding Standard says, which maps legacy labels to the superset Windows
actually wrote (Shift_JIS -> CP932, GB2312 -> GB18030, EUC-KR -> CP949, ISO-8859-1 and
US-ASCII -> windows-1252, …). We decode the same way, so a subject written by Outlook on
a Japanese Windows reads as the customer typed it. A label that names no text encoding at
all (`base64`, `hex`, garbage, a NUL) is as good as no label: we detect.

Whatever comes out of a mail must also be storable on every backend: PostgreSQL refuses
NUL in text, the database drivers refuse lone surrogates (what Python keeps of 8-bit bytes
it could not decode), and a header value must stay one line. `clean_text` and
`clean_line` are the one place that makes text so (R-TS-5: the same mail gives the same
decision on SQLite and PostgreSQL).
"""

from __future__ import annotations

import codecs
import re

import cchardet

# Detected encodings we trust; below this confidence Cyrillic fallbacks are tried first.
MIN_CONFIDENCE = 0.5
FALLBACK = "windows-1251"
# East-Asian multibyte guesses need this many 8-bit bytes before they are believed.
MIN_MULTIBYTE_EVIDENCE = 16
_MULTIBYTE = {"big5", "big5hkscs", "gb2312", "gbk", "gb18030", "euc_jp", "euc_kr", "cp949",
              "shift_jis", "cp932", "iso2022_jp", "iso2022_kr", "hz", "johab", "euc_tw",
              "cp950"}

# codecs' canonical name of a label -> the decoder WHATWG uses for it.
_SUPERSET = {
    "shift_jis": "cp932", "euc_kr": "cp949", "gb2312": "gb18030", "gbk": "gb18030",
    "iso8859-1": "cp1252", "ascii": "cp1252", "iso8859-9": "cp1254",
    "iso8859-11": "cp874", "tis-620": "cp874", "big5": "big5hkscs",
}
# Labels codecs does not know under these spellings.
_ALIASES = {
    "x-sjis": "cp932", "windows-31j": "cp932", "x-gbk": "gb18030", "windows-874": "cp874",
    "x-mac-cyrillic": "mac-cyrillic", "x-user-defined": "cp1252", "unicode-1-1-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8", "utf8mb4": "utf-8", "x-cp1251": "cp1251", "win-1251": "cp1251",
}
# 8-bit bytes prove an ASCII label wrong: such mail is far more often unlabelled UTF-8
# or a national charset (KOI8-R, windows-1251) than windows-1252. UTF-8 and then a
# confident detection are tried first; windows-1252 is what is left.
_WRONG_WHEN_8BIT = {"ascii"}
_SURROGATE = re.compile("[\udc80-\udcff]")
# Characters that end a line for some reader (CR, LF, VT, FF, NEL, LS, PS) or are
# control characters with no place in a one-line value.
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Bidirectional controls: in a one-line value they only serve to disguise it (a file
# "invoice\u202efdp.exe" shows as "invoiceexe.pdf").
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_C0_IN_TEXT = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _whatwg_c1(error: UnicodeDecodeError) -> tuple[str, int]:
    # windows-1252 leaves five bytes undefined; WHATWG maps them to the C1 code points.
    return error.object[error.start:error.end].decode("latin-1"), error.end


codecs.register_error("helpgate-c1", _whatwg_c1)


def text_codec(label: str | None) -> str | None:
    """The decoder for a declared charset label; None when it names no text encoding."""
    if not label:
        return None
    label = label.replace("\x00", "").strip().strip("\"'").strip().lower()
    if not label or len(label) > 64:
        return None
    label = _ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None  # base64, hex, rot13, zlib: byte transforms, not charsets
    return info.name


def decode_bytes(data: bytes, declared: str | None) -> str:
    """Bytes in a declared charset that may be wrong, unknown or missing -> text."""
    codec = text_codec(declared)
    if codec in _WRONG_WHEN_8BIT and not data.isascii():
        return _decode_first(data, ["utf-8"]) or _detected(data) or _decode_first(
            data, ["cp1252"])
    if codec == "iso2022_jp":
        decoded = _decode_first(data, ["iso2022_jp"]) or _jis_x0213(data)
        if decoded is not None:
            return decoded
    candidates = [_SUPERSET.get(codec, codec)] if codec else []
    if "utf-8" not in candidates:
        candidates.append("utf-8")
    return (_decode_first(data, candidates)
            or (_mostly_utf8(data) if codec in (None, "utf-8") else None)
            or _detected(data) or _lines(data.decode(FALLBACK, errors="replace")))


def _mostly_utf8(data: bytes) -> str | None:
    """UTF-8 text with a few bytes that are not (a disclaimer a mail filter appended in
    windows-1251, a body cut inside a character): the UTF-8 stays UTF-8 and only the
    stray bytes are read otherwise. None when UTF-8 is not the text's main encoding."""
    # Adjacent stray bytes are one stretch of legacy text (a word of the disclaimer).
    text = data.decode("utf-8", "helpgate-stray").replace("\uffff\ufffe", "")
    stray = text.count("\ufffe")
    multibyte = sum(1 for ch in _STRAY.sub("", text) if ch > "\x7f")
    if stray == 0 or multibyte < 2 * stray:
        return None
    if stray == 1 and _cut_at_end(text):
        return _lines(_STRAY.sub("\ufffd", text))  # a character cut off at the end
    return _lines(_STRAY.sub(_stray_text, text))


def _cut_at_end(text: str) -> bool:
    """The one stray sequence ends the text and is the start of a UTF-8 character."""
    match = _STRAY.search(text)
    if match is None or match.end() != len(text):
        return False
    raw = match.group(1).encode("latin-1")
    needed = 1 if b"\xc2" <= raw[:1] <= b"\xdf" else 2 if b"\xe0" <= raw[:1] <= b"\xef" \
        else 3 if b"\xf0" <= raw[:1] <= b"\xf4" else 0
    return 0 < len(raw) <= needed and all(0x80 <= b <= 0xBF for b in raw[1:])


def _stray_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    # Marked, with the bytes kept as Latin-1 between markers, for _mostly_utf8 to decode.
    chunk = error.object[error.start:error.end]
    return "\ufffe" + chunk.decode("latin-1") + "\uffff", error.end


codecs.register_error("helpgate-stray", _stray_bytes)
_STRAY = re.compile("\ufffe([^\uffff]*)\uffff")


def _stray_text(match: re.Match) -> str:
    return match.group(1).encode("latin-1").decode(FALLBACK, errors="replace")


def _jis_x0213(data: bytes) -> str | None:
    """ISO-2022-JP as Windows writes it: NEC's row 13 (①, ㈱, №) inside JIS X 0208
    escapes, which Python's iso2022_jp refuses. JIS X 0213 plane 1 holds JIS X 0208 at
    the same codes and NEC's row 13 too, so the same bytes read under its escape."""
    try:
        return _lines(data.replace(b"\x1b$B", b"\x1b$(Q").decode("iso2022_jp_2004"))
    except UnicodeDecodeError:
        return None


def _decode_first(data: bytes, charsets: list[str]) -> str | None:
    for charset in charsets:
        errors = "helpgate-c1" if charset == "cp1252" else "strict"
        try:
            return _lines(data.decode(charset, errors))
        except (UnicodeDecodeError, LookupError):
            continue
    return None


def _detected(data: bytes) -> str | None:
    # The declared charset is wrong or unknown: detect. uchardet (cchardet) tells
    # windows-1251 from KOI8-R even on a short line, which is what Russian mail needs.
    guess = cchardet.detect(data)
    encoding = text_codec(guess.get("encoding"))
    if encoding in _MULTIBYTE and sum(b > 0x7F for b in data[:4096]) < MIN_MULTIBYTE_EVIDENCE:
        return None  # "Да" in windows-1251 is two bytes any CJK charset also reads
    if encoding and (guess.get("confidence") or 0) >= MIN_CONFIDENCE:
        return _decode_first(data, [_SUPERSET.get(encoding, encoding)])
    return None


def _lines(text: str) -> str:
    # Mail travels with CRLF line ends; stored text uses "\n" only.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def unsurrogate(value: str) -> str:
    """Text that still holds undecoded 8-bit bytes (as surrogates) -> decoded text.

    RFC 6532 allows raw UTF-8 in headers (internationalised addresses); older clients put
    raw windows-1251 or KOI8-R there. Either way the bytes are decoded, never dropped.
    """
    if value.isascii() or not _SURROGATE.search(value):
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"), None)


def clean_text(value: str | None) -> str:
    """Multi-line text (a body) as every backend stores it: decoded, no NUL, no C0
    controls but tab and line ends."""
    if not value:
        return ""
    value = unsurrogate(value)
    return _C0_IN_TEXT.sub("", value) if _C0_IN_TEXT.search(value) else value


def clean_line(value: str | None, limit: int | None = None) -> str:
    """A one-line value (subject, name, file name, date, id): decoded, every line break
    and control character a space, cut to `limit` characters."""
    if not value:
        return ""
    if value.isprintable():  # the common case, checked in C: nothing to clean
        value = value.strip()
        return value[:limit].rstrip() if limit is not None and len(value) > limit else value
    value = unsurrogate(value)
    if "\x00" in value:
        value = value.replace("\x00", "")
    value = _BIDI.sub("", value)
    if _LINE_BREAKING.search(value):
        value = re.sub(" {2,}", " ", _LINE_BREAKING.sub(" ", value))
    value = value.strip()
    return value[:limit].rstrip() if limit is not None and len(value) > limit else value
