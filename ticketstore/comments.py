"""A ticket's comments where the gateway finds or adds one outside the pipeline's inserts:
the comment a messenger's edit names, a staff reply, a customer's latest words.

The pipeline writes a message's comment through Core (`insert_returning_id` of
ticketstore/repository.py); these are the other ways to the comments table, kept here
because the store's SQL is ticketstore's alone (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from helpgate.ticketstore.models import Comment

_COMMENTS = Comment.__table__
# Built once: the bot's every answer to a customer may ask for it.
_LATEST_WORDS = select(_COMMENTS.c.text).where(
    _COMMENTS.c.contact_id == bindparam("contact_id"), _COMMENTS.c.author_kind == "contact"
).order_by(_COMMENTS.c.id.desc()).limit(1)


def by_message_id(session: Session, channel: str, message_id: str) -> Comment | None:
    """The latest Comment entity stored from the message `message_id` on `channel` (the
    message a messenger's edit names); None when there is none."""
    return session.scalar(select(Comment).where(
        Comment.message_id == message_id, Comment.channel == channel)
        .order_by(Comment.id.desc()).limit(1))


def latest_words(session: Session, contact_id: int) -> str | None:
    """The text of the contact's latest comment of their own; None when there is none."""
    return session.connection().scalar(_LATEST_WORDS, {"contact_id": contact_id})


def add(session: Session, comment: Comment) -> Comment:
    """Add a new Comment entity and flush, so that it has its id; the session's other
    pending changes (its ticket's) go in the same flush."""
    session.add(comment)
    session.flush()
    return comment
