"""The HTML layer: for HTML-only mail, the quote is cut in the HTML, then the rest is
converted to text (R-TH-2). Clients mark their quotes with their own containers; each is
listed here with the client that writes it.
"""

from __future__ import annotations

import logging
import re
import textwrap

import lxml.html
from inscriptis import Inscriptis
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig
from lxml import etree
from lxml.html import document_fromstring

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
    """Readable text of an HTML body: paragraphs and line breaks kept, markup gone. The
    one rendering of HTML as text, used by the mail parser for an HTML-only body and by
    the text layers and the history layer here, so all read the same lines.

    The tree is built with lxml's huge_tree option: without it libxml2 stops at 255
    levels of nesting and everything deeper silently vanishes.
    """
    try:
        tree = document_fromstring(html, parser=_HTML_PARSER)
        text = Inscriptis(tree, _HTML_CONFIG).get_text()
    except Exception:  # a document lxml or inscriptis refuses (or too deep): strip tags
        text = re.sub(r"<[^>]+>", " ", html)
    lines = [line.rstrip() for line in text.splitlines()]
    return textwrap.dedent("\n".join(lines)).strip("\n")


_HTML_PARSER = lxml.html.HTMLParser(huge_tree=True, recover=True, remove_comments=True)
# The "strict" profile: inline elements (a <span> Word puts inside a word or a phone
# number) add no spaces of their own.
_HTML_CONFIG = ParserConfig(css=CSS_PROFILES["strict"])
