"""Quote stripping: only the customer's new words out of a reply (R-TH-2).

`strip_quotes` is the seam the rest of helpgate calls (the quote_strip rule, the bench).
`explain` gives the same text and the names of the layers that cut, in order, so a wrong
cut can be traced to the rule that made it. The layers, in order:

1. html        — HTML-only mail: the clients' quote containers are cut in the HTML
                 (gmail_quote, divRplyFwdMsg, Outlook's border block, moz-cite-prefix,
                 blockquotes), then the rest is converted to text;
2. separator   — our own separator line, quoted, wrapped or mangled: all below it goes;
3. forward     — a forwarded message stops here: kept whole, with its forward header;
4. header_block — Outlook/Samsung/Lotus reply headers ("От:/Отправлено:/Кому:/Тема:",
                 "-----Original Message-----") in the languages of patterns.py;
5. quote_markers — ">" blocks, keeping the customer's own segments of an interleaved or
                 bottom-posted reply, with the attribution line above each quote;
6. attribution — "On … wrote:" followed by an unquoted original (mobile clients);
7. talon       — last, for what the layers above do not know, and only when what it
                 would cut looks like history (an address or quoted lines), so a
                 "Date:" line in the customer's own text does not cut them short.

What is kept: everything the customer wrote, signatures and "Sent from my iPhone" too;
a message with no quote whole.
"""

from __future__ import annotations

import logging
import re
import sys

from helpgate.channels.mail.parse import html_to_text
from helpgate.threading.quotes import html as html_layer
from helpgate.threading.quotes import text as layers

# talon's package imports its signature module, which pulls in scikit-learn for a second
# and then fails with current scikit-learn anyway (PROTOCOLS.md). We use only its
# quotations module, so the signature module is marked unavailable before talon loads.
sys.modules.setdefault("talon.signature", None)
from talon import quotations as _talon  # noqa: E402

# What talon.init() does without a signature module: the XPath helpers its HTML cut uses.
_talon.register_xpath_extensions()
log = logging.getLogger("helpgate.quotes")

# Every talon splitter and quote marker needs one of these (a colon, ">", "@", a dash rule,
# or the verb of the colon-less "On …, X wrote"): a text without any has nothing talon
# could cut, and skipping it saves most of the stripping time of a fresh request.
_TALON_MAY_CUT = re.compile(r"[:>@]|--|wrote|sent|écrit|napisał|schreef|verzond|"
                            r"geschreven|schrieb|skrev|đã viết", re.I)


def strip_quotes(text: str, html: str | None, separators: list[str], subject: str = "") -> str:
    """The new text of a reply. `html` is given only for an HTML-only message."""
    return explain(text, html, separators, subject)[0]


def explain(text: str, html: str | None, separators: list[str],
            subject: str = "") -> tuple[str, list[str]]:
    """The new text and the layers that cut it, in order."""
    trail: list[str] = []
    if html is not None:
        cut_html = html_layer.cut(html)
        if cut_html is not None:
            text = html_to_text(cut_html)
            trail.append("html")
    lines = layers.split_shared_line(text.replace("\r\n", "\n").split("\n"))

    def apply(name: str, result: list[str] | None) -> None:
        nonlocal lines
        if result is not None and result != lines:
            lines = result
            trail.append(name)

    apply("separator", layers.separator(lines, separators))
    if layers.is_forward(lines, subject):
        return "\n".join(lines).strip(), [*trail, "forward"]
    apply("header_block", layers.header_block(lines))
    apply("quote_markers", layers.quote_markers(lines))
    apply("attribution", layers.attribution_cut(lines))
    if not trail:
        apply("talon", _talon_fallback(lines))
    if trail:  # something was cut: an attribution left at the end belongs to it
        apply("attribution", layers.drop_attribution(lines))
    return "\n".join(lines).strip(), trail


def _talon_fallback(lines: list[str]) -> list[str] | None:
    text = "\n".join(lines)
    if not _TALON_MAY_CUT.search(text):
        return None
    kept = _talon.extract_from_plain(text).strip()
    if not kept or kept == text.strip():
        return None
    tail = text[len(kept):] if text.startswith(kept) else text
    looks_like_history = "@" in tail or sum(
        1 for line in tail.split("\n") if line.lstrip().startswith(">")) >= 2
    return kept.split("\n") if looks_like_history else None
