"""The HTML layer: for HTML-only mail, the quote is cut in the HTML, then the rest is
converted to text (R-TH-2). Clients mark their quotes with their own containers; each is
listed here with the client that writes it.
"""

from __future__ import annotations

import logging
import re
import textwrap

import lxml.html
from inscriptis import get_text
from lxml import etree

log = logging.getLogger("helpgate.quotes")

# Containers holding the quoted history and everything after it.
CUT_FROM_HERE = etree.XPath(
    "//div[contains(concat(' ', normalize-space(@class), ' '), ' gmail_quote ')]"  # Gmail
    " | //div[@id='divRplyFwdMsg']"                                                # OWA
    " | //div[@id='appendonsend']"                                                 # OWA
    " | //div[contains(@style, 'border-top') and contains(@style, 'solid')"
    "         and .//*[contains(., ':')]]"                                          # Outlook
    " | //div[contains(concat(' ', normalize-space(@class), ' '), ' moz-cite-prefix ')]"
    #                                                                         Thunderbird
    " | //div[contains(@class, 'mail-quote-collapse')]"                            # Mail.ru
    " | //div[contains(@class, 'yahoo_quoted')]"                                   # Yahoo
    " | //blockquote[contains(@class, 'gmail_quote')]"
)


def cut(html: str) -> str | None:
    """The HTML without the quote container and what follows it; None if there is none
    (or the markup cannot be read: the text layers still run on the whole text)."""
    try:
        root = lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError):
        log.warning("HTML could not be parsed; quote cut left to the text layers")
        return None
    found = CUT_FROM_HERE(root)
    if found:
        _drop_following(found[0])
        found[0].drop_tree()
        return lxml.html.tostring(root, encoding="unicode")
    # Plain blockquotes (Apple Mail and Thunderbird's type="cite", Yandex, Mail.ru): each
    # quote goes, the customer's words between and below them stay.
    quotes = [q for q in root.xpath("//blockquote") if not q.xpath("ancestor::blockquote")]
    if not quotes:
        return None
    for quote in quotes:
        quote.drop_tree()
    return lxml.html.tostring(root, encoding="unicode")


def _drop_following(element) -> None:
    """Remove everything after the element in document order (the rest of the history)."""
    node = element
    while node is not None and node.getparent() is not None:
        for sibling in list(node.itersiblings()):
            node.getparent().remove(sibling)
        node.tail = None
        node = node.getparent()


def to_text(html: str) -> str:
    """Readable text of the HTML left after the cut, as the mail parser renders an HTML
    body (inscriptis: paragraphs and line breaks kept), so the text layers and the
    history layer read the same lines the comment would hold."""
    try:
        text = get_text(html)
    except Exception:  # inscriptis/lxml refuse some broken documents: strip tags instead
        text = re.sub(r"<[^>]+>", " ", html)
    lines = [line.rstrip() for line in text.splitlines()]
    return textwrap.dedent("\n".join(lines)).strip("\n")
