"""The plain-text layers of the stripper, each a small named rule over the lines.

Every rule takes the lines left by the rules before it and returns the lines it keeps,
or None when it found nothing to do — so the stripper can say which rule made a cut.
"""

from __future__ import annotations

import re

from helpgate.threading.quotes import patterns as p

_NON_WORD = re.compile(r"[\W_]+", re.U)
_QUOTE_PREFIX = re.compile(r"^(\s*>)+\s?")
# How many lines an attribution may be wrapped over, and a header block may span.
ATTRIBUTION_LINES = 3
ATTRIBUTION_MAX = 400
HEADER_SPAN = 8


def normalize(line: str) -> str:
    return _NON_WORD.sub("", _QUOTE_PREFIX.sub("", line)).lower()


# --------------------------------------------------------------------- separator
def separator(lines: list[str], separators: list[str]) -> list[str] | None:
    """Everything above the first line holding one of our separators, in any form the
    client left it: quoted, wrapped onto the next line, its punctuation mangled. When
    the separator sits in a quote with the customer's words below it (a bottom-posted or
    interleaved reply), nothing is cut here: the quote layer keeps those words."""
    keys = [k for k in (normalize(s) for s in separators) if k]
    normal = [normalize(line) for line in lines]
    for index, current in enumerate(normal):
        if not current:
            continue
        joined = current + (normal[index + 1] if index + 1 < len(normal) else "")
        for key in keys:
            position = joined.find(key)
            if 0 <= position < len(current):
                if p.QUOTE_LINE.match(lines[index]) and _words_below_quote(lines, index):
                    return None
                return drop_attribution(lines[:index])
    return None


def _words_below_quote(lines: list[str], index: int) -> bool:
    """Unquoted text after the quote that holds line `index` (not older history)."""
    rest = lines[index:]
    while rest and (p.QUOTE_LINE.match(rest[0]) or not rest[0].strip()):
        rest = rest[1:]
    return any(line.strip() for line in rest) and not _has_history(rest)


# ------------------------------------------------------------------ header blocks
def header_block(lines: list[str]) -> list[str] | None:
    """Cut at a reply header block ("От:/Отправлено:/Кому:/Тема:", "From:/Sent:/To:") or
    an "-----Original Message-----" banner, with the rule drawn above it. A block at the
    very top, with nothing above it, is the message's own pasted header: only it goes."""
    for index, line in enumerate(lines):
        if p.QUOTE_LINE.match(line):
            continue
        if p.BANNER.match(line):
            return drop_attribution(lines[:index])
        size = _header_block_at(lines, index)
        if not size:
            continue
        if any(earlier.strip() for earlier in lines[:index]):
            return drop_attribution(lines[:index])
        return lines[index + size:]
    return None


def _header_block_at(lines: list[str], index: int) -> int:
    """The number of lines of a header block starting here: consecutive header fields
    (a wrapped value may continue on the next line), at least two, one a From field."""
    fields, has_from, end = 0, False, index
    for position in range(index, min(len(lines), index + HEADER_SPAN)):
        line = lines[position]
        if p.HEADER_FIELD.match(line) and not p.QUOTE_LINE.match(line):
            fields += 1
            has_from = has_from or bool(p.FROM_FIELD.match(line))
            end = position + 1
        elif not line.strip() or fields == 0 or position > end:
            break
    return end - index if fields >= 2 and has_from else 0


# --------------------------------------------------------------------- attribution
def attribution_at(lines: list[str], index: int) -> int:
    """How many lines ending at `index` form an attribution line ("On … wrote:",
    "23.11.2026, 10:05, Support <…>:"), which clients wrap over up to three; 0 if none."""
    last = lines[index].strip().rstrip("-—").rstrip()
    if not last or not p.ENDS_LIKE_ATTRIBUTION.search(last):
        return 0  # the quick answer for almost every line
    count = 0
    for size in range(1, ATTRIBUTION_LINES + 1):
        start = index - size + 1
        if start < 0 or not lines[start].strip():
            break
        joined = _join(lines[start:index + 1])
        if len(joined) > ATTRIBUTION_MAX:
            break
        if count == 0:
            if _is_attribution(joined, first=lines[start]):
                count = size
        elif _continues_attribution(lines[start]):
            count = size  # the first half of a wrapped attribution ("On …, Somebody <")
        else:
            break
    return count


