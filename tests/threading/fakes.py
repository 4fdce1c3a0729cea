"""An in-memory Directory and message/context builders: rules tested without I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from helpgate.channels.base import InboundMessage
from helpgate.config.schema import Config
from helpgate.threading.context import Context, Person, TicketView
from helpgate.threading.directory import ChatTickets, ReplyToken

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


@dataclass
class FakeDirectory:
    tickets: dict[int, TicketView] = field(default_factory=dict)
    stored_ids: dict[str, int] = field(default_factory=dict)  # Message-ID -> ticket number
    outbox_ids: dict[str, int] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    domains: dict[str, int] = field(default_factory=dict)
    admins: list[Person] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, ReplyToken] = field(default_factory=dict)
    history: dict[int, list[str]] = field(default_factory=dict)  # ticket id -> texts
    chosen: dict[str, int] = field(default_factory=dict)  # "channel:sender" -> number
    chats: dict[str, int] = field(default_factory=dict)   # "channel:chat" -> company id

    def ticket_by_number(self, number):
        return self.tickets.get(number)

    def ticket_by_message_ids(self, message_ids):
        for message_id in message_ids:
            if message_id in self.stored_ids:
                return self.tickets[self.stored_ids[message_id]]
        return None

    def outbox_id_by_message_id(self, message_id):
        return self.outbox_ids.get(message_id)

    def person_by_email(self, email):
        return self.people.get(email.lower())

    def person_by_identity(self, channel, external_id):
        # Mail by address; other channels as "channel:id" keys of `people`.
        if channel == "email":
            return self.person_by_email(external_id)
        return self.people.get(f"{channel}:{external_id}")

    def chat_tickets(self, contact_id, channel, sender_id, chat, open_statuses):
        # The contact's tickets from the channel (all in one chat); the chosen one by
        # "channel:sender" in `chosen`; open ones the highest-numbered first.
        mine = sorted((t for t in self.tickets.values()
                       if t.contact_id == contact_id and t.channel == channel),
                      key=lambda t: -t.number)
        chosen = self.chosen.get(f"{channel}:{sender_id}")
        return ChatTickets(chosen=self.tickets.get(chosen) if chosen else None,
                           latest=mine[0] if mine else None,
                           open=tuple(t for t in mine if t.status in open_statuses))

    def company_by_chat(self, channel, chat):
        return self.chats.get(f"{channel}:{chat}")

    def company_by_domain(self, domain):
        return self.domains.get(domain)

    def earliest_admin(self):
        return self.admins[0] if self.admins else None

    def messages_from_since(self, sender, since):
        return self.sent.get(sender, 0)

    def reply_token(self, token):
        return self.tokens.get(token)

    def ticket_history(self, ticket_id):
        return list(self.history.get(ticket_id, []))


def ticket(number: int = 5, status: str = "open", type: str = "question",
           closed_at: datetime | None = None, contact_id: int | None = 1) -> TicketView:
    return TicketView(id=number * 10, number=number, status=status, type=type,
                      channel="email", contact_id=contact_id, company_id=None,
                      closed_at=closed_at)


ANNA = Person(kind="employee", id=1, email="anna@helpgate.test", name="Anna", role="admin")
IVAN = Person(kind="contact", id=7, email="ivan@romashka.ru", name="Ivan", company_id=3)


def message(**fields) -> InboundMessage:
    base = InboundMessage(channel="email", raw=b"", dedupe_key="k", received_at=NOW,
                          sender_email="ivan@romashka.ru", subject="Принтер",
                          message_id="<m1@romashka.ru>", text="Не печатает принтер.")
    return replace(base, **fields)


def context(config: Config | None = None, now: datetime = NOW, **fields) -> Context:
    config = config or Config()
    return Context(message=message(**fields), config=config, now=now,
                   ticket_type=config.tickets.default_type)
