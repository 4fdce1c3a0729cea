"""Only the customer's new words become the comment (R-TH-2); see threading/quotes/.

On a known ticket the stripper is given what the ticket holds and what we sent about it
(with the words of our HTML design, which clients quote from the HTML part): text equal
to that is history, text equal to none of it is the customer's, whatever it looks like.
Every cut is noted with the layer that made it and its evidence.
"""

from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from helpgate.config.schema import TEXTS, Config
from helpgate.threading.context import Context
from helpgate.threading.directory import Directory
from helpgate.threading.quotes import explain, read_alone
from helpgate.threading.quotes.history import NUMBER, Numbered
from helpgate.threading.quotes.html import to_text

NAME = "quote_strip"
DESCRIPTION = "cut quoted history and our separator from the message text"


def apply(ctx: Context, directory: Directory) -> None:
    message = ctx.message
    separators = our_separators(ctx.config)
    ticket = ctx.decision.ticket
    if ticket is None:
        # A new request: read where it was parsed, when it was (gateway/parse_worker.py).
        reading = message.quote_reading
        if reading is None or reading.separators != separators:
            reading = read_alone(message, separators)
        new_text, cuts = reading.text, reading.cuts
    else:
        new_text, cuts = explain(
            message.text, message.html if message.text_from_html else None, separators,
            subject=message.subject,
            history=[*directory.ticket_history(ticket.id),
                     *design_words(ctx.config.mail.html_template)],
            templates=our_notifications(ctx.config), number=ticket.number)
    if not new_text.strip():
        # Nothing recognisable as new words: keep everything rather than lose a word.
        ctx.decision.text = message.text
        ctx.notes.append(f"{NAME}: nothing left after stripping; whole text kept")
        return
    ctx.decision.text = new_text
    if new_text.strip() != message.text.strip():
        reasons = "; ".join(f"{cut.layer}: {cut.evidence}" for cut in cuts)
        ctx.fire(NAME, f"kept {len(new_text)} of {len(message.text)} characters ({reasons})")


def our_separators(config: Config) -> tuple[str, ...]:
    """Ours in every language: a customer may answer a mail sent before a language
    change."""
    return (config.text().separator, *(t.separator for t in TEXTS.values()))


def our_notifications(config: Config) -> Numbered:
    """The words of our acknowledgement and status announcements, in every language, as
    we send them about any ticket (a reply may quote one the outbox no longer holds),
    with history.NUMBER for the ticket's number."""
    names = {name for state in config.statuses.states for name in state.names.values()}
    texts = []
    for language in (config.text(), *TEXTS.values()):
        texts.append(_filled(language.ack_text, number=NUMBER))
        texts += [_filled(language.status_text, number=NUMBER, status=name)
                  for name in sorted(names)]
    return _numbered(tuple(texts))


def _filled(template: str, **values: str) -> str:
    # An admin's template may format the number as one ("{number:05d}"), which NUMBER is
    # not: such a template is left out (its words then count as the customer's).
    try:
        return template.format_map(defaultdict(str, values))
    except (ValueError, IndexError, AttributeError):
        return ""


@lru_cache(maxsize=8)
def _numbered(texts: tuple[str, ...]) -> Numbered:
    return Numbered(texts)


@lru_cache(maxsize=4)
def design_words(path: str) -> tuple[str, ...]:
    """The text of our HTML design around its content slot: sent with every notification.
    A design that cannot be read adds nothing (sending reports it)."""
    if not path:
        return ()
    try:
        return (to_text(Path(path).read_text(encoding="utf-8")),)
    except (OSError, UnicodeDecodeError):
        return ()
