"""Auto-replies and bulk mail never open tickets nor get an acknowledgement (R-TH-8).

Header signals per RFC 3834 and the de-facto headers of Exchange, Yandex and mailing
software (PROTOCOLS.md): answering a robot is how mail loops start.
"""

from helpgate.threading.context import Action, Context
from helpgate.threading.directory import Directory

NAME = "auto_reply"
DESCRIPTION = "ignore auto-replies, out-of-office notices and bulk mail"

_BULK_PRECEDENCE = {"bulk", "junk", "list", "auto_reply", "auto-reply"}
_SUPPRESS_AUTO = {"all", "oof", "autoreply"}


def signal(headers: dict[str, str]) -> str | None:
    """The header that shows the message was sent by a robot, or None."""
    auto = headers.get("auto-submitted", "").strip().lower()
    if auto and auto.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto}"
    for name in ("precedence", "x-precedence"):
        value = headers.get(name, "").strip().lower()
        if value in _BULK_PRECEDENCE:
            return f"{name.title()}: {value}"
    for name in ("x-autoreply", "x-autorespond", "x-loop"):
        if headers.get(name, "").strip():
            return f"{name.title()} present"
    suppress = {v.strip().lower() for v in headers.get("x-auto-response-suppress", "").split(",")}
    if suppress & _SUPPRESS_AUTO:
        return "X-Auto-Response-Suppress: " + headers["x-auto-response-suppress"].strip()
    if headers.get("return-path", "").strip() == "<>":
        return "null Return-Path <>"
    return None


def apply(ctx: Context, directory: Directory) -> None:
    found = signal(ctx.message.headers)
    if found:
        ctx.stop(NAME, Action.IGNORED, f"auto-reply ({found})")
