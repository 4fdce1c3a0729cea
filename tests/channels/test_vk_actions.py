"""What a VK customer asks of the bot besides writing (issue 17 part 3: the same customer
actions as Telegram where VK allows), end to end: the real adapter (long poll and
Callback API) and the real outbox and transport against the fake VK, on SQLite and
PostgreSQL. The bot's choices are callback buttons; a press is a message_event, kept
and carried out, answered with sendMessageEventAnswer."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import select

from helpgate.channels.vk.adapter import VkAdapter
from helpgate.channels.vk.parse import envelope, parse
from helpgate.config.schema import Config
from helpgate.outbound.outbox import OutboxWorker
from helpgate.outbound.vk import VkTransport
from helpgate.ticketstore.models import Comment, InboundMessage, Ticket
from tests.fakes.vk import FakeVK
from tests.services import services_for
from tests.waiting import eventually

GROUP, TOKEN, SECRET, CODE = 4242, "vk-group-token", "s3cret", "c0nf1rm"


# vk-api waits 1/20 s before each call of a community token; the fake needs none.
pytestmark = pytest.mark.usefixtures("no_vk_rate_sleep")


@pytest.fixture
async def vk():
    async with FakeVK(group_id=GROUP, token=TOKEN, confirmation_code=CODE,
                      secret=SECRET) as fake:
        yield fake


@pytest.fixture
def config(vk) -> Config:
    return Config(vk={"token": TOKEN, "group_id": GROUP, "api_base_url": vk.base_url,
                      "confirmation_code": CODE, "secret": SECRET},
                  notifications={"employees": "none"})


@pytest.fixture(params=["longpoll", "callback"])
def mode(request) -> str:
    return request.param


class Community:
    def __init__(self, vk, config, pipeline, store, clock, mode) -> None:
        self.vk, self.store, self.mode = vk, store, mode
        self.delivered = 0
        settings = config.vk.model_copy(update={"mode": mode, "callback_port": 0})
        self.adapter = VkAdapter(settings, services_for(pipeline), 10 * 1024 * 1024)
        self.adapter.wait = 1
        self.adapter.backoff_start = 0.05
        self.sender = VkTransport(config.vk)
        self.worker = OutboxWorker(store, config, {"vk": self.sender}, clock)

    async def deliver(self, *events) -> None:
        # Counted from what this desk delivered before: in long poll mode the adapter may
        # have decided these already (they were queued before this call).
        self.delivered += len(events)
        if self.mode == "callback":
            url = f"http://127.0.0.1:{self.adapter.port}/vk"
            for event in events:
                assert await self.vk.deliver_callback(event, url) == (200, "ok")

        async def all_decided():
            return await self.decided() >= self.delivered
        await eventually(all_decided, what=f"{len(events)} events decided")
        await self.worker.run_once()

    async def decided(self) -> int:
        return await self.store.run(lambda s: len(s.execute(select(InboundMessage.id).where(
            InboundMessage.state != "received")).all()))

    def buttons(self, sent) -> list[str]:
        return [json.loads(b["action"]["payload"])["a"]
                for row in (sent.keyboard or {}).get("buttons", []) for b in row]


@asynccontextmanager
async def community(vk, config, pipeline, store, clock, mode):
    found = Community(vk, config, pipeline, store, clock, mode)
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


async def test_new_choose_close_and_rate_with_vk_buttons(
        vk, config, pipeline, store, clock, mode):
    vk.user(42, "Ivan", "Petrov")
    en = Config().text("en")
    async with community(vk, config, pipeline, store, clock, mode) as bot:
        await bot.deliver(vk.send_text(42, "The printer is broken"))
        await bot.deliver(vk.send_text(42, "/new I need VPN access"))
        assert await comments_of(store, 2) == ["I need VPN access"]

        def resolve(session):
            ticket = session.scalar(select(Ticket).where(Ticket.number == 2))
            pipeline.statuses.request(session, ticket, "resolved", clock.now, "done")
        await store.run(resolve)
        await bot.worker.run_once()
        resolved = bot.vk.sent[-1]
        assert bot.buttons(resolved) == [f"rate:2:{n}" for n in range(1, 6)]

        await bot.deliver(vk.send_text(42, "It still does not print"))
        question = vk.sent[-1]
        assert question.message == en.chat_which_ticket
        assert bot.buttons(question) == ["choose:1", "choose:2", "new"]
        press = vk.press_button(42, 42, json.loads(
            question.keyboard["buttons"][0][0]["action"]["payload"]),
            question.conversation_message_id)
        await bot.deliver(press)
        assert await comments_of(store, 1) == ["The printer is broken",
                                               "It still does not print"]
        assert vk.sent[-1].message == en.chat_chosen.format(number=1)
        # The press is answered, so the button stops spinning.
        assert [a["event_id"] for a in vk.event_answers] == [press["object"]["event_id"]]

        await bot.deliver(vk.press_button(42, 42, {"a": "rate:2:5"},
                                          resolved.conversation_message_id))
        assert (await tickets(store))[1] == (2, "resolved", 5)
        await bot.deliver(vk.send_text(42, "/close"))
        assert [t[:2] for t in await tickets(store)] == [(1, "resolved"), (2, "resolved")]
        # Another user's press of a button naming this customer's ticket changes nothing.
        vk.user(43, "Oleg")
        await bot.deliver(vk.press_button(43, 43, {"a": "rate:1:1"}, 1))
        assert (await tickets(store))[0] == (1, "resolved", None)


def test_a_press_that_is_none_of_ours_is_not_kept():
    foreign = {"type": "message_event", "event_id": "e1", "group_id": GROUP,
               "object": {"user_id": 42, "peer_id": 42, "event_id": "x",
                          "payload": {"button": "start"}}}
    from helpgate.channels.vk.parse import is_customer_message
    assert not is_customer_message(foreign)
    ours = {**foreign, "object": {**foreign["object"], "payload": {"a": "choose:3"}}}
    assert is_customer_message(ours)
    from datetime import datetime, timezone
    message = parse(envelope(ours), datetime(2026, 11, 30, tzinfo=timezone.utc))
    assert (message.sender_id, message.action.data(), message.problem) == (
        "42", "choose:3", None)
