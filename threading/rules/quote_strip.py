"""Only the customer's new words become the comment (R-TH-2); see threading/quotes/."""

from helpgate.config.schema import TEXTS
from helpgate.threading.context import Context
from helpgate.threading.directory import Directory
from helpgate.threading.quotes import strip_quotes

NAME = "quote_strip"
DESCRIPTION = "cut quoted history and our separator from the message text"


def apply(ctx: Context, directory: Directory) -> None:
    message = ctx.message
    # Ours in every language: a customer may answer a mail sent before a language change.
    separators = [ctx.config.text().separator, *(t.separator for t in TEXTS.values())]
    new_text = strip_quotes(message.text, message.html if message.text_from_html else None,
                            separators, subject=message.subject)
    if not new_text.strip():
        # Nothing recognisable as new words: keep everything rather than lose a word.
        ctx.decision.text = message.text
        ctx.notes.append(f"{NAME}: nothing left after stripping; whole text kept")
        return
    ctx.decision.text = new_text
    if new_text.strip() != message.text.strip():
        ctx.fire(NAME, f"kept {len(new_text)} of {len(message.text)} characters")
