"""A customer is reached where they are (issue #17, part 1): notifications are addressed
to the contact and resolved to a channel — the ticket's, or the one staff chose, then
`notifications.fallback_order` — when queued, and again when sent should that channel
have no transport. Mail to and from email customers is unchanged."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.replies import staff_reply
from helpgate.outbound.email import EmailTransport
from helpgate.outbound.outbox import OutboxWorker
from helpgate.outbound.targets import reach
from helpgate.ticketstore import people
from helpgate.ticketstore.models import Comment, OutboxMessage
from tests.gateway.test_identities import chat
from tests.mailfactory import mail

ANNA = {"name": "Анна", "email": "anna@helpgate.test", "role": "admin"}
SEPARATOR = "##- Пожалуйста, пишите ответ выше этой строки -##"


def test_reach_tries_the_first_channel_then_the_order_where_there_is_an_address():
    known = {"telegram": "42", "email": "ivan@romashka.ru"}
    assert reach(known, "telegram", ["email"]) == ("telegram", "42")
    assert reach(known, "vk", ["vk", "email", "telegram"]) == ("email", "ivan@romashka.ru")
    assert reach(known, "telegram", ["email"], lambda c: c != "telegram") == \
        ("email", "ivan@romashka.ru")
    assert reach({"telegram": "42"}, "email", ["email"]) is None
    assert reach({}, None, ["email", "telegram"]) is None


async def directory(store, clock, **contact) -> None:
    data = people.DirectoryFile.model_validate({
        "employees": [ANNA], "contacts": [{"name": "Иван", **contact}] if contact else []})
    await store.run(people.import_directory, data, clock.now)


async def customer_rows(store) -> list[tuple]:
    return await store.run(lambda s: [tuple(r) for r in s.execute(
        select(OutboxMessage.kind, OutboxMessage.channel, OutboxMessage.recipient,
               OutboxMessage.content, OutboxMessage.contact_id.is_not(None))
        .where(OutboxMessage.kind != "staff").order_by(OutboxMessage.id))])


async def reply(store, config, clock, number: int, text: str, via: str | None = None):
    return await store.run(staff_reply, config, number, text, True, None, "cli", clock.now,
                           via)


async def test_a_messenger_customer_is_answered_on_the_messenger(store, clock):
    config = Config()
    await directory(store, clock)
    ticket = (await Pipeline(config, store, clock).ingest(
        chat(clock, "4200000001", "Не печатает принтер"))).ticket
    await reply(store, config, clock, ticket, "Заменили картридж.")
    ack, answer = await customer_rows(store)
    assert ack[:3] == ("ack", "telegram", "4200000001")
    # On a messenger one adds to a request by writing on, not by replying to a mail.
    assert "просто напишите сюда" in ack[3] and "письмо" not in ack[3]
    assert answer == ("comment", "telegram", "4200000001", "Заменили картридж.", True)
    # The mail form is kept too, for a fallback to email when the row is sent.
    text = await store.run(lambda s: s.scalar(
        select(OutboxMessage.text).where(OutboxMessage.kind == "comment")))
    assert text.startswith(SEPARATOR) and "Заменили картридж." in text


async def test_the_tickets_channel_first_staffs_choice_overrides(store, clock):
    config = Config()
    await directory(store, clock, email="ivan@romashka.ru", telegram_id=4200000001)
    pipeline = Pipeline(config, store, clock)
    by_mail = (await pipeline.ingest_email(mail(body="Письмом"))).ticket
    by_chat = (await pipeline.ingest(chat(clock, "4200000001", "В чате"))).ticket
    await reply(store, config, clock, by_mail, "Ответ на письмо")
    await reply(store, config, clock, by_chat, "Ответ в чат")
    await reply(store, config, clock, by_chat, "Ответ письмом", via="email")
    answers = [row[1:3] for row in await customer_rows(store) if row[0] == "comment"]
    assert answers == [("email", "ivan@romashka.ru"), ("telegram", "4200000001"),
                       ("email", "ivan@romashka.ru")]


async def test_a_channel_without_transport_falls_back_when_sent_and_says_so(
        store, relay, clock):
    config = Config(mail={"smtp": relay.smtp_config()}, notifications={"employees": "none"})
    await directory(store, clock, email="ivan@romashka.ru", telegram_id=4200000001)
    ticket = (await Pipeline(config, store, clock).ingest(
        chat(clock, "4200000001", "Не печатает принтер"))).ticket
    await reply(store, config, clock, ticket, "Заменили картридж.")
    worker = OutboxWorker(store, config, {"email": EmailTransport(config)}, clock)
    await worker.run_once()
    # The acknowledgement and the answer, both addressed to the contact, went by email.
    assert sorted((r.rcpt_tos, "Заменили картридж." in r.text()) for r in relay.received) \
        == [(["ivan@romashka.ru"], False), (["ivan@romashka.ru"], True)]
    rows = await customer_rows(store)
    assert [row[:3] for row in rows] == [("ack", "email", "ivan@romashka.ru"),
                                         ("comment", "email", "ivan@romashka.ru")]
    notes = await store.run(lambda s: s.execute(
        select(Comment.text).where(Comment.author_kind == "system",
                                   Comment.public.is_(False))).scalars().all())
    assert notes == ["The notification went by email (ivan@romashka.ru): helpgate is not "
                     "set up to send by telegram."] * 2


async def test_a_customer_no_channel_can_reach_waits(store, relay, clock):
    config = Config(mail={"smtp": relay.smtp_config()}, notifications={"employees": "none"},
                    outbox={"retry_after": "1m"})
    await directory(store, clock)
    ticket = (await Pipeline(config, store, clock).ingest(
        chat(clock, "4200000009", "Нет почты"))).ticket
    await reply(store, config, clock, ticket, "Ответ")
    worker = OutboxWorker(store, config, {"email": EmailTransport(config)}, clock)
    assert await worker.run_once() == 0
    assert relay.received == []
    waiting = await store.run(lambda s: s.execute(
        select(OutboxMessage.state, OutboxMessage.next_attempt_at)
        .where(OutboxMessage.kind == "comment")).one())
    assert waiting.state == "queued" and waiting.next_attempt_at > clock.now


class RefusedEverywhere:
    """A messenger transport whose service refuses every recipient for good, as the Bot
    API does for a user who blocked the bot: the worker's side of it, in isolation."""

    def __init__(self) -> None:
        self.tried: list[str] = []

    async def send(self, message):
        from helpgate.ticketstore.outbox import DeliveryResult
        self.tried.append(message.recipient)
        return DeliveryResult.unreachable_here("Forbidden: bot was blocked by the user")

    async def close(self) -> None:
        pass


