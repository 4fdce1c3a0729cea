"""The Telegram staff group (issue #17, part 6) against the fake Bot API with the real
aiogram, the real adapter, pipeline and outbox, in polling and webhook mode: a new ticket
gets a topic with the customer's message; an employee's words in the topic reach the
customer in their chat; /note reaches no one; /close closes; a non-employee in the topic
changes nothing; a topic staff deleted is made again on the next post. `telegram check`
and the start-up log say whether the bot can read the group and manage topics. On SQLite
and PostgreSQL."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import func, select

from helpgate.channels.telegram.adapter import TelegramAdapter
from helpgate.channels.telegram.check import check
from helpgate.config.schema import Config
from helpgate.gateway.replies import staff_reply
from helpgate.outbound.outbox import OutboxWorker
from helpgate.outbound.telegram import TelegramTransport
from helpgate.ticketstore import chat_map, people
from helpgate.ticketstore.models import Comment, OutboxMessage, StaffTopic, Ticket
from helpgate.ticketstore.models import InboundMessage as InboundRow
from tests.channels.test_telegram import inbound, stored
from tests.services import services_for

STAFF = -1001234567890
ANNA = 5001          # an employee, by telegram_id in the directory
MALLORY = 6666       # in the staff group, not an employee
CUSTOMER = 1001
SECRET = "s3cret_Token-1"



@pytest.fixture
def config(tg) -> Config:
    return Config(language="en",
                  telegram={"token": tg.token, "api_base_url": tg.base_url,
                            "polling_timeout": 1, "staff_chat_id": STAFF},
                  notifications={"employees": "none"})


@pytest.fixture
async def desk(tg, store, clock):
    """The people: the customer, an employee known by her Telegram id, and a stranger
    who is in the staff group too."""
    await store.run(people.import_directory, people.DirectoryFile.model_validate({
        "employees": [{"name": "Anna", "email": "anna@helpgate.test", "role": "admin",
                       "telegram_id": ANNA}]}), clock.now)
    users = {"customer": tg.user(CUSTOMER, "Ann", last_name="Lee"),
             "anna": tg.user(ANNA, "Anna"), "mallory": tg.user(MALLORY, "Mallory")}
    tg.group("Support staff", forum=True, chat_id=STAFF,
             members=(users["anna"], users["mallory"]))
    return users


class Bot:
    """The adapter in one mode, the outbox worker with the Telegram transport, and a way
    to hand an update over as Telegram would in that mode."""

    def __init__(self, tg, pipeline, mode: str) -> None:
        self.tg, self.pipeline, self.mode = tg, pipeline, mode
        hook = {"mode": "webhook", "webhook_port": 0, "webhook_secret": SECRET,
                "webhook_url": "https://support.example/telegram"} if mode == "webhook" else {}
        settings = pipeline.config.telegram.model_copy(update=hook)
        self.adapter = TelegramAdapter(settings, services_for(pipeline))
        self.adapter.min_backoff = 0.05
        self.transport = TelegramTransport(pipeline.config.telegram)
        self.worker = OutboxWorker(pipeline.store, pipeline.config,
                                   {"telegram": self.transport}, pipeline.clock)
        self.count = 0

    async def hand_over(self, queued) -> None:
        """Deliver one update and wait until it is stored."""
        self.count += 1
        if self.mode == "webhook":
            url = f"http://127.0.0.1:{self.adapter.port}/telegram"
            assert await self.tg.deliver_webhook(queued, url=url) == 200
        await stored(self.pipeline.store, self.count)

    async def send_all(self) -> None:
        while await self.worker.run_once():
            pass


@asynccontextmanager
async def running(tg, pipeline, mode: str = "polling"):
    bot = Bot(tg, pipeline, mode)
    await bot.adapter.start()
    try:
        yield bot
    finally:
        await bot.adapter.stop()
        await bot.transport.close()


def in_staff(tg) -> list[dict]:
    return [m for m in tg.sent if m["chat_id"] == STAFF]


def to_customer(tg) -> list[str]:
    return [m["text"] for m in tg.sent if m["chat_id"] == CUSTOMER]


def topic_of(tg) -> int:
    [(chat_id, thread)] = [key for key, topic in tg.topics.items() if not topic["deleted"]]
    assert chat_id == STAFF
    return thread


async def comments(store) -> list[tuple]:
    return await store.run(lambda s: [tuple(r) for r in s.execute(
        select(Comment.author_kind, Comment.public, Comment.text).where(
            Comment.author_kind != "system").order_by(Comment.id))])


async def ticket_status(store) -> str:
    return await store.run(lambda s: s.scalar(select(Ticket.status)))


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_the_staff_topic_flow(tg, pipeline, store, desk, mode):
    async with running(tg, pipeline, mode) as bot:
        # A new ticket: its topic is made, and the customer's message posted there.
        await bot.hand_over(tg.send_text(desk["customer"], "My printer is on fire"))
        await bot.send_all()
        thread = topic_of(tg)
        assert tg.topics[(STAFF, thread)]["name"] == "#1 My printer is on fire"
        [post] = in_staff(tg)
        assert post["message_thread_id"] == thread
        assert post["text"] == "From: Ann Lee; channel: telegram\n\nMy printer is on fire"
        # The acknowledgement went to the customer's own chat, not to the group.
        assert len(to_customer(tg)) == 1

        # An employee's words in the topic: a public comment, relayed to the customer.
        await bot.hand_over(tg.send_text(desk["anna"], "We are sending a technician",
                                         chat=STAFF, thread_id=thread))
        await bot.send_all()
        assert to_customer(tg)[-1] == "We are sending a technician"
        assert len(in_staff(tg)) == 1      # not posted back into the topic

        # /note: a private comment; the customer gets nothing.
        await bot.hand_over(tg.send_text(desk["anna"], "/note he was rude on the phone",
                                         chat=STAFF, thread_id=thread))
        await bot.send_all()
        assert len(to_customer(tg)) == 2

        # Someone in the group who is no employee: refused, nothing changes, and the
        # topic says why.
        before = await comments(store)
        await bot.hand_over(tg.send_text(desk["mallory"], "I can fix it for $500",
                                         chat=STAFF, thread_id=thread))
        await bot.hand_over(tg.send_text(desk["mallory"], "/close", chat=STAFF,
                                         thread_id=thread))
        await bot.send_all()
        assert await comments(store) == before
        assert await ticket_status(store) == "open"
        assert len(to_customer(tg)) == 2
        refusals = [m["text"] for m in in_staff(tg)[1:]]
        assert len(refusals) == 2 and all("Mallory is not an employee" in t
                                          for t in refusals)

        # /close by the employee: the ticket is closed (resolved: what open may become).
        await bot.hand_over(tg.send_text(desk["anna"], "/close", chat=STAFF,
                                         thread_id=thread))
        await bot.send_all()
        assert await ticket_status(store) == "resolved"
        assert in_staff(tg)[-1]["text"] == "Status: Resolved."
        assert "Resolved" in to_customer(tg)[-1]

    assert await comments(store) == [
        ("contact", True, "My printer is on fire"),
        ("employee", True, "We are sending a technician"),
        ("employee", False, "he was rude on the phone")]
    states = [state for _, state in await inbound(store)]
    assert states == ["processed", "processed", "processed", "ignored", "ignored",
                      "processed"]
    reasons = await store.run(lambda s: s.execute(select(InboundRow.reason).where(
        InboundRow.state == "ignored")).scalars().all())
    assert all("is not an employee" in r for r in reasons)


async def test_messages_map_to_their_ticket_and_comment_both_ways(tg, pipeline, store, desk):
    async with running(tg, pipeline) as bot:
        await bot.hand_over(tg.send_text(desk["customer"], "Printer"))
        await bot.send_all()
        thread = topic_of(tg)
        answer = tg.send_text(desk["anna"], "On it", chat=STAFF, thread_id=thread)
        await bot.hand_over(answer)
        await bot.send_all()
    ticket_id, first, second = await store.run(lambda s: (
        s.scalar(select(Ticket.id)),
        *s.execute(select(Comment.id).order_by(Comment.id)).scalars().all()))
    [post] = in_staff(tg)
    [*_, relayed] = [m for m in tg.sent if m["chat_id"] == CUSTOMER]

    def lookups(session):
        return (chat_map.message(session, "telegram", STAFF, post["message_id"]),
                chat_map.message(session, "telegram", STAFF, answer["message_id"]),
                chat_map.message(session, "telegram", CUSTOMER, relayed["message_id"]),
                chat_map.messages_of_comment(session, second))
    posted, written, delivered, of_comment = await store.run(lookups)
    assert posted == (ticket_id, first)
    assert written == delivered == (ticket_id, second)
    assert sorted(of_comment) == sorted([("telegram", STAFF, answer["message_id"]),
                                         ("telegram", CUSTOMER, relayed["message_id"])])


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_a_deleted_topic_is_made_again_on_the_next_post(tg, pipeline, store, desk,
                                                              mode):
    async with running(tg, pipeline, mode) as bot:
        await bot.hand_over(tg.send_text(desk["customer"], "Printer"))
        await bot.send_all()
        first = topic_of(tg)
        tg.delete_topic(STAFF, first)
        await bot.hand_over(tg.send_text(desk["customer"], "Still broken"))
        await bot.send_all()
        second = topic_of(tg)
        assert second != first
        assert tg.topics[(STAFF, second)]["name"] == "#1 Printer"
        assert in_staff(tg)[-1]["message_thread_id"] == second
        assert in_staff(tg)[-1]["text"].endswith("Still broken")
        assert await store.run(lambda s: tuple(s.execute(
            select(StaffTopic.chat_id, StaffTopic.thread_id)).one())) == (STAFF, second)
        # The new topic is the ticket's: staff's words there reach the customer.
        await bot.hand_over(tg.send_text(desk["anna"], "Fixed", chat=STAFF, thread_id=second))
        await bot.send_all()
    assert to_customer(tg)[-1] == "Fixed"
    rows = await store.run(lambda s: s.execute(
        select(OutboxMessage.state).where(OutboxMessage.kind == "topic")).scalars().all())
    assert rows == ["sent", "sent"]


async def test_a_ticket_gets_one_topic_and_its_posts_in_order(tg, pipeline, store, desk):
    """Messages that arrive before the first post went out: the first post makes the
    topic, the others follow it there in order, never making a topic of their own."""
    async with running(tg, pipeline) as bot:
        for n in range(4):
            await bot.hand_over(tg.send_text(desk["customer"], f"line {n}"))
        await bot.send_all()
    assert tg.requests["createForumTopic"] == 1
    thread = topic_of(tg)
    assert [m["message_thread_id"] for m in in_staff(tg)] == [thread] * 4
    assert [m["text"].rsplit("\n", 1)[-1] for m in in_staff(tg)] == [
        f"line {n}" for n in range(4)]


async def test_a_post_that_must_wait_holds_the_ticket_s_later_posts_back(
        tg, pipeline, store, desk, clock):
    """Telegram asks to wait before the topic is made: the first post waits as asked and
    the next one waits behind it, so the topic is made once and reads in order."""
    tg.fail_next("createForumTopic", 429, retry_after=120)
    async with running(tg, pipeline) as bot:
        await bot.hand_over(tg.send_text(desk["customer"], "first"))
        await bot.hand_over(tg.send_text(desk["customer"], "second"))
        await bot.send_all()
        assert in_staff(tg) == [] and len(to_customer(tg)) == 1   # the acknowledgement
        states = await store.run(lambda s: s.execute(
            select(OutboxMessage.state, OutboxMessage.last_error).where(
                OutboxMessage.kind == "topic").order_by(OutboxMessage.id)).all())
        assert [tuple(r) for r in states] == [
            ("queued", "Telegram rate limit: retry after 120 s"), ("queued", None)]
        clock.advance(minutes=5)
        await bot.send_all()
    assert tg.requests["createForumTopic"] == 2 and len(tg.topics) == 1
    assert [m["text"].rsplit("\n", 1)[-1] for m in in_staff(tg)] == ["first", "second"]


async def test_a_bot_that_may_not_make_topics_parks_the_post_with_the_fix(
        tg, pipeline, store, clock):
    customer = tg.user(CUSTOMER, "Ann")
    tg.group("Support staff", forum=True, chat_id=STAFF, rights={"can_manage_topics": False})
    async with running(tg, pipeline) as bot:
        await bot.hand_over(tg.send_text(customer, "Printer"))
        await bot.send_all()
    state, error = await store.run(lambda s: tuple(s.execute(
        select(OutboxMessage.state, OutboxMessage.last_error).where(
            OutboxMessage.kind == "topic")).one()))
    assert state == "parked"
    assert "not enough rights to manage topics" in error
    assert "the bot an administrator allowed to manage topics" in error
    # The customer is served all the same.
    assert len(to_customer(tg)) == 1


async def test_staff_answers_from_elsewhere_are_posted_in_the_topic(tg, pipeline, store,
                                                                   desk, clock, config):
    async with running(tg, pipeline) as bot:
        await bot.hand_over(tg.send_text(desk["customer"], "Printer"))
        number = await store.run(lambda s: s.scalar(select(Ticket.number)))
        await store.run(staff_reply, config, number, "Cartridge replaced", True,
                        "anna@helpgate.test", "cli", clock.now)
        await store.run(staff_reply, config, number, "warranty ends soon", False,
                        "anna@helpgate.test", "cli", clock.now)
        await bot.send_all()
    texts = [m["text"] for m in in_staff(tg)]
    assert texts[1:] == ["Anna → customer (cli):\n\nCartridge replaced",
                         "Anna, private note (cli):\n\nwarranty ends soon"]
    assert to_customer(tg)[-1] == "Cartridge replaced"


async def test_files_are_named_in_the_topic_and_staff_files_reach_the_customer(
        tg, pipeline, store, desk):
    async with running(tg, pipeline) as bot:
        await bot.hand_over(tg.send_document(desk["customer"], b"%PDF-1.7", "invoice.pdf",
                                             "application/pdf", caption="Wrong sum"))
        await bot.send_all()
        thread = topic_of(tg)
        [post] = in_staff(tg)
        assert post["text"].startswith("From: Ann Lee; channel: telegram\n\nWrong sum\n\n")
        assert "- invoice.pdf (8 B, id 1)" in post["text"]
        await bot.hand_over(tg.send_document(desk["anna"], b"%PDF-fixed", "invoice2.pdf",
                                             "application/pdf", caption="The right one",
                                             chat=STAFF, thread_id=thread))
        await bot.send_all()
    delivered = [m for m in tg.sent if m["chat_id"] == CUSTOMER]
    assert delivered[-2]["text"] == "The right one"
    assert (delivered[-1]["filename"], delivered[-1]["data"]) == ("invoice2.pdf",
                                                                   b"%PDF-fixed")


async def test_what_is_not_a_ticket_topic_changes_nothing(tg, pipeline, store, desk):
    """Talk in the General topic (no thread) is skipped; a topic no ticket owns is staff's
    own: kept as ignored, no comment, nothing said; edits and unknown commands in a
    ticket's topic are refused with a word there."""
    async with running(tg, pipeline) as bot:
        await bot.hand_over(tg.send_text(desk["customer"], "Printer"))
        await bot.send_all()
        thread = topic_of(tg)
        tg.send_text(desk["anna"], "lunch?", chat=STAFF)                # General: skipped
        own = tg._create_topic(STAFF, desk["anna"], "Team chat")["message_thread_id"]
        await bot.hand_over(tg.send_text(desk["anna"], "hello team", chat=STAFF,
                                         thread_id=own))
        sent = tg.send_text(desk["anna"], "Soon", chat=STAFF, thread_id=thread)
        await bot.hand_over(sent)
        await bot.hand_over(tg.edit_text(sent, "Tomorrow"))
        await bot.hand_over(tg.send_text(desk["anna"], "/reopen", chat=STAFF,
                                         thread_id=thread))
        await bot.send_all()
    assert await comments(store) == [("contact", True, "Printer"),
                                     ("employee", True, "Soon")]
    assert to_customer(tg)[-1] == "Soon"
    assert [state for _, state in await inbound(store)] == [
        "processed", "ignored", "processed", "ignored", "ignored"]
    notices = [m["text"] for m in in_staff(tg)[1:]]
    assert len(notices) == 2
    assert notices[0].startswith("An edit is not relayed")
    assert notices[1].startswith("Unknown command /reopen")
    assert all(m["message_thread_id"] == thread for m in in_staff(tg))


