"""Where a ticket lives in messenger chats: its staff topic, and its messages by (chat,
message id), read both ways.

A Telegram message is named by its chat and its id in that chat (ids count per chat), so
the pair is the key. The outbox records what the bot posted (ticketstore/outbox.py `record`),
the gateway what staff wrote in a topic (gateway/staff_actions.py); both ask here which
ticket a topic or a message belongs to.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import ChatMessage, StaffTopic
from helpgate.ticketstore.repository import connection, insert_ignoring_conflict

_TOPICS = StaffTopic.__table__
_MESSAGES = ChatMessage.__table__
_TOPICS_OF = select(_TOPICS.c.ticket_id, _TOPICS.c.chat_id, _TOPICS.c.thread_id).where(
    _TOPICS.c.ticket_id.in_(bindparam("ticket_ids", expanding=True)))
_TICKET_BY_TOPIC = select(_TOPICS.c.ticket_id).where(
    _TOPICS.c.chat_id == bindparam("chat_id"), _TOPICS.c.thread_id == bindparam("thread_id"))
_MESSAGE = select(_MESSAGES.c.ticket_id, _MESSAGES.c.comment_id).where(
    _MESSAGES.c.channel == bindparam("channel"), _MESSAGES.c.chat_id == bindparam("chat_id"),
    _MESSAGES.c.message_id == bindparam("message_id"))
_MESSAGES_OF_COMMENT = select(_MESSAGES.c.channel, _MESSAGES.c.chat_id,
                              _MESSAGES.c.message_id).where(
    _MESSAGES.c.comment_id == bindparam("comment_id")).order_by(_MESSAGES.c.id)


def topics_of(session: Session, ticket_ids: list[int]) -> dict[int, tuple[int, int]]:
    """ticket id -> (chat id, thread id) of its staff topic, for those that have one."""
    if not ticket_ids:
        return {}
    rows = connection(session).execute(_TOPICS_OF, {"ticket_ids": sorted(set(ticket_ids))})
    return {ticket_id: (chat_id, thread_id) for ticket_id, chat_id, thread_id in rows}


def remember_topic(session: Session, ticket_id: int, chat_id: int, thread_id: int,
                   now: datetime) -> None:
    """The ticket's topic is now this one (made for it, or made again after staff deleted
    the earlier one): the earlier row goes."""
    db = connection(session)
    db.execute(delete(_TOPICS).where((_TOPICS.c.ticket_id == ticket_id) | (
        (_TOPICS.c.chat_id == chat_id) & (_TOPICS.c.thread_id == thread_id))))
    db.execute(_TOPICS.insert(), {"ticket_id": ticket_id, "chat_id": chat_id,
                                  "thread_id": thread_id, "created_at": now})


def ticket_by_topic(session: Session, chat_id: int, thread_id: int) -> int | None:
    """The id of the ticket whose topic this is."""
    return connection(session).scalar(_TICKET_BY_TOPIC, {"chat_id": chat_id,
                                                         "thread_id": thread_id})


def remember_messages(session: Session, channel: str, ticket_id: int, comment_id: int | None,
                      messages: list[tuple[int, int]], now: datetime) -> None:
    """These (chat id, message id) carry the ticket (and the comment, when one)."""
    if not messages:
        return
    insert_ignoring_conflict(session, ChatMessage, [
        {"channel": channel, "chat_id": chat_id, "message_id": message_id,
         "ticket_id": ticket_id, "comment_id": comment_id, "created_at": now}
        for chat_id, message_id in messages], ("channel", "chat_id", "message_id"))


def message(session: Session, channel: str, chat_id: int,
            message_id: int) -> tuple[int, int | None] | None:
    """(ticket id, comment id) of a message, when it is one of a ticket's."""
    row = connection(session).execute(_MESSAGE, {"channel": channel, "chat_id": chat_id,
                                                 "message_id": message_id}).first()
    return (row.ticket_id, row.comment_id) if row else None


def messages_of_comment(session: Session, comment_id: int) -> list[tuple[str, int, int]]:
    """(channel, chat id, message id) of every message that carries the comment."""
    return [tuple(row) for row in connection(session).execute(
        _MESSAGES_OF_COMMENT, {"comment_id": comment_id})]
