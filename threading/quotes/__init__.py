"""Quote stripping: only the customer's new words out of a reply (R-TH-2).

`strip_quotes` is the seam the rest of helpgate calls (the quote_strip rule, the bench).
`explain` gives the same text and every cut made, in order: the layer that cut and the
evidence it cut on, so a wrong cut can be traced to the rule and the reason. The layers:

1. html        — HTML-only mail: the clients' quote containers are cut in the HTML
                 (gmail_quote, divRplyFwdMsg, Outlook's border block, moz-cite-prefix,
                 blockquotes), then the rest is converted to text;
2. separator   — our own separator line, quoted, wrapped or mangled: all below it goes;
3. forward     — a forwarded message stops here: kept whole, with its forward header;
4. header_block — Outlook/Samsung/Lotus reply headers ("От:/Отправлено:/Кому:/Тема:",
                 "-----Original Message-----") in the languages of patterns.py, when the
                 layout confirms them (a rule line above, the answered subject, our words);
5. quote_markers — ">" blocks with evidence they are history (an attribution above, our
                 separator or words inside, the top or the end of the message), keeping
                 the customer's own segments of an interleaved or bottom-posted reply and
                 the customer's pasted ">" lines;
6. attribution — a strong "On … wrote:" followed by an unquoted original (mobile clients);
7. talon       — last, for what the layers above do not know, and only when what it
                 would cut looks like history and starts with nothing the layers above
                 looked at and kept;
8. history     — on a known ticket, every cut line that matches nothing we sent or the
                 ticket holds is the customer's and is given back (an answer typed
                 inside an Outlook quote, a pasted log below a quote).

What is kept: everything the customer wrote, signatures and "Sent from my iPhone" too;
a message with no quote whole.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from functools import cache
from typing import NamedTuple

from helpgate.threading.message import InboundMessage
from helpgate.threading.quotes import html as html_layer
from helpgate.threading.quotes import text as layers
from helpgate.threading.quotes.history import PREFACED, History, Numbered, restore

log = logging.getLogger("helpgate.quotes")


@cache
def _talon():
    """talon's quotations module, imported at its first use: a tenth of a second that
    every command, every parser worker and most mail never need.

    talon's package imports its signature module, which pulls in scikit-learn for a second
    and then fails with current scikit-learn anyway (PROTOCOLS.md). We use only its
    quotations module, so the signature module is marked unavailable before talon loads."""
    sys.modules.setdefault("talon.signature", None)
    from talon import quotations
    # What talon.init() does without a signature module: the XPath helpers of its HTML cut.
    quotations.register_xpath_extensions()
    return quotations

# Every talon splitter and quote marker needs one of these (a colon, ">", "@", a dash rule,
# or the verb of the colon-less "On …, X wrote"): a text without any has nothing talon
# could cut, and skipping it saves most of the stripping time of a fresh request.
_TALON_MAY_CUT = re.compile(r"[:>@]|--|wrote|sent|écrit|napisał|schreef|verzond|"
                            r"geschreven|schrieb|skrev|đã viết", re.I)


class Cut(NamedTuple):
    """One cut: the layer that made it and the evidence it had."""

    layer: str
    evidence: str


class Reading(NamedTuple):
    """`explain` of a message on no ticket (no history, no notifications of ours to
    match), with the separators it was worked out with: it depends on nothing else, so a
    parser worker can work it out for a new request (gateway/parse_worker.py)."""

    separators: tuple[str, ...]
    text: str
    cuts: tuple[Cut, ...]


def read_alone(message: InboundMessage, separators: tuple[str, ...]) -> Reading:
    """The reading of a message's text on no ticket."""
    text, cuts = explain(message.text, message.html if message.text_from_html else None,
                         separators, subject=message.subject)
    return Reading(separators, text, tuple(cuts))


def strip_quotes(text: str, html: str | None, separators: Sequence[str], subject: str = "",
                 history: Sequence[str] = ()) -> str:
    """The new text of a reply. `html` is given only for an HTML-only message; `history`
    holds what we sent and stored on the reply's ticket, when it is known."""
    return explain(text, html, separators, subject, history)[0]


def explain(text: str, html: str | None, separators: Sequence[str], subject: str = "",
            history: Sequence[str] = (), templates: Numbered | None = None,
            number: int | None = None) -> tuple[str, list[Cut]]:
    """The new text and the cuts that made it, in order. `templates`: the words of our
    notifications about ticket `number` (history.Numbered), history like `history`."""
    known = History(history, separators, subject, templates, number)
    trail: list[Cut] = []
    if html is not None:
        cut_html = html_layer.cut(html)
        if cut_html is not None:
            text = html_layer.to_text(cut_html)
            trail.append(Cut("html", "the client's quote container in the HTML"))
    lines = layers.split_shared_line(text.replace("\r\n", "\n").split("\n"))
    original = list(lines)

    def apply(name: str, result: layers.Kept | None) -> None:
        nonlocal lines
        if result is not None and result.lines != lines:
            lines = result.lines
            trail.append(Cut(name, result.evidence))

    apply("separator", layers.separator(lines, known))
    if layers.is_forward(lines, subject):
        return "\n".join(lines).strip(), [*trail, Cut("forward", "a forwarded message")]
    apply("header_block", layers.header_block(lines, known))
    apply("quote_markers", layers.quote_markers(lines, known, placed=not trail))
    apply("attribution", layers.attribution_cut(lines))
    if not trail:
        apply("talon", _talon_fallback(lines))
    if trail:  # something was cut: an attribution left at the end belongs to it
        apply("attribution", _trailing_attribution(lines))
    if trail and trail[0].layer == "html":  # the history layer compares the whole text
        original = html_layer.to_text(html).split("\n") if known or "[" in html else []
    if trail and (known or any(PREFACED.match(line) for line in original)):
        apply("history", _given_back(original, lines, known))
    return "\n".join(lines).strip(), trail


def _trailing_attribution(lines: list[str]) -> layers.Kept:
    return layers.Kept(layers.drop_attribution(lines), "an attribution line left at the end")


def _given_back(original: list[str], kept: list[str], known: History) -> layers.Kept | None:
    lines, count = restore(original, kept, known, layers.structural(original))
    if not count:
        return None
    why = ("matching nothing we sent or stored on the ticket" if known
           else "marked with the writer's name (Outlook's comments)")
    return layers.Kept(lines, f"gave back {count} cut line{'s' * (count > 1)} {why}")


def _talon_fallback(lines: list[str]) -> layers.Kept | None:
    text = "\n".join(lines)
    # What talon cuts is taken only with an address or two quoted lines in it (below).
    if not _TALON_MAY_CUT.search(text) or ("@" not in text and text.count(">") < 2):
        return None
    kept = _talon().extract_from_plain(text).strip()
    if not kept or kept == text.strip():
        return None
    tail = text[len(kept):] if text.startswith(kept) else text
    quoted = sum(1 for line in tail.split("\n") if line.lstrip().startswith(">"))
    if "@" not in tail and quoted < 2:
        return None
    first = next((line for line in tail.split("\n") if line.strip()), "")
    if layers.looked_at(first):
        return None  # a header field or ">" line the layers above weighed and kept
    return layers.Kept(kept.split("\n"), f"talon's splitter at {first.strip()[:60]!r}, "
                                         f"with an address or quoted lines below")
