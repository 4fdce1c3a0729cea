"""What is posted in a ticket's topic of the Telegram staff group (telegram.staff_chat_id).

Staff follow a ticket in its topic as a conversation: every message the customer sends
(who wrote, from where, the words, the files by name), staff's answers and private notes
made elsewhere (email, `helpgate reply`), and each status change. What staff write in the
topic itself is already there and is not posted again. Posts are outbox rows of kind
"topic" to the staff group, in the transaction of the event (durable, retried, never
twice); the outbox sends a ticket's posts one at a time in order, and the Telegram
transport makes the topic on the first post and again when staff deleted it
(outbound/telegram.py). The Notifier (outbound/notify.py) calls these.
"""

from __future__ import annotations

from helpgate.config.schema import Config
from helpgate.outbound.compose import Draft
from helpgate.ticketstore.models import Ticket

KIND = "topic"
CHANNEL = "telegram"
# Telegram's limit on a topic's name; the transport cuts by Telegram's count again.
MAX_NAME = 128
# The decision of a comment staff wrote in its ticket's topic (gateway/staff_actions.py).
FROM_TOPIC = "staff_topic"


class StaffTopics:
    def __init__(self, config: Config) -> None:
        self.config = config

    @property
    def on(self) -> bool:
        """A staff group is configured, and a bot to post there."""
        return bool(self.config.telegram.token and self.config.telegram.staff_chat_id)

    @staticmethod
    def name(ticket: Ticket) -> str:
        """The topic's name: "#<number> <subject>", cut to Telegram's limit."""
        return " ".join(f"#{ticket.number} {ticket.subject}".split())[:MAX_NAME]

    @staticmethod
    def from_topic(comment) -> bool:
        """Written in the topic by staff: it is there already."""
        return (getattr(comment, "decision", None) or {}).get("action") == FROM_TOPIC

    def post(self, ticket: Ticket, event_key: str, content: str,
             comment_id: int | None = None) -> list[Draft]:
        """One post in the ticket's topic; [] without a staff group. `event_key` names the
        event, so that replaying it never posts twice."""
        if not self.on or not content.strip():
            return []
        return [Draft(kind=KIND, channel=CHANNEL,
                      recipient=str(self.config.telegram.staff_chat_id),
                      subject=self.name(ticket), text=content.strip(),
                      content=content.strip(), dedupe_key=f"{KIND}:{event_key}",
                      ticket_id=ticket.id, comment_id=comment_id)]
