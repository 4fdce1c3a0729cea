"""Header values for outgoing mail that every decoder reads back exactly, and that no value
a customer sent can break.

Two failures made this module necessary (issue #15):
- Python's own folding (policy.default) splits a long non-ASCII header into RFC 2047
  encoded words at a space and puts that space *between* the words, where decoders drop
  it (RFC 2047 §6.2): "принтер в бухгалтерии" arrived as "принтер вбухгалтерии". We
  encode such values ourselves with `email.header.Header`, whose encoded words carry
  every space inside them, and store the result with `set_raw`, so it is not refolded.
  Python's address parser has the same fault with several encoded words in a display
  name, so a display name is always one encoded word.
- A subject, name or Message-ID with CR, LF, U+2028, U+0085 or another control character
  makes policy.default refuse the header, and the mail could never be sent. Values are
  cleaned here (one space for each run of such characters), and Message-IDs that are not
  well formed are left out of In-Reply-To/References rather than sent.
"""

from __future__ import annotations

import email.policy
import re
from email.charset import Charset
from email.header import Header
from email.message import EmailMessage
from email.utils import formataddr

# C0 and C1 controls (tab, CR, LF, U+0085 …), DEL, and the Unicode line and paragraph
# separators: all of them end a header line for some parser.
_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# A msg-id as RFC 5322 §3.6.4 allows it, printable ASCII only.
_MESSAGE_ID = re.compile(r"^<[!-;=?-~]+@[!-;=?-~]+>$")
# RFC 5322 §2.1.1: lines of at most 78 characters; Header counts the name itself.
MAX_LINE = 76
# The hard limit of a line (RFC 5322 §2.1.1): longer plain values are encoded and folded.
MAX_UNFOLDED = 998
# A display name is one encoded word on a line of its own: this keeps it under 998.
MAX_NAME = 180
UTF8 = Charset("utf-8")
# Values stored with set_raw are sent as they are; everything else is folded as usual.
# 7bit: bodies are encoded too (quoted-printable or base64), so the bytes we hand the
# relay need neither 8BITMIME nor SMTPUTF8.
POLICY = email.policy.SMTP.clone(refold_source="none", cte_type="7bit")


def clean(value: str | None) -> str:
    """A value safe for one header line: control characters become single spaces."""
    return _BREAKING.sub(" ", value or "").strip()


def message_ids(values: list[str | None]) -> list[str]:
    """The well-formed Message-IDs among `values`, in order, each once."""
    kept = [v.strip() for v in values if v and _MESSAGE_ID.match(v.strip())]
    return list(dict.fromkeys(kept))


def needs_encoding(value: str) -> bool:
    # "=?" in plain text would be taken for an encoded word by the receiving client.
    return not value.isascii() or "=?" in value


def encode(name: str, value: str) -> str:
    """RFC 2047 encoded words, folded so that every space is inside a word."""
    return Header(value, "utf-8", maxlinelen=MAX_LINE, header_name=name).encode(linesep="\n")


def set_header(mime: EmailMessage, name: str, value: str) -> None:
    """Set an unstructured header (Subject) from any text.

    Plain ASCII goes on one line, unfolded: some decoders (mail-parser) return a folded
    header with its line break. The message's policy must keep raw values as they are
    (`refold_source="none"`, see POLICY).
    """
    value = clean(value)
    if needs_encoding(value) or len(name) + len(value) + 2 > MAX_UNFOLDED:
        mime.set_raw(name, encode(name, value))
    else:
        mime.set_raw(name, value)


def set_address(mime: EmailMessage, name: str, display_name: str, address: str) -> None:
    """Set From/To-like headers: a display name (any text) and one address."""
    display_name = clean(display_name)
    address = clean(address)
    if not display_name:
        mime[name] = address
    elif needs_encoding(display_name):
        # One encoded word, however long: Python's address parser puts a space between
        # two encoded words of a display name even where the name had none.
        word = UTF8.header_encode(display_name[:MAX_NAME])
        mime.set_raw(name, f"{word}\n <{address}>")
    else:
        mime.set_raw(name, formataddr((display_name, address)))