async def test_a_blocked_messenger_falls_back_to_email_until_they_write_again(
        store, relay, clock):
    config = Config(mail={"smtp": relay.smtp_config()}, notifications={"employees": "none"})
    await directory(store, clock, email="ivan@romashka.ru", telegram_id=4200000001)
    pipeline = Pipeline(config, store, clock)
    ticket = (await pipeline.ingest(chat(clock, "4200000001", "Вопрос", chat=True))).ticket
    await reply(store, config, clock, ticket, "Первый ответ")
    messenger = RefusedEverywhere()
    worker = OutboxWorker(store, config, {"email": EmailTransport(config),
                                          "telegram": messenger}, clock)
    while await worker.run_once():
        pass
    # Tried on the messenger once (the acknowledgement, then the answer, both refused),
    # then by email; the ticket says so.
    assert messenger.tried == ["4200000001", "4200000001"]
    assert sorted(r.rcpt_tos[0] for r in relay.received) == ["ivan@romashka.ru"] * 2
    notes = await store.run(lambda s: s.execute(
        select(Comment.text).where(Comment.author_kind == "system")).scalars().all())
    assert len(notes) == 2 and all("does not deliver" in note for note in notes)
    # The next answer goes by email at once; after they write again, by the messenger.
    await reply(store, config, clock, ticket, "Второй ответ")
    assert (await customer_rows(store))[-1][1:3] == ("email", "ivan@romashka.ru")
    await pipeline.ingest(chat(clock, "4200000001", "Разблокировал бота", chat=True))
    await reply(store, config, clock, ticket, "Третий ответ")
    assert (await customer_rows(store))[-1][1:3] == ("telegram", "4200000001")