# ---- the set-up: telegram check and the start-up log ----------------------------------


async def findings(config) -> dict:
    return {f.name: f for f in await check(config)}


async def test_check_reports_a_good_staff_group(tg, config, desk):
    found = await findings(config)
    assert found["staff_group"].ok and "is a forum" in found["staff_group"].detail
    assert found["staff_rights"].ok
    assert found["staff_privacy"].ok and "administrator" in found["staff_privacy"].detail


async def test_check_reports_privacy_mode_and_missing_rights(tg, config):
    tg.group("Support staff", forum=True, chat_id=STAFF, admin=False)
    found = await findings(config)
    assert not found["staff_rights"].ok and "Manage topics" in found["staff_rights"].fix
    assert not found["staff_privacy"].ok
    assert "privacy mode is on" in found["staff_privacy"].detail
    assert "/setprivacy" in found["staff_privacy"].fix
    tg.privacy = False
    found = await findings(config)
    assert found["staff_privacy"].ok and "privacy mode is off" in found["staff_privacy"].detail
    assert not found["staff_rights"].ok


async def test_check_reports_an_admin_without_manage_topics_and_a_group_without_topics(
        tg, config):
    tg.group("Support staff", forum=False, chat_id=STAFF,
             rights={"can_manage_topics": False})
    found = await findings(config)
    assert not found["staff_group"].ok and "Topics" in found["staff_group"].fix
    assert not found["staff_rights"].ok
    assert "an administrator without that right" in found["staff_rights"].detail


