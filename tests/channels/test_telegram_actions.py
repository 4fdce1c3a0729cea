"""What a Telegram customer asks of the bot besides writing (issue 17 part 2), end to end:
the real adapter (polling and webhook) and the real outbox and transport against the
fake Bot API, on SQLite and PostgreSQL.

- With several open tickets a message waits while the bot asks which one, with buttons;
  the answer places it and is remembered; unanswered, it goes to the most recent.
- /close closes the customer's ticket; a resolved ticket is rated 1-5 with buttons.
- A button is only a request: someone else's press, or one that no longer applies,
  changes nothing.
- A customer company's group: only what is addressed to the bot is kept, the ticket is
  the company's with the writer as contact, and the answer goes to the group.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
from sqlalchemy import select

from helpgate.channels.telegram.adapter import TelegramAdapter
from helpgate.config.schema import Config
from helpgate.gateway.replies import staff_reply
from helpgate.outbound.outbox import OutboxWorker
from helpgate.outbound.telegram import transport
from helpgate.ticketstore import people
from helpgate.ticketstore.models import (
    Comment,
    Company,
    InboundMessage,
    OutboxMessage,
    Ticket,
)
from helpgate.ticketstore.queries import ticket_detail
from tests.services import services_for
from tests.waiting import eventually

SECRET = "s3cret_Token-1"
ANNA = {"name": "Анна", "email": "anna@helpgate.test", "role": "admin"}



@pytest.fixture
def config(tg) -> Config:
    return Config(telegram={"token": tg.token, "api_base_url": tg.base_url,
                            "polling_timeout": 1},
                  notifications={"employees": "none"})


@pytest.fixture(params=["polling", "webhook"])
def mode(request) -> str:
    return request.param


class Desk:
    """The bot in one mode, and the outbox that sends its answers."""

    def __init__(self, tg, config, pipeline, store, clock, mode: str) -> None:
        self.tg, self.store, self.clock, self.mode = tg, store, clock, mode
        self.delivered = 0
        changes = {} if mode == "polling" else {
            "mode": "webhook", "webhook_port": 0, "webhook_secret": SECRET,
            "webhook_url": "https://support.example/telegram"}
        settings = config.telegram.model_copy(update=changes)
        self.adapter = TelegramAdapter(settings, services_for(pipeline))
        self.sender = transport(config)
        self.worker = OutboxWorker(store, config, {"telegram": self.sender}, clock)
        self.pipeline = pipeline

    async def deliver(self, *queued) -> None:
        """The customer's updates reach the bot and are decided; its answers are sent."""
        # Counted from what this desk delivered before: in polling mode the adapter may
        # have decided these already (they were queued before this call).
        self.delivered += len(queued)
        if self.mode == "webhook":
            url = f"http://127.0.0.1:{self.adapter.port}/telegram"
            for item in queued:
                assert await self.tg.deliver_webhook(item, url=url) == 200

        async def all_decided():
            return await self.decided() >= self.delivered
        await eventually(all_decided, what=f"{len(queued)} updates decided")
        await self.worker.run_once()

    async def decided(self) -> int:
        return await self.store.run(lambda s: len(s.execute(select(InboundMessage.id).where(
            InboundMessage.state != "received")).all()))

    def said(self, chat_id: int) -> list[dict]:
        return [m for m in self.tg.sent if m["method"] == "sendMessage"
                and m["chat_id"] == chat_id]

    def buttons(self, sent: dict) -> list[str]:
        return [b["callback_data"] for row in (sent["reply_markup"] or {}).get(
            "inline_keyboard", []) for b in row]


@asynccontextmanager
async def desk(tg, config, pipeline, store, clock, mode):
    found = Desk(tg, config, pipeline, store, clock, mode)
    await found.adapter.start()
    try:
        yield found
    finally:
        await found.adapter.stop()
        await found.sender.close()


async def tickets(store) -> list[tuple]:
    return await store.run(lambda s: [tuple(r) for r in s.execute(
        select(Ticket.number, Ticket.status, Ticket.rating).order_by(Ticket.number))])


