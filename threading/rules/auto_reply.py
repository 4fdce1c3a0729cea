"""Auto-replies and bulk mail never open tickets nor get an acknowledgement (R-TH-8).

Header signals per RFC 3834 and the de-facto headers of Exchange, Yandex and mailing
software (PROTOCOLS.md): answering a robot is how mail loops start. Many out-of-office
notices carry none of them, so their subjects are recognised too, in the languages we
support: the client's phrase opens the subject and is followed by a colon (then the
original subject) or nothing. A subject is weaker evidence than a header — a customer may
well write "Autoreply: how do I set it up?" — so it alone ignores a mail only when that
mail answers one of ours (the notice a robot sends back); a new mail with such a subject
is stored as a request, never acknowledged. Mail from a mailing list (List-Id,
List-Unsubscribe) is a person's words and is stored, but never acknowledged.
"""

import re

from helpgate.threading.context import Action, Context
from helpgate.threading.directory import Directory
from helpgate.threading.markers import is_own_message_id, marker_numbers

NAME = "auto_reply"
DESCRIPTION = "ignore auto-replies, out-of-office notices and bulk mail"

_BULK_PRECEDENCE = {"bulk", "junk", "list", "auto_reply", "auto-reply"}
_SUPPRESS_AUTO = {"all", "oof", "autoreply"}
# Out-of-office and auto-reply subject phrases of Outlook/Exchange, Lotus Notes, Gmail,
# Yandex and Mail.ru in Russian, English, German and the other supported languages.
OUT_OF_OFFICE = (
    "автоматический ответ", "автоответ", "автоответчик", "отсутствую в офисе",
    "отсутствую на рабочем месте", "вне офиса",
    "out of office", "out of office autoreply", "out of the office", "automatic reply",
    "auto reply", "auto-reply", "autoreply", "auto response", "auto-response",
    "autoresponse", "automated response", "away from the office",
    "abwesenheitsnotiz", "automatische antwort", "nicht im büro",
    "réponse automatique", "absent du bureau", "respuesta automática",
    "fuera de la oficina", "risposta automatica", "fuori sede", "automatisch antwoord",
    "autosvar", "fraværende", "frånvarande", "automaattinen vastaus",
    "poza biurem", "odpowiedź automatyczna", "automatická odpověď", "otomatik yanıt",
    "автоматична відповідь", "自动回复", "自動回覆", "自動応答", "자동 회신",
)
_OUT_OF_OFFICE = re.compile(
    r"^\s*(" + "|".join(re.escape(p).replace(r"\ ", r"\s+")
                       for p in sorted(OUT_OF_OFFICE, key=len, reverse=True))
    + r")\s*(?:[:：]|[.!]*\s*$)", re.IGNORECASE)
LIST_HEADERS = ("list-id", "list-unsubscribe")


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


def subject_signal(subject: str) -> str | None:
    """The out-of-office phrase a subject opens with, or None."""
    match = _OUT_OF_OFFICE.match(subject or "")
    return f"subject {match.group(1)!r}" if match else None


def list_signal(headers: dict[str, str]) -> str | None:
    for name in LIST_HEADERS:
        if headers.get(name, "").strip():
            return f"{name.title()}: {headers[name].strip()}"
    return None


def answers_us(ctx: Context) -> bool:
    """Whether the mail carries our marker or answers one of our Message-IDs."""
    message, config = ctx.message, ctx.config
    if marker_numbers(config.threading.marker, message.subject):
        return True
    domain = config.mail.message_id_domain
    return any(is_own_message_id(mid, domain)
               for mid in (*message.in_reply_to, *message.references))


def apply(ctx: Context, directory: Directory) -> None:
    found = signal(ctx.message.headers)
    if found:
        ctx.stop(NAME, Action.IGNORED, f"auto-reply ({found})")
        return
    by_subject = subject_signal(ctx.message.subject)
    if by_subject and answers_us(ctx):
        ctx.stop(NAME, Action.IGNORED, f"auto-reply to our mail ({by_subject})")
        return
    if by_subject:
        ctx.decision.no_acknowledgement = f"perhaps an auto-reply ({by_subject})"
        ctx.fire(NAME, f"perhaps an auto-reply ({by_subject}): stored, never acknowledged")
    mailing_list = list_signal(ctx.message.headers)
    if mailing_list:
        ctx.decision.no_acknowledgement = f"mailing list ({mailing_list})"
        ctx.fire(NAME, f"mailing list ({mailing_list}): stored, never acknowledged")