async def test_check_reports_a_staff_group_the_bot_is_not_in(tg, config):
    found = await findings(config)
    assert not found["staff_group"].ok and "chat not found" in found["staff_group"].detail
    # Telegram failing meanwhile is said as such, not taken for a missing group.
    tg.group("Support staff", forum=True, chat_id=STAFF)
    tg.fail_next("getChat", 500)
    found = await findings(config)
    assert not found["staff_group"].ok and "run the check again" in found["staff_group"].fix
    assert (await findings(config))["staff_group"].ok
    # Without a staff group nothing is said of one.
    plain = config.model_copy(update={"telegram": config.telegram.model_copy(
        update={"staff_chat_id": 0})})
    assert not {"staff_group", "staff_rights", "staff_privacy"} & set(await findings(plain))


async def test_start_up_says_when_the_bot_cannot_read_the_staff_group(tg, pipeline, caplog):
    tg.group("Support staff", forum=True, chat_id=STAFF, admin=False)
    with caplog.at_level(logging.INFO, logger="helpgate.telegram"):
        async with running(tg, pipeline):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("privacy mode is on" in w and "fix:" in w for w in warnings)
    assert any("may not manage topics" in w for w in warnings)


async def test_without_a_staff_group_nothing_is_posted(tg, store, clock, desk):
    from helpgate.gateway.pipeline import Pipeline
    config = Config(language="en", telegram={"token": tg.token, "api_base_url": tg.base_url,
                                             "polling_timeout": 1},
                    notifications={"employees": "none"})
    pipeline = Pipeline(config, store, clock)
    async with running(tg, pipeline) as bot:
        await bot.hand_over(tg.send_text(desk["customer"], "Printer"))
        await bot.send_all()
    assert in_staff(tg) == [] and tg.requests["createForumTopic"] == 0
    assert await store.run(lambda s: s.scalar(
        select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.kind == "topic"))) == 0


