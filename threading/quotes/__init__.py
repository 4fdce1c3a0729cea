"""Quote stripping: the customer's new words out of a reply (R-TH-2).

One function, `strip_quotes`, is the seam the rest of helpgate calls. This first version
cuts at our separator line (in any of its quoted or wrapped forms), drops the attribution
line a client writes above the quote, and lets talon find the remaining quote markers.
"""

from __future__ import annotations

import logging
import re
import sys

from helpgate.channels.mail.parse import html_to_text

# talon's package imports its signature module, which pulls in scikit-learn for a second
# and then fails with current scikit-learn anyway (PROTOCOLS.md). We use only its
# quotations module, so the signature module is marked unavailable before talon loads.
sys.modules.setdefault("talon.signature", None)
from talon import quotations as _talon  # noqa: E402

# What talon.init() does without a signature module: the XPath helpers its HTML cut uses.
_talon.register_xpath_extensions()
log = logging.getLogger("helpgate.quotes")

_NON_WORD = re.compile(r"[\W_]+", re.U)
_QUOTE_PREFIX = re.compile(r"^(\s*>)+\s?")
_FORWARD = re.compile(
    r"^\s*(-{2,}\s*(forwarded message|original message|пересылаемое сообщение|"
    r"пересланное сообщение)\s*-{2,}|begin forwarded message:|"
    r"-{2,}\s*перенаправленное сообщение\s*-{2,})", re.I | re.M)
_FORWARD_SUBJECT = re.compile(r"^\s*(fwd?|пересл|переслано)\s*:", re.I)
# An attribution line ends with a colon and names a date or an address ("On … wrote:",
# "23 нояб. 2026 г., в 10:00, Support <support@…>:", "Иван пишет:").
_ATTRIBUTION = re.compile(r"(@|\d|wrote|писал|пишет|schrieb|écrit|escribió).{0,200}:\s*$", re.I)
# A reply header block's fields, in the languages of our customers' clients.
_HEADER_FIELD = re.compile(
    r"^\s*\*?(from|sent|to|cc|subject|date|от|отправлено|кому|копия|тема|дата|von|gesendet|"
    r"an|betreff|de|envoyé|à|objet)\*?\s*:", re.I)
# The rule or banner above such a block.
_HEADER_RULE = re.compile(r"^\s*(_{5,}|-{3,}\s*[^-]*\s*-{3,}|={5,})\s*$")
# The first half of an attribution the client wrapped: it ends inside the address or
# after a time ("… 10:00 AM Support <", "… 2026 г., в 10:00,").
_WRAPPED_HALF = re.compile(r"(<|,|\d{1,2}:\d{2}(\s*[AP]M)?)$", re.I)
# Every talon splitter and quote marker needs one of these (a colon, ">", "@", a dash rule,
# or the verb of the colon-less "On …, X wrote"): a text without any has nothing talon
# could cut, and skipping it saves most of the stripping time of a fresh request.
_TALON_MAY_CUT = re.compile(r"[:>@]|--|wrote|sent|écrit|napisał|schreef|verzond|"
                            r"geschreven|schrieb|skrev|đã viết", re.I)


def strip_quotes(text: str, html: str | None, separators: list[str], subject: str = "") -> str:
    """The new text of a reply. `html` is given only for an HTML-only message."""
    if html is not None:
        text = _html_reply(html, text)
    if _FORWARD_SUBJECT.match(subject or "") or _is_forward(text):
        # A forwarded message is kept whole, with its forward header (R-TH-2).
        return _cut_at_separator(text, separators).strip()
    cut = _cut_at_separator(text, separators)
    if cut != text:
        return _drop_attribution(cut).strip()
    if not _TALON_MAY_CUT.search(text):
        return text.strip()
    return _talon.extract_from_plain(text).strip()


def _html_reply(html: str, fallback: str) -> str:
    """HTML-only mail is cut in the HTML, then converted (R-TH-2)."""
    try:
        return html_to_text(_talon.extract_from_html(html))
    except Exception:  # talon/lxml refuse some markup: keep the whole text, lose nothing
        log.warning("HTML quote detection failed; keeping the whole text", exc_info=True)
        return fallback


def _is_forward(text: str) -> bool:
    match = _FORWARD.search(text)
    # Only a forward at the top: one inside a quote belongs to old history.
    return match is not None and not text[: match.start()].strip()


def _normalize(line: str) -> str:
    return _NON_WORD.sub("", _QUOTE_PREFIX.sub("", line)).lower()


def _cut_at_separator(text: str, separators: list[str]) -> str:
    """Everything above the first line holding one of our separators (quoted, wrapped)."""
    keys = [_normalize(s) for s in separators if _normalize(s)]
    lines = text.splitlines()
    normal = [_normalize(line) for line in lines]
    for index, current in enumerate(normal):
        if not current:
            continue
        # A client may wrap the separator: look at this line joined with the next one,
        # and cut here if a separator starts on this line.
        joined = current + (normal[index + 1] if index + 1 < len(normal) else "")
        for key in keys:
            position = joined.find(key)
            if 0 <= position < len(current):
                return "\n".join(lines[:index])
    return text


def _drop_attribution(text: str) -> str:
    """Drop what a client writes between the new text and the quote it cut at: a reply
    header block (Outlook "От:/Отправлено:/Кому:/Тема:", "-----Original Message-----")
    or an attribution line ("On … wrote:"), also when the client wrapped it in two."""
    lines = text.rstrip().splitlines()
    header_lines = 0
    while lines and _HEADER_FIELD.match(lines[-1]):
        lines.pop()
        header_lines += 1
    if header_lines:
        while lines and (not lines[-1].strip() or _HEADER_RULE.match(lines[-1])):
            lines.pop()
        return "\n".join(lines)
    if not lines or not _ATTRIBUTION.search(lines[-1].strip()):
        return text
    lines.pop()
    if lines and _WRAPPED_HALF.search(lines[-1].strip()):
        lines.pop()
    return "\n".join(lines)