def _join(lines: list[str]) -> str:
    # A line ending in "=" is a quoted-printable soft break left undecoded: no space.
    joined = ""
    for line in lines:
        joined = joined[:-1] + line.strip() if joined.endswith("=") else \
            (joined + " " + line.strip()).strip()
    return joined


def _continues_attribution(line: str) -> bool:
    text = line.strip()
    return bool(p.HAS_DATE_OR_ADDRESS.search(text) or text.endswith("<"))\
        and not text.endswith((".", "!", "?")) and len(text) < 200


def _is_attribution(text: str, first: str) -> bool:
    text = _QUOTE_PREFIX.sub("", text).strip().strip("-—").strip()
    if not p.ENDS_LIKE_ATTRIBUTION.search(text):
        return False
    if p.HEADER_FIELD.match(first):
        return False  # "Subject: …:" is a header field, not an attribution
    if p.WROTE.search(text):
        return True
    if "@" in text and p.HAS_DATE_OR_ADDRESS.search(text.replace("@", "", 1)):
        return True
    return text.rstrip().endswith((":", "：")) and bool(p.HAS_TIME.search(text)) \
        and bool(p.HAS_YEAR_OR_DATE.search(text)) and len(text) < 120


def split_shared_line(lines: list[str]) -> list[str]:
    """A client that put the attribution on the reply's last line ("reply--- On …
    wrote:"): the attribution moves to a line of its own, so the rules can drop it."""
    out = []
    for line in lines:
        match = p.ATTRIBUTION_START.search(line)
        if match and match.start(1) > 0 and not p.QUOTE_LINE.match(line) \
                and _is_attribution(match.group(1), first=match.group(1)) \
                and p.WROTE.search(match.group(1)):
            head = line[:match.start(1)].rstrip().rstrip("-").rstrip()
            out += [head, match.group(1)] if head else [match.group(1)]
        else:
            out.append(line)
    return out


def drop_attribution(lines: list[str]) -> list[str]:
    """The lines without the attribution (and rules, blank lines) they end with."""
    lines = _trim_end(lines)
    count = attribution_at(lines, len(lines) - 1) if lines else 0
    return _trim_end(lines[:len(lines) - count]) if count else lines


def _trim_end(lines: list[str]) -> list[str]:
    lines = list(lines)
    while lines and (not lines[-1].strip() or p.RULE_LINE.match(lines[-1])):
        lines.pop()
    return lines


def attribution_cut(lines: list[str]) -> list[str] | None:
    """An attribution line with the original below it unquoted (mobile clients): cut."""
    for index in range(len(lines)):
        count = attribution_at(lines, index)
        if count and _strong(_join(lines[index - count + 1:index + 1])) \
                and any(line.strip() for line in lines[index + 1:]):
            return _trim_end(lines[:index - count + 1])
    return None


def _strong(attribution: str) -> bool:
    # With nothing quoted below, only an unmistakable attribution cuts: a "wrote" verb,
    # or an address in angle brackets with a time ("… 10:05 Support <s@x.ru>:").
    return bool(p.WROTE.search(attribution)) or (
        bool(p.ADDRESS_IN_BRACKETS.search(attribution)) and bool(p.HAS_TIME.search(attribution)))