# ---- the record ------------------------------------------------------------------------


def test_a_staff_record_reads_again_as_the_same_staff_action():
    """The topic is the thread id, whatever the message replies to; a command leads its
    words; the record's mark, not today's config, makes it staff's (replay, recovery)."""
    from datetime import datetime, timezone

    from helpgate.channels.base import StaffAction
    from helpgate.channels.telegram import parse as tgparse
    from helpgate.channels.telegram import staff
    from helpgate.gateway.channels import parse_kept
    now = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
    message = {"message_id": 40, "date": 1790000000, "message_thread_id": 17,
               "is_topic_message": True,
               "chat": {"id": STAFF, "type": "supergroup", "is_forum": True},
               "from": {"id": ANNA, "is_bot": False, "first_name": "Anna"},
               # A reply to another post of the topic, not to the topic's first message.
               "reply_to_message": {"message_id": 33, "message_thread_id": 17},
               "text": "/note@helpgate_bot called him back"}
    update = {"update_id": 9, "message": message}
    assert staff.in_staff_chat(update, STAFF) and not staff.in_staff_chat(update, 0)
    assert staff.unhandled(update) is None
    again = parse_kept("telegram", staff.envelope(update), now)
    assert again.staff_action == StaffAction(chat_id=STAFF, thread_id=17, command="note")
    assert (again.text, again.sender, again.message_id, again.problem) == (
        "called him back", ("telegram", str(ANNA)), f"telegram:{STAFF}:40", None)
    # Kept without the mark, the same update would be a customer group's message to the
    # bot: never a staff action (the mark, not the chat, says who acts).
    plain = tgparse.parse(tgparse.envelope(update), now)
    assert plain.staff_action is None and plain.chat_id == str(STAFF)
    # Outside a topic, from a bot, a service message: no staff action.
    general = {**message}
    del general["message_thread_id"], general["is_topic_message"]
    assert "outside a topic" in staff.unhandled({"update_id": 10, "message": general})
    bot = {**message, "from": {"id": 1, "is_bot": True, "first_name": "GroupAnonymousBot"}}
    assert "from a bot" in staff.unhandled({"update_id": 11, "message": bot})
    service = {k: v for k, v in message.items() if k != "text"}
    assert "service message" in staff.unhandled({"update_id": 12, "message": {
        **service, "forum_topic_edited": {"name": "x"}}})