async def comments_of(store, number: int) -> list[str]:
    return list(await store.run(lambda s: s.scalars(
        select(Comment.text).join(Ticket, Ticket.id == Comment.ticket_id)
        .where(Ticket.number == number, Comment.author_kind == "contact")
        .order_by(Comment.id)).all()))


async def resolve(pipeline, store, number: int, clock) -> None:
    def run(session):
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        pipeline.statuses.request(session, ticket, "resolved", clock.now, "staff resolved it")
    await store.run(run)


async def test_several_open_tickets_the_bot_asks_which_and_remembers_and_ratings(
        tg, config, pipeline, store, clock, mode):
    ann = tg.user(1001, "Ann", language_code="en")
    async with desk(tg, config, pipeline, store, clock, mode) as bot:
        await bot.deliver(tg.send_text(ann, "The printer is broken"))
        await bot.deliver(tg.send_text(ann, "/new I need VPN access"))
        assert [t[:2] for t in await tickets(store)] == [(1, "open"), (2, "open")]
        # /new's ticket takes what follows, without a question.
        await bot.deliver(tg.send_text(ann, "For my laptop"))
        assert await comments_of(store, 2) == ["I need VPN access", "For my laptop"]

        # Staff resolve ticket 2: the customer hears it, with buttons to rate it.
        await resolve(pipeline, store, 2, clock)
        await bot.worker.run_once()
        resolved = bot.said(1001)[-1]
        assert "2" in resolved["text"] and bot.buttons(resolved) == [
            f"rate:2:{n}" for n in range(1, 6)]

        # Now the next line could be for either: it waits, and the bot asks.
        await bot.deliver(tg.send_text(ann, "It still does not print"))
        question = bot.said(1001)[-1]
        assert question["text"] == Config().text("en").chat_which_ticket
        assert bot.buttons(question) == ["choose:1", "choose:2", "new"]
        assert await comments_of(store, 1) == ["The printer is broken"]
        # A second line waits with the first; the question is not asked twice.
        await bot.deliver(tg.send_text(ann, "Model HP 1020"))
        asked = Config().text("en").chat_which_ticket
        assert [m["text"] for m in bot.said(1001)].count(asked) == 1

        await bot.deliver(tg.press_button(ann, question["message"], "choose:1"))
        assert await comments_of(store, 1) == [
            "The printer is broken", "It still does not print", "Model HP 1020"]
        assert bot.said(1001)[-1]["text"] == Config().text("en").chat_chosen.format(number=1)
        assert tg.callback_answers, "the pressed button's spinner is stopped"
        # Remembered: the next line goes there too.
        await bot.deliver(tg.send_text(ann, "Thanks"))
        assert (await comments_of(store, 1))[-1] == "Thanks"

        # The rating of the resolved ticket is stored and shown on it.
        await bot.deliver(tg.press_button(ann, resolved["message"], "rate:2:4"))
        assert (await tickets(store))[1] == (2, "resolved", 4)
        assert bot.said(1001)[-1]["text"] == Config().text("en").chat_rated.format(rating=4)
        detail = await store.run(lambda s: ticket_detail(
            s, config, s.scalar(select(Ticket).where(Ticket.number == 2)), clock.now))
        assert detail["rating"] == 4

        # Rating an open ticket does nothing but say so.
        await bot.deliver(tg.press_button(ann, resolved["message"], "rate:1:5"))
        assert (await tickets(store))[0] == (1, "open", None)
        assert bot.said(1001)[-1]["text"] == Config().text("en").chat_button_stale

        # /close closes the chosen ticket; the status message offers the rating.
        await bot.deliver(tg.send_text(ann, "/close"))
        assert (await tickets(store))[0][:2] == (1, "resolved")
        await bot.worker.run_once()
        assert bot.buttons(bot.said(1001)[-1]) == [f"rate:1:{n}" for n in range(1, 6)]
        # Actions make no comments.
        assert "/close" not in await comments_of(store, 1)


