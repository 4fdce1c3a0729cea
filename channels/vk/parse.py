"""A kept VK record -> its InboundMessage, the same on arrival, replay and crash recovery.

The raw record the store keeps is a JSON envelope of what VK sent and what helpgate
fetched for it, so a replay needs no network:

    {"event": <the long poll / Callback API event as received>,
     "files": {"<index in message.attachments>": {"name", "mime", "data_b64"}
                                               | {"name", "mime", "failed": reason}},
     "names": {"<from_id>": "First Last"}}                      (optional)

`parse` never raises: a record it cannot read becomes a message with `problem` set, which
the pipeline quarantines.

Besides words, a customer may ask the bot for something (threading/message.py ChatAction):
"/close", "/new …", or a pressed callback button (a message_event whose payload
{"a": <action data>} names the action; outbound/vk.py makes those buttons).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone

from helpgate.channels.base import ChatAction, InboundAttachment, InboundMessage

CHANNEL = "vk"
# The events that carry a customer's words; the adapter stores no other.
MESSAGE_EVENTS = ("message_new", "message_edit")
# peer_id from here up is a group chat (a "беседа"), not a dialog with one user.
CHAT_PEER_BASE = 2_000_000_000


def envelope(event: dict, files: dict[str, dict] | None = None,
             names: dict[str, str] | None = None) -> bytes:
    """The raw record of one event (see the module docstring)."""
    record: dict = {"event": event, "files": files or {}}
    if names:
        record["names"] = names
    return json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8")


def message_of(event: dict) -> dict | None:
    """The message object of a message event: message_new wraps it with client_info
    (API 5.103+), message_edit is the message itself."""
    obj = event.get("object")
    if not isinstance(obj, dict):
        return None
    inner = obj.get("message")
    message = inner if isinstance(inner, dict) else obj
    return message if "from_id" in message else None


def button_action(event: dict) -> ChatAction | None:
    """The action a pressed callback button (message_event) asks for, if it is ours."""
    obj = event.get("object") if isinstance(event.get("object"), dict) else {}
    payload = obj.get("payload")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    data = payload.get("a") if isinstance(payload, dict) else None
    return ChatAction.from_data(data) if isinstance(data, str) else None


def is_customer_message(event: dict) -> bool:
    """A user's message in a dialog with the community, or their press of one of our
    buttons: what becomes a ticket, a comment or an action. Not: other event types, the
    community's own messages (from_id < 0), group chats."""
    if event.get("type") == "message_event":
        obj = event.get("object") or {}
        return button_action(event) is not None and int(obj.get("user_id") or 0) > 0 \
            and int(obj.get("peer_id") or 0) < CHAT_PEER_BASE
    if event.get("type") not in MESSAGE_EVENTS:
        return False
    message = message_of(event)
    if message is None:
        return False
    try:
        from_id, peer_id = int(message["from_id"]), int(message.get("peer_id") or 0)
    except (TypeError, ValueError):
        return True  # a broken one is stored, so parse quarantines it with the reason
    return from_id > 0 and peer_id < CHAT_PEER_BASE


def dedupe_key(event: dict) -> str:
    """The event's id (a re-delivered event repeats it); without one, the message's place
    in its dialog (an edit: and the time of the edit)."""
    if event.get("event_id"):
        return f"event:{event['event_id']}"
    message = message_of(event) or {}
    peer, number = message.get("peer_id"), message.get("conversation_message_id")
    if event.get("type") == "message_edit":
        return f"edit:{peer}:{number}:{message.get('update_time') or message.get('date')}"
    return f"msg:{peer}:{number}"


def parse(raw: bytes, received_at: datetime) -> InboundMessage:
    try:
        return _parse(raw, received_at)
    except Exception as exc:  # never raises: the record is kept, quarantined with why
        return _problem(raw, received_at, f"unreadable VK record: {type(exc).__name__}: {exc}")


def _problem(raw: bytes, received_at: datetime, problem: str, key: str = "") -> InboundMessage:
    return InboundMessage(channel=CHANNEL, raw=raw, received_at=received_at, problem=problem,
                          dedupe_key=key or "raw:" + base64.b64encode(raw[:48]).decode())


