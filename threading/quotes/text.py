"""The plain-text layers of the stripper, each a small named rule over the lines.

Every rule takes the lines left by the rules before it and returns what it keeps with the
evidence it cut on (`Kept`), or None when it found nothing to do — so the stripper can say
which rule made a cut and why. A rule cuts only on evidence that what goes is history:
our separator, a quote or header block that an attribution, a rule line, the message's
own subject or what we sent (`History`) confirms. Where the evidence is weak, the text
stays: a lost sentence of the customer's costs more than a kept line of history.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from helpgate.threading.quotes import patterns as p
from helpgate.threading.quotes.history import History, letters

_QUOTE_PREFIX = p.QUOTE_PREFIX
# How many lines an attribution may be wrapped over, and a header block may span.
ATTRIBUTION_LINES = 3
ATTRIBUTION_MAX = 400
HEADER_SPAN = 8
# Attribution strengths: WEAK ones count only right above a quote or our separator;
# STRONG ones also cut an unquoted original below them (mobile clients).
WEAK, STRONG = 1, 2
# The verbs an attribution may end with instead of a colon (patterns.ENDS_LIKE_ATTRIBUTION).
_VERB_ENDINGS = ("wrote", "skrev", "schrieb", "написал(а)")


class Kept(NamedTuple):
    lines: list[str]
    evidence: str


def normalize(line: str) -> str:
    return letters(line)


# --------------------------------------------------------------------- separator
def separator(lines: list[str], history: History) -> Kept | None:
    """Everything above the first line holding one of our separators, in any form the
    client left it: quoted, wrapped onto the next line, its punctuation mangled. When
    the separator sits in a quote with the customer's words below it (a bottom-posted or
    interleaved reply), nothing is cut here: the quote layer keeps those words."""
    keys = history.separators
    whole = letters("\n".join(lines))  # one pass: most messages hold no separator at all
    if not any(key in whole for key in keys):
        return None
    normal = [normalize(line) for line in lines]
    for index, current in enumerate(normal):
        if not current:
            continue
        joined = current + (normal[index + 1] if index + 1 < len(normal) else "")
        for key in keys:
            position = joined.find(key)
            if 0 <= position < len(current):
                if p.QUOTE_LINE.match(lines[index]) and _words_below_quote(lines, index, history):
                    return None
                return Kept(_drop_trailing_block(drop_attribution(lines[:index])),
                            f"our separator on line {index + 1}")
    return None


def _drop_trailing_block(lines: list[str]) -> list[str]:
    """A header block right above our separator heads our mail: it goes with it."""
    for index in range(max(0, len(lines) - HEADER_SPAN), len(lines)):
        if _header_block_at(lines, index) == len(lines) - index:
            return drop_attribution(lines[:index])
    return lines


def _words_below_quote(lines: list[str], index: int, history: History) -> bool:
    """Unquoted text after the quote that holds line `index` (not older history)."""
    rest = lines[index:]
    while rest and (p.QUOTE_LINE.match(rest[0]) or not rest[0].strip()):
        rest = rest[1:]
    return any(line.strip() for line in rest) and not _has_history(rest, history)


# ------------------------------------------------------------------ header blocks
def header_block(lines: list[str], history: History) -> Kept | None:
    """Cut at a reply header block ("От:/Отправлено:/Кому:/Тема:", "From:/Sent:/To:") or
    an "-----Original Message-----" banner. A block counts only with evidence that it
    heads history (`_block_evidence`): pasted requisites or another mail's header in the
    customer's text have none. A block at the very top is the message's own pasted
    header: only it goes."""
    for index, line in enumerate(lines):
        if p.QUOTE_LINE.match(line):
            continue
        if p.BANNER.match(line):
            return Kept(drop_attribution(lines[:index]), f"banner {line.strip()!r}")
        size = _header_block_at(lines, index)
        if not size:
            continue
        evidence = block_evidence(lines, index, size, history)
        if evidence is None:
            continue
        if any(earlier.strip() for earlier in lines[:index]):
            return Kept(drop_attribution(lines[:index]),
                        f"header block on line {index + 1}, {evidence}")
        return Kept(lines[index + size:], f"the message's own header block, {evidence}")
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


def block_evidence(lines: list[str], index: int, size: int, history: History) -> str | None:
    """Why the header block at `index` heads history, or None: the rule line clients draw
    above it, the subject this message answers, our separator or our words below it."""
    above = index - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    if above >= 0 and p.RULE_LINE.match(lines[above]):
        return "the client's rule line above it"
    block, subject = lines[index:index + size], history.subject
    for line in block:
        match = p.SUBJECT_FIELD.match(line)
        if match and subject and bare_subject(match.group(1)) == bare_subject(subject):
            return "its subject is the one this message answers"
    below = lines[index + size:index + size + 12]
    if history.has_separator(below):
        return "our separator below it"
    if history.ours(block) or history.ours([line for line in below if line.strip()][:3]):
        return "what we sent in or below it"
    if not subject and _has_sent_and_address(block):
        return "a header with an address and a date, the message's subject unknown"
    return None


def bare_subject(subject: str) -> str:
    return normalize(p.REPLY_PREFIX.sub("", subject or ""))


def _has_sent_and_address(block: list[str]) -> bool:
    text = "\n".join(block)
    return "@" in text and bool(p.HAS_TIME.search(text))


# --------------------------------------------------------------------- attribution
def attribution_at(lines: list[str], index: int, strength: int = WEAK) -> int:
    """How many lines ending at `index` form an attribution line ("On … wrote:",
    "23.11.2026, 10:05, Support <…>:") of at least this strength, which clients wrap
    over up to three; 0 if none."""
    last = lines[index].rstrip().rstrip("-—").rstrip()
    if not last or not (last[-1] in ":：" or last[-10:].lower().endswith(_VERB_ENDINGS)) \
            or not p.ENDS_LIKE_ATTRIBUTION.search(last):
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
            if attribution_strength(joined, first=lines[start]) >= strength:
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


def attribution_strength(text: str, first: str) -> int:
    """STRONG: the verb with a date where attributions open, or an address with a date
    or the verb. WEAK: a name and the verb ("Support wrote:", The Bat!'s "Вы писали:"),
    Thunderbird's verbless "23.11.2026 09:05, Support:". 0: a sentence of the
    customer's ("Созвон назначен на 01.12.2026 10:00:", "…, как вы писали:")."""
    text = _QUOTE_PREFIX.sub("", text).strip().strip("-—").strip()
    if not p.ENDS_LIKE_ATTRIBUTION.search(text) or p.HEADER_FIELD.match(first):
        return 0  # "Subject: …:" is a header field, not an attribution
    wrote = p.WROTE.search(text)
    has_address = "@" in text
    if has_address and (wrote or p.HAS_DATE_OR_ADDRESS.search(text.replace("@", "", 1))):
        return STRONG
    if wrote and p.HAS_DATE_OR_ADDRESS.search(text) and p.OPENS_LIKE_ATTRIBUTION.match(text):
        return STRONG
    if wrote and _names_only(text[:wrote.start()]):
        return WEAK
    return WEAK if p.DATE_TIME_NAME.match(text) else 0


def _names_only(text: str) -> bool:
    """"Support", "Иван Петров", "Вы", "bob@example.com": no sentence before the verb."""
    words = text.replace('"', " ").strip(" -—,").split()
    return 0 < len(words) <= 4 and all(w[0].isupper() or "@" in w for w in words)


def split_shared_line(lines: list[str]) -> list[str]:
    """A client that put the attribution on the reply's last line ("reply--- On …
    wrote:") over a quote: the attribution moves to a line of its own, so the rules can
    drop it. Only a strong attribution with the quote right below it is split off."""
    out = []
    for index, line in enumerate(lines):
        match = p.ATTRIBUTION_START.search(line)
        if match and match.start(1) > 0 and not p.QUOTE_LINE.match(line) \
                and attribution_strength(match.group(1), first=match.group(1)) == STRONG \
                and _quote_follows(lines, index):
            head = line[:match.start(1)].rstrip().rstrip("-").rstrip()
            out += [head, match.group(1)] if head else [match.group(1)]
        else:
            out.append(line)
    return out


def _quote_follows(lines: list[str], index: int) -> bool:
    below = [line for line in lines[index + 1:index + 4] if line.strip()]
    return bool(below) and bool(p.QUOTE_LINE.match(below[0]))


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


def attribution_cut(lines: list[str]) -> Kept | None:
    """A strong attribution line with the original below it unquoted (mobile clients)."""
    for index in range(len(lines)):
        count = attribution_at(lines, index, STRONG)
        if count and any(line.strip() for line in lines[index + 1:]):
            start = index - count + 1
            return Kept(_trim_end(lines[:start]),
                        f"attribution {_join(lines[start:index + 1])[:80]!r} "
                        f"over an unquoted original")
    return None


# ------------------------------------------------------------------ quote markers
def quote_markers(lines: list[str], history: History, placed: bool = True) -> Kept | None:
    """">" quoted blocks: keep the customer's own segments — above, between (an
    interleaved reply) and below (a bottom-posted one) — each trimmed, joined by one
    blank line. A ">" block is a quote only with evidence (`_quote_evidence`): the
    customer's pasted log or shell session has none and stays. Once a layer above has
    cut the history away, a block's place (top or end of what is left) proves nothing:
    `placed` is False then."""
    runs = _runs(lines)
    quote_runs = [False] * len(runs)
    reasons: list[str] = []
    for position, (quoted, _, _) in enumerate(runs):
        why = quoted and _quote_evidence(position, runs, lines, history,
                                         any(quote_runs[:position]), placed)
        if why:
            quote_runs[position] = True
            reasons += [] if why in reasons else [why]
    if not any(quote_runs):
        return None
    segments: list[list[str]] = []
    for position, (_, _, run) in enumerate(runs):
        if quote_runs[position]:
            if segments:
                segments[-1] = drop_attribution(segments[-1])
            continue
        if position == len(runs) - 1 and _not_the_customer_s(run, runs, quote_runs, history):
            continue
        if position and not quote_runs[position - 1] and segments:
            segments[-1] += run  # the customer's own ">" lines inside their segment
        else:
            segments.append(list(run))
    kept = ["\n".join(s).strip("\n") for s in segments]
    kept = [_dedent(k) for k in kept if k.strip()]
    count = sum(quote_runs)
    return Kept("\n\n".join(kept).split("\n") if kept else [],
                f"{count} quoted block{'s' * (count > 1)}: {'; '.join(reasons)}")


def _quote_evidence(position: int, runs: list, lines: list[str], history: History,
                    after_quote: bool, placed: bool) -> str | None:
    """Why the ">" run at `position` is quoted history, or None for the customer's own."""
    _, start, run = runs[position]
    content = [line for line in run if line.strip()]
    if history.has_separator(run):
        return "our separator inside"
    if history.ours(run):
        return "what we sent or stored"
    intro = _line_above(lines, start)
    if intro is not None and attribution_at(lines, intro):
        return "an attribution line above"
    if _headed_by_attribution(run):
        return "an attribution line at its head (quoted with it)"
    if intro is not None and lines[intro].rstrip().endswith((":", "：")):
        return None  # "Вот лог:" — a paste the customer introduced
    if after_quote:
        return "continues the quote above (interleaved reply)"
    if len(content) < 2 or not placed:
        return None
    if intro is None and not _attributed_quote_below(runs, position, lines):
        return "at the top of the message"  # an interleaved reply that lost its attribution
    if all(quoted or not any(line.strip() for line in later)
           or (index == len(runs) - 1 and (_has_history(later, history) or _is_footer(later)))
           for index, (quoted, _, later) in enumerate(runs) if index > position):
        return "runs to the end of the message"
    return None


def _attributed_quote_below(runs: list, position: int, lines: list[str]) -> bool:
    """A later quote under an attribution: the message is top-posted over it, so a ">"
    block above the customer's text is theirs (a pasted log), not history."""
    for quoted, start, run in runs[position + 1:]:
        above = _line_above(lines, start)
        if quoted and (above is not None and attribution_at(lines, above)
                       or _headed_by_attribution(run)):
            return True
    return False


def _headed_by_attribution(run: list[str]) -> bool:
    """Apple Mail quotes its attribution line with the original ("> 23 нояб. … написал(а):")."""
    content = [line for line in run if line.strip()]
    return any(attribution_at(content, index, STRONG) for index in range(min(3, len(content))))


def _line_above(lines: list[str], start: int) -> int | None:
    before = start - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    return before if before >= 0 else None


def _not_the_customer_s(run: list[str], runs: list, quote_runs: list[bool],
                        history: History) -> bool:
    """Below the last quote: older history, or a signature or list footer that is the
    client's (a top-posted reply, or the same text already inside the quote)."""
    if _has_history(run, history):
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
        quoted = bool(p.QUOTE_LINE.match(line)) or (
            bool(runs) and runs[-1][0] and _broken_quote_line(lines, index))
        if not line.strip() and runs:
            runs[-1][2].append(line)
            continue
        if runs and runs[-1][0] == quoted:
            runs[-1][2].append(line)
        else:
            runs.append((quoted, index, [line]))
    return runs


_UNFINISHED_URL = re.compile(r"(https?://|www\.)\S*$|[=]$")


def _broken_quote_line(lines: list[str], index: int) -> bool:
    """A quote line a client broke inside a link (talon's "(http://…) >" and a URL
    wrapped mid-way): the line sits between quoted lines, and either ends with the
    displaced ">" or continues, without a space, a link the quoted line above left
    open. A link or path the customer wrote after a quote has a quote on one side only."""
    text = lines[index].strip()
    following = [line for line in lines[index + 1:index + 3] if line.strip()]
    if not text or not following or not p.QUOTE_LINE.match(following[0]):
        return False
    above = lines[index - 1].rstrip() if index else ""
    return text.endswith(" >") or (
        " " not in text and bool(p.QUOTE_LINE.match(above))
        and bool(_UNFINISHED_URL.search(above)))


def _has_history(run: list[str], history: History) -> bool:
    """Reply history left unquoted: a banner, a strong attribution, a confirmed header
    block."""
    for index, line in enumerate(run):
        if p.BANNER.match(line) or p.FORWARD_BANNER.match(line) \
                or attribution_at(run, index, STRONG):
            return True
        size = _header_block_at(run, index)
        if size and block_evidence(run, index, size, history):
            return True
    return False


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


def structural(lines: list[str]) -> list[bool]:
    """The lines that are the clients' apparatus around a quote, never the customer's
    words: attribution lines, header fields, banners and rule lines."""
    marks = [bool(p.BANNER.match(line) or p.FORWARD_BANNER.match(line)
                  or p.RULE_LINE.match(line) or p.HEADER_FIELD.match(line))
             for line in lines]
    for index in range(len(lines)):
        count = attribution_at(lines, index)
        for position in range(index - count + 1, index + 1) if count else ():
            marks[position] = True
        size = _header_block_at(lines, index)
        for position in range(index, index + size):
            marks[position] = True
    return marks


def looked_at(line: str) -> bool:
    """A line the layers weigh themselves (a header field, a ">" line, a colon-ended
    line that might be an attribution): when they kept it, talon must not cut there."""
    return bool(p.FROM_FIELD.match(line) or p.QUOTE_LINE.match(line)
                or p.ENDS_LIKE_ATTRIBUTION.search(line.strip()))