async def test_someone_elses_button_changes_nothing(
        tg, config, pipeline, store, clock, mode):
    ann, bob = tg.user(1001, "Ann"), tg.user(1002, "Bob")
    async with desk(tg, config, pipeline, store, clock, mode) as bot:
        await bot.deliver(tg.send_text(ann, "The printer is broken"))
        await bot.deliver(tg.send_text(bob, "My mouse is gone"))
        await resolve(pipeline, store, 1, clock)
        await bot.worker.run_once()
        resolved = bot.said(1001)[-1]
        # Bob presses buttons naming Ann's ticket (forged callback data).
        await bot.deliver(tg.press_button(bob, resolved["message"], "rate:1:1"))
        await bot.deliver(tg.press_button(bob, resolved["message"], "choose:1"))
        await bot.deliver(tg.press_button(bob, resolved["message"], "close:1"))
        assert await tickets(store) == [(1, "resolved", None), (2, "open", None)]
        assert [m["text"] for m in bot.said(1002)][-3:] == [
            Config().text("en").chat_button_stale] * 3
        # Data that is no action of ours is not stored at all.
        before = await bot.decided()
        foreign = tg.press_button(ann, resolved["message"], "something-else")
        if mode == "polling":
            await eventually(lambda: not tg.pending, what="the update confirmed")
        else:
            url = f"http://127.0.0.1:{bot.adapter.port}/telegram"
            assert await tg.deliver_webhook(foreign, url=url) == 200
        assert await bot.decided() == before


async def test_an_unanswered_question_places_the_message_in_the_latest_ticket(
        tg, config, pipeline, store, clock, mode):
    ann = tg.user(1001, "Ann")
    async with desk(tg, config, pipeline, store, clock, mode) as bot:
        await bot.deliver(tg.send_text(ann, "The printer is broken"))
        await bot.deliver(tg.send_text(ann, "/new VPN please"))
        await resolve(pipeline, store, 2, clock)
        await bot.deliver(tg.send_text(ann, "Hello?"))
        assert await pipeline.process_held() == []       # still waiting for the answer
        clock.advance(minutes=11)
        [placed] = await pipeline.process_held()
        assert placed.ticket == 1 and "no answer" in " ".join(
            await store.run(lambda s: s.scalar(select(Comment.decision).where(
                Comment.text == "Hello?"))["notes"]))
        assert await comments_of(store, 1) == ["The printer is broken", "Hello?"]


async def test_close_with_several_open_asks_which_and_without_any_says_so(
        tg, config, pipeline, store, clock, mode):
    ann = tg.user(1001, "Ann")
    async with desk(tg, config, pipeline, store, clock, mode) as bot:
        await bot.deliver(tg.send_text(ann, "/close"))
        assert bot.said(1001)[-1]["text"] == Config().text("en").chat_nothing_open
        assert await tickets(store) == []
        await bot.deliver(tg.send_text(ann, "The printer is broken"))
        await bot.deliver(tg.send_text(ann, "/new VPN please"))
        await store.run(lambda s: s.execute(
            Ticket.__table__.update().values(status="open")))
        # Forget the choice /new made: two open tickets, no choice.
        from helpgate.ticketstore import chats
        await store.run(chats.choose, "telegram", "1001", None)
        await bot.deliver(tg.send_text(ann, "/close"))
        which = bot.said(1001)[-1]
        assert which["text"] == Config().text("en").chat_close_which
        assert bot.buttons(which) == ["close:2", "close:1"]
        await bot.deliver(tg.press_button(ann, which["message"], "close:1"))
        assert [t[:2] for t in await tickets(store)] == [(1, "resolved"), (2, "open")]


