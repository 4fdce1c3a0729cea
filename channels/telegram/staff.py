"""The Telegram staff group: a forum supergroup where each ticket has a topic of its own.

The bot posts a ticket's conversation in its topic (outbound/staff_topics.py); what an
employee writes there acts on the ticket (gateway/staff_actions.py): plain words answer
the customer, `/note text` is a private note, `/close` closes it. This module is the
channel's side: which updates are staff's (a message in a topic of the configured group,
`telegram.staff_chat_id`), the record kept for them (marked `staff`, so that reading it
again gives the same message whatever the config says then), the message the pipeline
gets (with its `StaffAction`: the topic by chat and thread id, never by reply_to — in a
topic every message is a reply to the topic's first one), and what the bot needs there
(it must read every message: privacy mode off, or an administrator; and be allowed to
manage topics), said at start-up and by `helpgate telegram check`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from helpgate.channels.base import Finding, InboundMessage, StaffAction
from helpgate.channels.telegram import parse as tgparse

if TYPE_CHECKING:   # the client library is imported only where the bot runs
    from aiogram import Bot

log = logging.getLogger("helpgate.telegram")
GROUP_FIX = ("add the bot to the staff group and set [telegram] staff_chat_id to the "
             "group's id (-100...; forward a message from the group to @userinfobot, or "
             "read it from the bot's updates)")


def in_staff_chat(update: dict, staff_chat_id: int) -> bool:
    """A message (or its edit) in the configured staff group."""
    if not staff_chat_id:
        return False
    message = update.get(tgparse.update_kind(update))
    return isinstance(message, dict) and (message.get("chat") or {}).get("id") == staff_chat_id


def unhandled(update: dict) -> str | None:
    """Why an update of the staff group is no staff action (None: it is one). Such are
    skipped: talk in the General topic is staff's own, and service messages (a topic
    made, renamed, closed) ask nothing."""
    kind = tgparse.update_kind(update)
    if kind not in tgparse.MESSAGE_KINDS:
        return kind
    message = update[kind]
    if not message.get("is_topic_message") or not message.get("message_thread_id"):
        return f"{kind} outside a topic"
    sender = message.get("from")
    if not sender or sender.get("is_bot"):
        return f"{kind} from a bot or an anonymous administrator"
    if not (message.get("text") or message.get("caption") or tgparse.files_of(message)):
        return f"{kind} without words or files (a service message)"
    return None


def envelope(update: dict, files: dict[str, dict] | None = None) -> bytes:
    return tgparse.envelope(update, files, staff=True)


def parse(record: dict, raw: bytes, key: str, received_at: datetime) -> InboundMessage:
    """A kept staff record -> the message with its StaffAction."""
    update = record["update"]
    kind = tgparse.update_kind(update)
    reason = unhandled(update)
    if reason is not None:
        return InboundMessage(channel=tgparse.CHANNEL, raw=raw, dedupe_key=key,
                              received_at=received_at,
                              problem=f"telegram staff group update of kind {reason}")
    message = update[kind]
    sender = message["from"]
    name = " ".join(part for part in (sender.get("first_name"), sender.get("last_name"))
                    if part) or None
    words = message.get("text") or message.get("caption") or ""
    asked, rest = tgparse.command({"text": words})
    attachments, notes = tgparse.received_files(message, record.get("files") or {})
    body = "\n\n".join(part for part in (rest if asked else words, *notes) if part)
    edited = kind == "edited_message"
    date = message.get("edit_date") if edited else message.get("date")
    chat_id = message["chat"]["id"]
    own_id = f"telegram:{chat_id}:{message['message_id']}"
    return InboundMessage(
        channel=tgparse.CHANNEL, raw=raw, dedupe_key=key, received_at=received_at,
        sender_id=str(sender["id"]), sender_name=name,
        date=datetime.fromtimestamp(int(date), timezone.utc).isoformat() if date else None,
        text=body, attachments=tuple(attachments), message_id=own_id,
        edit_of=own_id if edited else None,
        staff_action=StaffAction(chat_id=chat_id, thread_id=int(message["message_thread_id"]),
                                 command=asked))


# ---- what the bot needs in the staff group -------------------------------------------

async def findings(bot: Bot, me, staff_chat_id: int) -> list[Finding]:
    """The staff group as the bot finds it: a forum, the bot allowed to manage topics,
    and reading every message there. [] without a staff group. Network errors pass."""
    from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
    if not staff_chat_id:
        return []
    try:
        chat = await bot.get_chat(staff_chat_id)
        member = await bot.get_chat_member(staff_chat_id, me.id)
    except (TelegramBadRequest, TelegramForbiddenError) as exc:
        return [Finding("staff_group", False, f"the staff group {staff_chat_id} "
                        f"([telegram] staff_chat_id) cannot be read: {exc.message}",
                        GROUP_FIX)]
    title = f"{chat.title or staff_chat_id!s} ({staff_chat_id})"
    found = []
    if chat.type == "supergroup" and chat.is_forum:
        found.append(Finding("staff_group", True, f"the staff group {title} is a forum: "
                                                  "each ticket gets a topic there"))
    else:
        found.append(Finding(
            "staff_group", False, f"the staff group {title} has no topics: tickets cannot "
            "get a topic each",
            "turn Topics on in the group's settings (Edit -> Topics); the group becomes a "
            "supergroup, and its id may change: check staff_chat_id again"))
    admin = member.status == "administrator"
    if member.status in ("left", "kicked"):
        found.append(Finding("staff_rights", False, f"the bot is not in the staff group "
                                                    f"{title}", GROUP_FIX))
    elif admin and getattr(member, "can_manage_topics", False):
        found.append(Finding("staff_rights", True, "the bot is an administrator of the staff "
                                                   "group and may manage topics"))
    else:
        found.append(Finding(
            "staff_rights", False, "the bot may not manage topics in the staff group "
            f"({'an administrator without that right' if admin else 'not an administrator'})"
            ": it cannot make a topic for a ticket",
            "make the bot an administrator of the staff group with the right \"Manage "
            "topics\" (group -> Administrators -> the bot)"))
    if admin:
        found.append(Finding("staff_privacy", True, "the bot reads every message in the "
                                                    "staff group (it is an administrator)"))
    elif me.can_read_all_group_messages:
        found.append(Finding("staff_privacy", True, "the bot reads every message in the "
                                                    "staff group (privacy mode is off)"))
    else:
        found.append(Finding(
            "staff_privacy", False, "privacy mode is on and the bot is no administrator of "
            "the staff group: it sees only commands there, so staff's answers in the topics "
            "never reach it (/note and /close would)",
            f"make the bot an administrator of the staff group (it then reads everything), "
            f"or /setprivacy -> @{me.username} -> Disable at @BotFather and add the bot to "
            "the group again"))
    return found


async def report(bot: Bot, me, staff_chat_id: int) -> None:
    """The findings in the log at start-up: what would keep staff's words from arriving
    is a warning with its fix."""
    for finding in await findings(bot, me, staff_chat_id):
        if finding.ok:
            log.info("telegram: %s", finding.detail)
        else:
            log.warning("telegram: %s; fix: %s", finding.detail, finding.fix)