async def test_a_blocked_messenger_with_nowhere_else_parks_the_answer(store, relay, clock):
    config = Config(mail={"smtp": relay.smtp_config()}, notifications={"employees": "none",
                    "acknowledge_new_tickets": False})
    await directory(store, clock)
    ticket = (await Pipeline(config, store, clock).ingest(
        chat(clock, "4200000002", "Вопрос"))).ticket
    await reply(store, config, clock, ticket, "Ответ")
    worker = OutboxWorker(store, config, {"email": EmailTransport(config),
                                          "telegram": RefusedEverywhere()}, clock)
    await worker.run_once()
    row = await store.run(lambda s: s.execute(
        select(OutboxMessage.state, OutboxMessage.last_error)
        .where(OutboxMessage.kind == "comment")).one())
    assert tuple(row) == ("parked", "Forbidden: bot was blocked by the user")


# ------------------------------------------------------------ R-OUT-3: targets and copies
def _who(ticket_type="question", contact="ivan@romashka.ru", duplicate=None,
         company="office@romashka.ru", has_contact=True):
    from types import SimpleNamespace
    ticket = SimpleNamespace(type=ticket_type, channel="email", chat=None)
    person = SimpleNamespace(id=7, email=contact, duplicate_email=duplicate) \
        if has_contact else None
    firm = SimpleNamespace(email=company) if company else None
    return ticket, person, firm


@pytest.mark.parametrize("rules, who, expected", [
    # The contact's email; without one, the company's; no contact: none.
    ({}, {}, ["ivan@romashka.ru"]),
    ({}, {"contact": None}, ["office@romashka.ru"]),
    ({}, {"contact": None, "company": None}, []),
    ({}, {"has_contact": False}, []),
    # The contact's duplicate address, unless switched off.
    ({}, {"duplicate": "boss@romashka.ru"}, ["ivan@romashka.ru", "boss@romashka.ru"]),
    ({"contact_duplicate": False}, {"duplicate": "boss@romashka.ru"}, ["ivan@romashka.ru"]),
    # The company's email: always / if the contact has no email / if there is no contact.
    ({"company_duplicate": "always"}, {}, ["ivan@romashka.ru", "office@romashka.ru"]),
    ({"company_duplicate": "no_contact_email"}, {}, ["ivan@romashka.ru"]),
    ({"company_duplicate": "no_contact_email"}, {"contact": None}, ["office@romashka.ru"]),
    ({"company_duplicate": "no_contact"}, {}, ["ivan@romashka.ru"]),
    ({"company_duplicate": "no_contact"}, {"has_contact": False}, ["office@romashka.ru"]),
    ({"company_duplicate": "never"}, {"has_contact": False}, []),
    # The global duplicate, with anything else sent (never alone), each address once.
    ({"global_duplicate": "copy@helpgate.test"}, {},
     ["ivan@romashka.ru", "copy@helpgate.test"]),
    ({"global_duplicate": "copy@helpgate.test"}, {"has_contact": False}, []),
    ({"global_duplicate": "IVAN@romashka.ru", "company_duplicate": "always"},
     {"duplicate": "office@romashka.ru"}, ["ivan@romashka.ru", "office@romashka.ru"]),
    # An internal ticket type reaches no customer and no copy (R-OUT-5).
    ({"global_duplicate": "copy@helpgate.test", "company_duplicate": "always"},
     {"ticket_type": "internal", "duplicate": "boss@romashka.ru"}, []),
])
def test_customer_targets_and_duplicates(rules, who, expected):
    from helpgate.outbound.compose import Composer
    ticket, contact, company = _who(**who)
    targets = Composer(Config(notifications=rules)).customer_targets(ticket, contact, company)
    assert [t.recipient for t in targets] == expected
    assert all(t.channel == "email" for t in targets)
    # Only the contact's own address is re-resolved when sent; copies stay as they are.
    assert [t.contact_id is not None for t in targets] == \
        [t.recipient == (contact.email if contact else None) for t in targets]


async def test_the_author_of_an_answer_gets_a_copy_with_notify_author(store, clock):
    """R-OUT-3's last optional duplicate: the employee who answered (notify_author)."""
    for notify_author, expected in [(False, ["ivan@romashka.ru"]),
                                    (True, ["ivan@romashka.ru", "anna@helpgate.test"])]:
        config = Config(notifications={"notify_author": notify_author})
        if not notify_author:
            await directory(store, clock, email="ivan@romashka.ru")
        ticket = (await Pipeline(config, store, clock).ingest_email(
            mail(body=f"Вопрос {notify_author}", subject=f"Вопрос {notify_author}"))).ticket
        result = await store.run(staff_reply, config, ticket, "Ответ", True,
                                 "anna@helpgate.test", "cli", clock.now)
        assert [q["to"] for q in result["queued"]] == expected