async def test_a_company_group_chat_opens_the_companys_ticket_and_is_answered_there(
        tg, config, pipeline, store, clock, mode):
    ann = tg.user(1001, "Ann")
    group = tg.group("Romashka IT", members=(ann,))
    await store.run(people.import_directory, people.DirectoryFile.model_validate({
        "companies": [{"name": "Romashka", "groups": {"telegram": [group["id"]]}}],
        "employees": [ANNA]}), clock.now)
    async with desk(tg, config, pipeline, store, clock, mode) as bot:
        chatter = tg.send_text(ann, "lunch at one?", chat=group)
        if mode == "polling":
            await eventually(lambda: not tg.pending, what="the chatter confirmed")
        else:
            url = f"http://127.0.0.1:{bot.adapter.port}/telegram"
            assert await tg.deliver_webhook(chatter, url=url) == 200
        assert await bot.decided() == 0, "talk among the members is not a request"
        text = "@helpgate_bot the printer on floor 2 is broken"
        await bot.deliver(tg.send_text(ann, text, chat=group, entities=[
            {"type": "mention", "offset": 0, "length": 13}]))
        row = await store.run(lambda s: tuple(s.execute(select(
            Ticket.number, Ticket.chat, Ticket.company_id, Ticket.contact_id)).one()))
        company = await store.run(lambda s: s.scalar(select(Company.id)))
        assert row[1:3] == (str(group["id"]), company) and row[3] is not None
        assert await comments_of(store, 1) == ["the printer on floor 2 is broken"]
        # The acknowledgement and staff's answer go to the group, not to Ann privately.
        await store.run(staff_reply, config, 1, "A technician is on the way.", True, None,
                        "cli", clock.now)
        await bot.worker.run_once()
        assert [m["text"] for m in bot.said(group["id"])][-1] == "A technician is on the way."
        assert bot.said(1001) == []
        # A reply to the bot's message there continues the ticket.
        answer = bot.said(group["id"])[-1]["message"]
        await bot.deliver(tg.send_text(ann, "Thank you!", chat=group, reply_to=answer))
        assert await comments_of(store, 1) == ["the printer on floor 2 is broken",
                                               "Thank you!"]


async def test_the_bot_asks_for_a_phone_and_a_shared_one_binds_the_known_customer(
        tg, config, pipeline, store, clock, mode):
    await store.run(people.import_directory, people.DirectoryFile.model_validate({
        "contacts": [{"name": "Ann Lee", "email": "ann@corp.example",
                      "phone": "+7 (916) 123-45-67"}]}), clock.now)
    ann = tg.user(1001, "Ann")
    en = Config().text("en")
    async with desk(tg, config, pipeline, store, clock, mode) as bot:
        await bot.deliver(tg.send_text(ann, "The printer is broken"))
        ack = bot.said(1001)[-1]
        assert en.chat_share_contact in ack["text"] and en.chat_share_phone in ack["text"]
        [[button]] = ack["reply_markup"]["keyboard"]
        assert (button["text"], button["request_contact"]) == (
            en.chat_share_contact_button, True)
        await bot.deliver(tg.share_contact(ann, "89161234567"))
        assert bot.said(1001)[-1]["text"] == en.chat_phone_bound
        # One customer: the Telegram identity and its ticket are the known contact's.
        owners = await store.run(lambda s: s.execute(select(
            Ticket.number, people.Contact.email).join(
            people.Contact, people.Contact.id == Ticket.contact_id)).all())
        assert [tuple(o) for o in owners] == [(1, "ann@corp.example")]


async def test_a_typed_address_binds_only_with_the_code_mailed_to_it(
        tg, config, pipeline, store, clock, mode):
    bob = tg.user(1002, "Bob")
    en = Config().text("en")
    async with desk(tg, config, pipeline, store, clock, mode) as bot:
        await bot.deliver(tg.send_text(bob, "My mouse is gone"))
        await bot.deliver(tg.send_text(bob, "Bob@Example.com"))
        assert bot.said(1002)[-1]["text"] == en.chat_email_code_sent.format(
            email="bob@example.com")
        mail = await store.run(lambda s: s.execute(select(
            OutboxMessage.recipient, OutboxMessage.subject, OutboxMessage.text)
            .where(OutboxMessage.kind == "verify")).one())
        code = mail.subject.rsplit(" ", 1)[-1]
        assert mail.recipient == "bob@example.com" and code in mail.text
        # The address stays a comment (it may be meant for staff); no binding yet.
        assert await comments_of(store, 1) == ["My mouse is gone", "Bob@Example.com"]
        assert await contact_emails(store) == [None]
        wrong = "000000" if code != "000000" else "111111"
        await bot.deliver(tg.send_text(bob, wrong))
        assert bot.said(1002)[-1]["text"] == en.chat_email_code_wrong
        await bot.deliver(tg.send_text(bob, code))
        assert bot.said(1002)[-1]["text"] == en.chat_email_bound.format(
            email="bob@example.com")
        assert await contact_emails(store) == ["bob@example.com"]
        # Codes are no comments.
        assert await comments_of(store, 1) == ["My mouse is gone", "Bob@Example.com"]


