"""A kept web form submission -> the InboundMessage the pipeline decides on (R-CH-5).

The raw record is a JSON envelope of what was submitted, with the labels the form showed,
so that replay and crash recovery build the same ticket text whatever the texts are
configured to later:

    {"id": <uuid of the submission>, "lang": "ru" | "en",
     "fields": [{"key": "name" | "email" | "phone" | "text", "label": "Name",
                 "value": "..."}, ...],
     "subject": <the default subject in the form's language>,
     "client": <the client's address>?, "trap": <what a bot put in the hidden field>?,
     "files": [{"name", "mime", "data_b64"}, ...]?}

The fields are the form's own four and those configured (`[webform] fields`), under the
labels shown; the files become attachments of the ticket's first comment.

R-CH-5: every filled field goes into the description as `"Field name": "Field value"`,
one field per line (a multi-line value continues on the lines after its own, inside
its quotes); the subject is the first line of the request text, or "Request via web
form". The submitter is known by the email they gave, exactly as a mail sender is.

A filled hidden field (`trap`) marks a bot: the message carries SPAM_TRAP_HEADER and rule
spam_trap keeps it in quarantine with the reason rather than dropping it, so a person
whose browser filled it loses nothing (a replay makes it a ticket).
`parse` never raises: a record it cannot read becomes a message with a `problem`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime

from helpgate.channels.base import InboundAttachment, InboundMessage
from helpgate.threading.message import SPAM_TRAP_HEADER

CHANNEL = "webform"
FIELDS = ("name", "email", "phone", "text")
DEFAULT_SUBJECT = "Request via web form"
# A ticket's subject is one line; a long first line is cut here.
MAX_SUBJECT = 200
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def envelope(submission_id: str, fields: list[dict], *, lang: str, subject: str,
             client: str | None = None, trap: str = "",
             files: list[tuple[str, str, bytes]] = ()) -> bytes:
    """The raw record kept for one submission; `fields` in the form's order, each
    {"key", "label", "value"} (empty values are left out); `files` (filename, content
    type, bytes) each."""
    record: dict = {"id": submission_id, "lang": lang,
                    "fields": [f for f in fields if f.get("value")], "subject": subject}
    if files:
        record["files"] = [{"name": name, "mime": mime,
                            "data_b64": base64.b64encode(data).decode("ascii")}
                           for name, mime, data in files]
    if client:
        record["client"] = client
    if trap:
        record["trap"] = trap
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def clean(value: str) -> str:
    """A submitted value as it is kept: line ends made \\n, control characters out,
    blanks around it trimmed."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", value).strip()


def description(fields: list[dict]) -> str:
    """R-CH-5: `"Field name": "Field value"`, one filled field per line."""
    return "\n".join(f'"{f["label"]}": "{f["value"]}"' for f in fields if f.get("value"))


def subject_of(fields: list[dict], default: str) -> str:
    text = next((f["value"] for f in fields if f.get("key") == "text"), "")
    first = next((line.strip() for line in text.split("\n") if line.strip()), "")
    if not first:
        return default
    return first if len(first) <= MAX_SUBJECT else first[:MAX_SUBJECT - 1] + "…"


def parse(raw: bytes, received_at: datetime) -> InboundMessage:
    try:
        record = json.loads(raw)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        fields = [{"key": str(f["key"]), "label": str(f["label"]), "value": clean(str(f["value"]))}
                  for f in record.get("fields") or []]
        submission = str(record["id"])
        attachments = tuple(InboundAttachment(
            filename=str(f["name"]), content_type=str(f.get("mime") or
                                                      "application/octet-stream"),
            data=base64.b64decode(f["data_b64"], validate=True))
            for f in record.get("files") or [])
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as exc:
        return InboundMessage(channel=CHANNEL, raw=raw, dedupe_key="",
                              received_at=received_at,
                              problem=f"not a web form record: {type(exc).__name__}: {exc}")
    values = {f["key"]: f["value"] for f in fields}
    email = values.get("email") or None
    problem = None
    # Decided by rule spam_trap, not here: a replay must be able to make it a ticket.
    trap = clean(str(record.get("trap") or ""))[:200]
    if not email:
        problem = "web form submission without an email address"
    elif not values.get("text"):
        problem = "web form submission without a message"
    lang = record.get("lang") if record.get("lang") in ("ru", "en") else None
    return InboundMessage(
        channel=CHANNEL, raw=raw, dedupe_key=f"webform:{submission}", received_at=received_at,
        sender_email=email.lower() if email else None, sender_name=values.get("name") or None,
        sender_phone=values.get("phone") or None, sender_language=lang,
        subject=subject_of(fields, str(record.get("subject") or DEFAULT_SUBJECT)),
        text=description(fields), attachments=attachments, problem=problem, chat=False,
        headers={SPAM_TRAP_HEADER: trap} if trap else {})
