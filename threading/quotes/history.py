"""What we know was sent or stored before: the evidence that a piece of a reply is history.

A reply on a known ticket quotes what we sent (our separator, the notification's words,
staff answers) and what the ticket already holds (the customer's earlier messages). Text
that equals none of it is the customer's, whatever it looks like (R-TH-2): a pasted log
with ">" lines, an answer typed inside an Outlook quote that the plain-text part
flattened. `History` answers "did we send or store this?" for runs of lines; `restore`
gives the customer back the lines a layer cut that match nothing we know.

Comparison is on letters and digits only (quote marks, punctuation, spacing and the
client's re-wrapping differ between what we sent and what comes back quoted).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from helpgate.threading.quotes import patterns as p

_NON_WORD = re.compile(r"[\W_]+", re.U)
_QUOTE_PREFIX = p.QUOTE_PREFIX
# Shorter windows match our texts by chance ("да", "ok", "42"): only a whole line of ours
# that short counts as ours.
MIN_MATCH = 8
# Outlook's "Preface comments with: [name]" (Options → Mail → Replies and forwards): the
# customer's answers typed inside the quoted original start with their name in brackets.
PREFACED = re.compile(r"^\s*\[[A-ZА-ЯЁ][\w.\- ]{0,40}\]\s+\S")


def letters(text: str) -> str:
    # Lines of our templates and separators come back with every reply: short lines are
    # cached (a long one is rarely repeated, and would hold memory).
    return _letters(text) if len(text) <= 300 else _letters.__wrapped__(text)


@lru_cache(maxsize=8192)
def _letters(text: str) -> str:
    if ">" in text:  # a quote prefix has one; most lines have none to take off
        text = _QUOTE_PREFIX.sub("", text)
    return _NON_WORD.sub("", text).lower()


def text_keys(text: str) -> tuple[str, frozenset[str]]:
    """A text's letters (each line's, a quote prefix being a line's own) joined, and the
    set of its lines' letters. The texts of a ticket come back with every reply on it
    and our templates with every reply at all: texts of usual size are cached."""
    return _text_keys(text) if len(text) <= 2000 else _text_keys.__wrapped__(text)


@lru_cache(maxsize=1024)
def _text_keys(text: str) -> tuple[str, frozenset[str]]:
    keys = [letters(line) for line in text.splitlines()]
    return "".join(keys), frozenset(keys) - {""}


class Numbered:
    """The keys of texts that differ from ticket to ticket only by its number (our
    notifications' templates, in every language): worked out once, with `NUMBER` where
    the number goes, and the number put into the keys per ticket. Working out the keys of
    every template's text anew for each reply was most of the cost of a reply's history."""

    def __init__(self, texts: Sequence[str]) -> None:
        keys = [text_keys(t) for t in dict.fromkeys(t for t in texts if t and t.strip())]
        self.count = len(keys)
        self.joined = "|".join(joined for joined, _ in keys)
        lines = frozenset().union(*(lines for _, lines in keys))
        self.lines = frozenset(key for key in lines if NUMBER not in key)
        self.numbered = tuple(key for key in lines if NUMBER in key)

    def keys(self, number: int) -> tuple[str, list[str]]:
        """The joined keys and the numbered lines' keys for this ticket's number."""
        digits = str(number)
        return (self.joined.replace(NUMBER, digits),
                [key.replace(NUMBER, digits) for key in self.numbered])


# In a template's number's place: letters only, so `letters` keeps it whole and lowercase,
# and digits put in its place give exactly the keys of the text with the number in it.
NUMBER = "qxqnumberqxq"


class History:
    """Our separators, the subject of the message, and, on a known ticket, the texts
    already sent or stored on it; `templates` with `number`: our notifications' words
    for that ticket."""

    def __init__(self, texts: Sequence[str] = (), separators: Sequence[str] = (),
                 subject: str = "", templates: Numbered | None = None,
                 number: int | None = None) -> None:
        self.subject = subject
        self.separators = [key for key in (letters(s) for s in separators) if key]
        # A text given twice (the default language is one of every language too) is one.
        self.texts = list(dict.fromkeys(t for t in texts if t and t.strip()))
        # One string per text, "|" between them so no match spans two texts.
        keys = [text_keys(t) for t in self.texts]
        joined = [*self.separators, *(joined for joined, _ in keys)]
        self._lines = set(self.separators).union(*(lines for _, lines in keys))
        self._fixed: frozenset[str] = frozenset()
        self._templates = 0
        if templates is not None and number is not None and templates.count:
            numbered_joined, numbered_lines = templates.keys(number)
            joined.append(numbered_joined)
            self._lines.update(numbered_lines)
            self._fixed = templates.lines   # shared by every ticket: not copied
            self._templates = templates.count
        self._joined = "|".join(joined)

    def __bool__(self) -> bool:
        return bool(self.texts) or bool(self._templates)

    def has_separator(self, lines: Sequence[str]) -> bool:
        joined = "".join(letters(line) for line in lines)
        return any(key in joined for key in self.separators)

    def ours(self, lines: Sequence[str]) -> bool:
        """Most of these lines' words are in what we sent or stored."""
        if not self:
            return False
        flags = self.flags(lines)
        content = [f for f, line in zip(flags, lines, strict=True) if letters(line)]
        return bool(content) and sum(content) * 2 > len(content)

    def flags(self, lines: Sequence[str]) -> list[bool]:
        """For each line, whether it belongs to a run of consecutive lines (blank lines
        skipped) that appears in what we sent or stored; blank lines count as ours."""
        keys = [letters(line) for line in lines]
        flags = [not key for key in keys]
        content = [i for i, key in enumerate(keys) if key]
        start = 0
        while start < len(content):
            end, window = start, keys[content[start]]
            if window in self._joined:
                while end + 1 < len(content) and \
                        window + keys[content[end + 1]] in self._joined:
                    end += 1
                    window += keys[content[end]]
            if len(window) >= MIN_MATCH and window in self._joined or \
                    window in self._lines or window in self._fixed:
                for i in content[start:end + 1]:
                    flags[i] = True
            start = end + 1
        return flags


def restore(original: list[str], kept: list[str], history: History,
            structural: list[bool]) -> tuple[list[str], int]:
    """`original` with the lines `kept` and the cut lines that are neither ours (history)
    nor the clients' own apparatus (`structural`: attributions, header fields, rules).
    With no ticket history, only the comments Outlook marks with the writer's name
    ("[Иван Петров] По USB.") are given back. Returns the lines and how many came back."""
    marks = _aligned(original, kept)
    cut = [i for i, mark in enumerate(marks) if not mark and original[i].strip()
           and not structural[i] and not _bare_marker(original[i])]
    if history:
        ours = history.flags([original[i] for i in cut])
    else:
        ours = [not PREFACED.match(original[i]) for i in cut]
    back = [i for i, flag in zip(cut, ours, strict=True) if not flag]
    if not back:
        return kept, 0
    for i in back:
        marks[i] = True
    lines = [line.rstrip() for line, mark in zip(original, marks, strict=True)
             if mark or not line.strip()]
    return _squeeze(lines), len(back)


def _aligned(original: list[str], kept: list[str]) -> list[bool]:
    """Which original lines survive in `kept`, matched in order (a kept line may be the
    head of an original one the layers split)."""
    wanted = [line.strip() for line in kept if line.strip()]
    marks, at = [False] * len(original), 0
    for index, line in enumerate(original):
        text = line.strip()
        if at < len(wanted) and text and (text == wanted[at] or (
                len(wanted[at]) >= MIN_MATCH and text.startswith(wanted[at]))):
            marks[index], at = True, at + 1
    return marks


def _bare_marker(line: str) -> bool:
    return not letters(line) or bool(p.RULE_LINE.match(line))


def _squeeze(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line.strip() or (out and out[-1].strip()):
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    while out and not out[0].strip():
        out.pop(0)
    return out
