"""A kept Telegram record -> the InboundMessage the pipeline decides on.

The raw record the store keeps for a Telegram message is a JSON envelope, so that replay
and crash recovery read exactly what arrived, files included (a file_id may no longer be
downloadable when the record is read again):

    {"update": <the Update as Telegram sent it>,
     "files": {file_unique_id: {"name", "mime", "data_b64"}
                             | {"name", "mime", "too_big": size, "note"?}
                             | {"name", "mime", "failed": reason, "note"?}},
     "bot": <the bot's username>?, "staff": true?}

Besides words, an update may be a request to the bot (threading/message.py ChatAction):
/close, or a pressed inline button (a callback query whose data names the action). In a
customer company's group chat the adapter keeps only what is addressed to the bot (a
mention, a reply to it, a command); the mention is taken out of the words here.

`staff` marks a message written in a topic of the staff group (channels/telegram/
staff.py reads it): the adapter knew the configured group when it kept the record, and
the mark keeps the record meaning the same when it is read again.

`note` is the line for the ticket, written by the adapter in the customer's language
with the admin's texts; a record without one gets the English built-in text. `parse`
never raises: a record it cannot read becomes a message with a `problem` (quarantine).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timezone
from typing import Any

from helpgate.channels.base import ChatAction, InboundAttachment, InboundMessage
from helpgate.config.schema import TEXTS, format_size

CHANNEL = "telegram"
# Bots download at most 20 MB through the Bot API (getFile refuses bigger files).
DOWNLOAD_LIMIT = 20 * 1024 * 1024
# The updates this channel reads; asked for in getUpdates/setWebhook, so Telegram does
# not send the rest (callback queries, member changes) at all.
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
MESSAGE_KINDS = ("message", "edited_message")
GROUPS = ("group", "supergroup")
# What a message may carry besides text, to name what is not handled yet.
CONTENT_KINDS = ("sticker", "voice", "video_note", "video", "audio", "animation", "location",
                 "venue", "poll", "dice", "game", "story", "contact", "photo", "document")


def envelope(update: dict, files: dict[str, dict] | None = None, bot: str | None = None,
             **marks: bool) -> bytes:
    """The raw record kept for one update: `bot` the bot's username (a group message's
    mention of it is taken out of the words), `marks` what the adapter knew of it
    (staff=True: written in the staff group, channels/telegram/staff.py)."""
    record = {"update": update, "files": files or {}, **({"bot": bot} if bot else {}),
              **marks}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def update_kind(update: dict) -> str:
    return next((key for key in update if key != "update_id"), "empty")


def unhandled(update: dict) -> str | None:
    """Why an update is not a customer's message this channel handles (None: it is).

    Such updates are skipped by the adapter without being stored: group chatter, channel
    posts and bot status changes are no one's request, and keeping them would fill the
    quarantine with noise staff must clear."""
    kind = update_kind(update)
    if kind == "callback_query":
        query = update[kind]
        if ChatAction.from_data(query.get("data") or "") is None:
            return "callback_query with data not of ours"
        return "callback_query from a bot" if (query.get("from") or {}).get("is_bot") else None
    if kind not in MESSAGE_KINDS:
        return kind
    message = update[kind]
    chat_type = (message.get("chat") or {}).get("type")
    if chat_type != "private" and chat_type not in GROUPS:
        return f"{kind} in a {chat_type} chat"
    sender = message.get("from")
    if not sender or sender.get("is_bot"):
        return f"{kind} from a bot"
    return None


def addressed(message: dict, bot_id: int, username: str | None) -> bool:
    """Whether a group message is for the bot: it mentions the bot, replies to one of
    its messages, or is a command (to the bot by name, or to any bot: a group's members
    type /new without a name)."""
    reply = message.get("reply_to_message") or {}
    if (reply.get("from") or {}).get("id") == bot_id and not message.get("is_topic_message"):
        return True
    text = message.get("text") or message.get("caption") or ""
    name = (username or "").lower()
    for entity in message.get("entities") or message.get("caption_entities") or []:
        part = _utf16_slice(text, entity.get("offset", 0), entity.get("length", 0)).lower()
        if entity.get("type") == "mention" and name and part == f"@{name}":
            return True
        if entity.get("type") == "text_mention" and (entity.get("user") or {}).get("id") \
                == bot_id:
            return True
        if entity.get("type") == "bot_command" and entity.get("offset") == 0:
            return "@" not in part or part.endswith(f"@{name}")
    return False


def _utf16_slice(text: str, offset: int, length: int) -> str:
    # Telegram counts entity offsets in UTF-16 code units.
    units = text.encode("utf-16-le")
    return units[offset * 2:(offset + length) * 2].decode("utf-16-le", errors="replace")


def _without_mention(text: str, username: str | None) -> str:
    if not username:
        return text
    return re.sub(rf"(?i)(^|\s)@{re.escape(username)}\b[,:]?", r"\1", text).strip()


def command(message: dict) -> tuple[str | None, str]:
    """A bot command leading a message ("/new", "/start@bot payload"): its name, lower
    case, and the words after it; (None, the text) for anything else."""
    text = (message.get("text") or "").strip()
    if not text.startswith("/"):
        return None, message.get("text") or ""
    head, _, rest = text.partition(" ")
    name = head[1:].split("@", 1)[0].lower()
    return (name, rest.strip()) if name.isidentifier() else (None, message.get("text") or "")


def files_of(message: dict) -> list[dict]:
    """The files of a message to receive: the largest size of a photo (Telegram lists
    them smallest first), a document with its name."""
    found = []
    if message.get("photo"):
        largest = message["photo"][-1]
        found.append({**largest, "name": f"photo_{message.get('message_id', 0)}.jpg",
                      "mime": "image/jpeg"})
    document = message.get("document")
    if document:
        found.append({**document, "name": document.get("file_name") or
                      f"document_{message.get('message_id', 0)}",
                      "mime": document.get("mime_type") or "application/octet-stream"})
    return found


def too_big_note(name: str, size: int, texts=None) -> str:
    texts = texts or TEXTS["en"]
    return texts.file_too_big_to_receive.format(filename=name, size=format_size(size),
                                                limit=format_size(DOWNLOAD_LIMIT))


def failed_note(name: str, reason: str, texts=None) -> str:
    texts = texts or TEXTS["en"]
    return texts.file_not_received.format(filename=name, reason=reason)


def received_files(message: dict, files: dict[str, dict]
                   ) -> tuple[list[InboundAttachment], list[str]]:
    """The message's files as the envelope kept them: the attachments, and a line for
    each file that could not be received."""
    attachments, notes = [], []
    for ref in files_of(message):
        entry = files.get(ref.get("file_unique_id")) or {}
        filename = entry.get("name") or ref["name"]
        if "data_b64" in entry:
            attachments.append(InboundAttachment(
                filename=filename, content_type=entry.get("mime") or ref["mime"],
                data=base64.b64decode(entry["data_b64"])))
        elif "too_big" in entry:
            notes.append(entry.get("note") or too_big_note(filename, int(entry["too_big"])))
        else:
            notes.append(entry.get("note") or failed_note(
                filename, entry.get("failed") or "not in the record"))
    return attachments, notes


def parse(raw: bytes, received_at: datetime) -> InboundMessage:
    """A kept envelope -> its message; never raises."""
    try:
        return _parse(raw, received_at)
    except Exception as exc:  # a broken record is kept in quarantine with the reason
        return InboundMessage(channel=CHANNEL, raw=raw, dedupe_key="", received_at=received_at,
                              problem=f"unreadable telegram record: {type(exc).__name__}: "
                                      f"{exc}")


def _parse(raw: bytes, received_at: datetime) -> InboundMessage:
    record = json.loads(raw)
    update: dict[str, Any] = record["update"]
    files: dict[str, dict] = record.get("files") or {}
    update_id = int(update["update_id"])
    kind = update_kind(update)
    edited = kind == "edited_message"
    key = f"{'edit' if edited else 'update'}:{update_id}"
    if record.get("staff"):  # written in the staff group (the adapter said so)
        from helpgate.channels.telegram import staff
        return staff.parse(record, raw, key, received_at)
    reason = unhandled(update)
    if reason is not None:
        return InboundMessage(channel=CHANNEL, raw=raw, dedupe_key=key, received_at=received_at,
                              problem=f"telegram update of kind {reason} is not handled yet")
    if kind == "callback_query":
        return _button(update[kind], raw, key, received_at)
    message = update[kind]
    sender = message["from"]
    name = _name(sender)
    chat = message["chat"]
    group = str(chat["id"]) if chat.get("type") in GROUPS else None
    # /new: the words after it open a ticket of their own (no chat to continue).
    asked, rest = command(message)
    fresh = asked == "new"
    if asked == "close":
        number = rest.lstrip("#№ ").split(" ", 1)[0]
        return InboundMessage(
            channel=CHANNEL, raw=raw, dedupe_key=key, received_at=received_at,
            sender_id=str(sender["id"]), sender_name=name, chat_id=group,
            sender_language=sender.get("language_code"),
            action=ChatAction("close", int(number) if number.isdigit() else None))
    text = (rest or "/new" if fresh else message.get("text")) or message.get("caption") or ""
    if group:
        text = _without_mention(text, record.get("bot"))
    attachments, notes = received_files(message, files)
    phone = None
    contact = message.get("contact")
    # A shared contact is the sender's phone only when it is their own card.
    if contact and contact.get("user_id") == sender["id"]:
        phone = contact.get("phone_number")
        text = text or phone or ""
    body = "\n\n".join(part for part in (text, *notes) if part)
    if not body and not attachments:
        content = next((k for k in CONTENT_KINDS if k in message), "unknown")
        return InboundMessage(channel=CHANNEL, raw=raw, dedupe_key=key, received_at=received_at,
                              sender_id=str(sender["id"]), sender_name=name,
                              problem=f"telegram message of kind {content} is not handled yet")
    date = message.get("edit_date") if edited else message.get("date")
    # Message ids are per chat: the pair names the message, and an edit names it again.
    own_id = f"telegram:{message['chat']['id']}:{message['message_id']}"
    return InboundMessage(
        channel=CHANNEL, raw=raw, dedupe_key=key, received_at=received_at,
        sender_id=str(sender["id"]), sender_name=name, sender_phone=phone,
        sender_language=sender.get("language_code"),
        date=datetime.fromtimestamp(int(date), timezone.utc).isoformat() if date else None,
        text=body, attachments=tuple(attachments), message_id=own_id,
        edit_of=own_id if edited else None,
        headers={"x-telegram-edited": "1"} if edited else {},
        # A private chat is one conversation: the rule `conversation` continues the
        # sender's latest ticket, unless the customer asked for a new one.
        chat=not fresh, chat_id=group)


def _name(sender: dict) -> str | None:
    return " ".join(part for part in (sender.get("first_name"), sender.get("last_name"))
                    if part) or None


def _button(query: dict, raw: bytes, key: str, received_at: datetime) -> InboundMessage:
    """A pressed inline button: the action its data names, by whoever pressed it."""
    sender = query["from"]
    chat = (query.get("message") or {}).get("chat") or {}
    return InboundMessage(
        channel=CHANNEL, raw=raw, dedupe_key=key, received_at=received_at,
        sender_id=str(sender["id"]), sender_name=_name(sender),
        sender_language=sender.get("language_code"),
        chat_id=str(chat["id"]) if chat.get("type") in GROUPS else None,
        action=ChatAction.from_data(query["data"]))