# ------------------------------------------------------------------ quote markers
def quote_markers(lines: list[str]) -> list[str] | None:
    """">" quoted blocks: keep the customer's own segments — above, between (an
    interleaved reply) and below (a bottom-posted one) — each trimmed, joined by one
    blank line. A lone ">" line the customer typed above any quote is not a quote."""
    runs = _runs(lines)
    quote_runs = [False] * len(runs)
    seen = False
    for position, (quoted, start, run) in enumerate(runs):
        # After a first real quote, a one-line quote is the next quoted question.
        quote_runs[position] = quoted and (seen or _is_quote(run, lines, start))
        seen = seen or quote_runs[position]
    if not seen:
        return None
    segments: list[list[str]] = []
    for position, (_, _, run) in enumerate(runs):
        if quote_runs[position]:
            if segments:
                segments[-1] = drop_attribution(segments[-1])
            continue
        if position == len(runs) - 1 and any(quote_runs) and \
                _not_the_customer_s(run, runs, quote_runs):
            continue
        segments.append(list(run))
    kept = ["\n".join(s).strip("\n") for s in segments]
    kept = [_dedent(k) for k in kept if k.strip()]
    return "\n\n".join(kept).split("\n") if kept else []


def _not_the_customer_s(run: list[str], runs: list, quote_runs: list[bool]) -> bool:
    """Below the last quote: older history, or a signature or list footer that is the
    client's (a top-posted reply, or the same text already inside the quote)."""
    if _has_history(run):
        return True
    if not _is_footer(run):
        return False
    first_quote = quote_runs.index(True)
    wrote_below = any(not quote_runs[i] and any(line.strip() for line in runs[i][2])
                      for i in range(first_quote + 1, len(runs) - 1))
    quoted_text = " ".join(line for i, (_, _, r) in enumerate(runs) if quote_runs[i]
                           for line in r)
    body = [line.strip() for line in run if line.strip()][1:]
    repeated = bool(body) and all(line in quoted_text for line in body)
    return not wrote_below or repeated


def _runs(lines: list[str]) -> list[tuple[bool, int, list[str]]]:
    """Consecutive quoted / unquoted lines; blank lines join the run they sit in."""
    runs: list[tuple[bool, int, list[str]]] = []
    for index, line in enumerate(lines):
        # A quote line a client broke inside a link: the rest is still quoted.
        quoted = bool(p.QUOTE_LINE.match(line)) or (
            bool(runs) and runs[-1][0] and (_broken_quote_line(line)
                                            or runs[-1][2][-1].rstrip().endswith("=")))
        if not line.strip() and runs:
            runs[-1][2].append(line)
            continue
        if runs and runs[-1][0] == quoted:
            runs[-1][2].append(line)
        else:
            runs.append((quoted, index, [line]))
    return runs


def _broken_quote_line(line: str) -> bool:
    text = line.strip()
    return text.endswith(" >") or (bool(text) and " " not in text
                                   and any(c in text for c in "=/&?%)"))


def _is_quote(run: list[str], lines: list[str], start: int) -> bool:
    content = [line for line in run if line.strip()]
    if len(content) >= 2:
        return True
    # One quoted line: a quote when an attribution introduces it, else the customer's own.
    before = start - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    return before >= 0 and attribution_at(lines, before) > 0


def _has_history(run: list[str]) -> bool:
    """Reply history left unquoted (an attribution, a header block, a banner)."""
    return any(p.BANNER.match(line) or p.FORWARD_BANNER.match(line)
               or attribution_at(run, index) or _header_block_at(run, index)
               for index, line in enumerate(run))


def _is_footer(run: list[str]) -> bool:
    content = [line for line in run if line.strip()]
    return bool(content) and bool(p.SIGNATURE_START.match(content[0].strip()))


def _dedent(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))


# ---------------------------------------------------------------------- forwards
def is_forward(lines: list[str], subject: str) -> bool:
    """A forwarded message, kept whole with its forward header (R-TH-2): a Fwd: subject,
    or a forward banner before anything that starts reply history (a forward quoted
    in old history is history)."""
    if p.FORWARD_SUBJECT.match(subject or ""):
        return True
    for index, line in enumerate(lines):
        if p.QUOTE_LINE.match(line) or p.BANNER.match(line) or attribution_at(lines, index):
            return False
        if p.FORWARD_BANNER.match(line):
            return True
    return False