async def test_someone_typing_another_customers_address_cannot_bind_it(
        tg, config, pipeline, store, clock, mode):
    carol = tg.user(1003, "Carol")
    async with desk(tg, config, pipeline, store, clock, mode) as bot:
        await bot.deliver(tg.send_text(carol, "Hello"))
        await bot.deliver(tg.send_text(carol, "victim@example.com"))
        code = await store.run(lambda s: s.scalar(select(OutboxMessage.subject).where(
            OutboxMessage.kind == "verify")))
        guesses = [f"{n:06d}" for n in range(3) if f"{n:06d}" not in code]
        for guess in guesses[:3]:
            await bot.deliver(tg.send_text(carol, guess))
        assert await contact_emails(store) == [None]
        # Out of tries: the right code is now only words.
        await bot.deliver(tg.send_text(carol, code.rsplit(" ", 1)[-1]))
        assert await contact_emails(store) == [None]


async def contact_emails(store) -> list:
    return list(await store.run(lambda s: s.scalars(
        select(people.Contact.email).order_by(people.Contact.id)).all()))


async def test_the_bot_answers_in_the_customers_language(
        tg, config, pipeline, store, clock, mode):
    """The email texts' rule: their own words; for a button, their latest words; before
    any, the language their Telegram reports."""
    ru = Config().text("ru")
    vera = tg.user(1004, "Вера", language_code="ru")
    async with desk(tg, config, pipeline, store, clock, mode) as bot:
        await bot.deliver(tg.send_text(vera, "/close"))
        assert bot.said(1004)[-1]["text"] == ru.chat_nothing_open
        await bot.deliver(tg.send_text(vera, "Не работает почта"))
        assert ru.chat_share_contact in bot.said(1004)[-1]["text"]
        await bot.deliver(tg.press_button(vera, bot.said(1004)[-1]["message"], "rate:1:5"))
        assert bot.said(1004)[-1]["text"] == ru.chat_button_stale
        await bot.deliver(tg.send_text(vera, "vera@example.ru"))
        assert bot.said(1004)[-1]["text"] == ru.chat_email_code_sent.format(
            email="vera@example.ru")
        body = await store.run(lambda s: s.scalar(select(OutboxMessage.text).where(
            OutboxMessage.kind == "verify")))
        assert body.startswith("Здравствуйте")


async def test_the_new_request_button_opens_a_ticket_with_the_waiting_messages(
        tg, config, pipeline, store, clock, mode):
    ann = tg.user(1001, "Ann")
    async with desk(tg, config, pipeline, store, clock, mode) as bot:
        await bot.deliver(tg.send_text(ann, "The printer is broken"))
        await bot.deliver(tg.send_text(ann, "/new VPN please"))
        await resolve(pipeline, store, 2, clock)
        await bot.deliver(tg.send_text(ann, "The scanner too"))
        await bot.deliver(tg.send_text(ann, "Floor 3"))
        question = next(m for m in reversed(bot.said(1001)) if bot.buttons(m)[-1:] == ["new"])
        await bot.deliver(tg.press_button(ann, question["message"], "new"))
        assert [t[:2] for t in await tickets(store)] == [(1, "open"), (2, "resolved"),
                                                         (3, "open")]
        assert await comments_of(store, 3) == ["The scanner too", "Floor 3"]
        # The customer hears of the new ticket once: its acknowledgement says it.
        assert "number 3" in bot.said(1001)[-1]["text"]
        assert not any(m["text"] == Config().text("en").chat_chosen_new.format(number=3)
                       for m in bot.said(1001))
        # The new ticket is the chat's from now on.
        await bot.deliver(tg.send_text(ann, "Model X"))
        assert (await comments_of(store, 3))[-1] == "Model X"
