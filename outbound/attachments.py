"""Stored attachments on their way out: into notifications, and into files on disk.

A file's name is kept as the sender gave it (R-TS-2), so a stored name may be
`../../etc/passwd`, an absolute path, or hold NULs and control characters. Every place
that writes a file — a mail client saving our attachment, `helpgate attachment get` —
gets a name from `safe_filename`: one path component, nothing hidden or reserved.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from sqlalchemy.orm import Session

from helpgate.outbound.base import OutgoingFile
from helpgate.ticketstore.outbox import stored_files

# Control characters (NUL included), what Windows refuses in a name, and the bidi
# controls that make "\u202egnp.exe" show as "exe.png".
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e'
                     r'\u2066-\u2069<>:"|?*]')
_SEPARATORS = re.compile(r"[/\\]+")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{n}" for n in range(10)),
             *(f"lpt{n}" for n in range(10))}
# Bytes of a name; file systems allow 255.
MAX_NAME = 200
DEFAULT_TYPE = "application/octet-stream"


def safe_filename(name: str | None, fallback: str = "attachment") -> str:
    """A name that stays in the folder it is written to, whatever `name` holds."""
    text = unicodedata.normalize("NFC", name or "")
    parts = [p for p in _SEPARATORS.split(_UNSAFE.sub("", text)) if p.strip(" .")]
    text = "_".join(p.strip() for p in parts).strip(" .")
    if text.split(".")[0].lower() in _RESERVED:
        text = f"_{text}"
    text = _shorten(text)
    return text or fallback


def _shorten(name: str) -> str:
    """At most MAX_NAME bytes of UTF-8, keeping the extension."""
    if len(name.encode("utf-8")) <= MAX_NAME:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 16:
        stem, extension = name, ""
    room = MAX_NAME - len(extension.encode("utf-8")) - (1 if extension else 0)
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .")
    return f"{stem}.{extension}" if extension else stem


def mime_type(content_type: str | None) -> tuple[str, str]:
    """(maintype, subtype) for a stored type; anything odd is sent as octet-stream."""
    maintype, _, subtype = (content_type or "").strip().lower().partition("/")
    if not maintype or not subtype or maintype in ("multipart", "message") \
            or not re.fullmatch(r"[a-z0-9.+-]+", maintype + subtype):
        maintype, _, subtype = DEFAULT_TYPE.partition("/")
    return maintype, subtype


def load_files(session: Session, rows: Sequence) -> dict[int, tuple[OutgoingFile, ...]]:
    """The files of outbox rows (their `attachments` ids), read when the rows are sent."""
    wanted = {row.id: list(row.attachments or []) for row in rows if row.attachments}
    ids = {i for listed in wanted.values() for i in listed}
    if not ids:
        return {}
    stored = {r.id: OutgoingFile(r.filename, r.content_type, r.data)
              for r in stored_files(session, ids)}
    return {row_id: tuple(stored[i] for i in listed if i in stored)
            for row_id, listed in wanted.items()}