def _parse(raw: bytes, received_at: datetime) -> InboundMessage:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return _problem(raw, received_at, f"VK record is not JSON: {exc}")
    event = record.get("event") if isinstance(record, dict) else None
    if not isinstance(event, dict):
        return _problem(raw, received_at, "VK record has no event")
    key = dedupe_key(event)
    if event.get("type") == "message_event":
        action = button_action(event)
        user = int(event["object"].get("user_id") or 0)
        if action is None or user <= 0:
            return _problem(raw, received_at, "VK button press that is none of ours", key)
        return InboundMessage(channel=CHANNEL, raw=raw, dedupe_key=key,
                              received_at=received_at, sender_id=str(user), action=action)
    if event.get("type") not in MESSAGE_EVENTS:
        return _problem(raw, received_at, f"VK event {event.get('type')!r} is not a "
                        "customer's message", key)
    message = message_of(event)
    if message is None:
        return _problem(raw, received_at, "VK event carries no message with a sender", key)
    from_id = int(message["from_id"])
    if from_id <= 0:
        return _problem(raw, received_at, f"VK message from {from_id} is not from a user", key)
    text = str(message.get("text") or "")
    command, _, rest = text.strip().partition(" ")
    command = command.lower()
    if command == "/close" and event.get("type") == "message_new":
        number = rest.strip().lstrip("#№ ").split(" ", 1)[0]
        return InboundMessage(
            channel=CHANNEL, raw=raw, dedupe_key=key, received_at=received_at,
            sender_id=str(from_id), sender_name=(record.get("names") or {}).get(str(from_id)),
            action=ChatAction("close", int(number) if number.isdigit() else None))
    # /new: the words after it open a ticket of their own (no chat to continue).
    fresh = command == "/new" and event.get("type") == "message_new"
    if fresh:
        text = rest.strip() or "/new"
    attachments, notes = _attachments(message.get("attachments") or [],
                                      record.get("files") or {})
    if notes:
        text = "\n\n".join(part for part in (text, "\n".join(notes)) if part)
    headers = {"x-vk-peer-id": str(message.get("peer_id", from_id))}
    if event.get("type") == "message_edit":
        headers["x-vk-edited"] = "1"
    names = record.get("names") or {}
    date = message.get("date")
    # A message's place in its dialog names it; an edit names it again.
    own_id = f"vk:{message.get('peer_id', from_id)}:{message.get('conversation_message_id')}"
    edited = event.get("type") == "message_edit"
    return InboundMessage(
        channel=CHANNEL, raw=raw, dedupe_key=key, received_at=received_at,
        sender_id=str(from_id), sender_name=names.get(str(from_id)) or None,
        date=datetime.fromtimestamp(int(date), timezone.utc).isoformat() if date else None,
        text=text, attachments=tuple(attachments), headers=headers, chat=not fresh,
        message_id=own_id, edit_of=own_id if edited else None)


def _attachments(items: list, files: dict) -> tuple[list[InboundAttachment], list[str]]:
    """The files fetched for the message, and a line of text for each one that could not
    be (or whose kind helpgate does not fetch): nothing disappears silently."""
    found: list[InboundAttachment] = []
    notes: list[str] = []
    for index, item in enumerate(items):
        kind = item.get("type", "?") if isinstance(item, dict) else "?"
        file = files.get(str(index))
        if file is None:
            notes.append(f"[VK attachment: {kind}]")
            continue
        name = str(file.get("name") or f"{kind}-{index}")
        if "failed" in file:
            notes.append(f"[Attachment \"{name}\" could not be fetched from VK: "
                         f"{file['failed']}]")
            continue
        try:
            data = base64.b64decode(file.get("data_b64", ""), validate=True)
        except (binascii.Error, ValueError):
            notes.append(f"[Attachment \"{name}\" is damaged in the kept record]")
            continue
        found.append(InboundAttachment(filename=name, data=data,
                                       content_type=str(file.get("mime") or
                                                        "application/octet-stream")))
    return found, notes
