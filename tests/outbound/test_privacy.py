"""Internal ticket types and private comments never reach a customer (R-GW-2, R-OUT-5,
issue 18 part 2), whatever the path and whatever the channel.

One help desk with every channel set up at once — the SMTP relay (aiosmtpd), the Telegram
Bot API with a staff group, the VK API and an SMS gateway (the fakes of tests/fakes/) —
and customers on each: by email (with a duplicate address, the company's email and a
global copy configured), Telegram, VK and the web form, each with a phone, and status
notifications by email and SMS listed for every status. Their public tickets are
acknowledged first (what they have then is the baseline). Then every path that could
emit to a customer is driven: private notes through the CLI's path, the staff API and
the Telegram staff topic (/note); a canned answer kept as a note; tickets of the
internal type opened on every channel (no acknowledgement); their status changes
(CLI, API, timer-free); public replies on them (CLI, API, send-and-resolve, the staff
topic); assignments. The outbox runs to delivery and no fake got anything more for a
customer — while the employees, told on every channel, did get theirs (so the test can
fail). On SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from helpgate.channels.telegram.adapter import TelegramAdapter
from helpgate.channels.webform.parse import parse as parse_form
from helpgate.config.schema import Config
from helpgate.gateway.api import Api
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.replies import staff_reply
from helpgate.gateway.status_service import assignment_service, status_service
from helpgate.outbound.email import EmailTransport
from helpgate.outbound.outbox import OutboxWorker
from helpgate.outbound.sms import SmsTransport
from helpgate.outbound.telegram import TelegramTransport
from helpgate.outbound.vk import VkTransport
from helpgate.threading.message import InboundMessage
from helpgate.ticketstore import api_tokens, canned, people
from helpgate.ticketstore.assignments import find_employee
from helpgate.ticketstore.models import Comment, OutboxMessage
from helpgate.ticketstore.models import InboundMessage as InboundRow
from helpgate.ticketstore.repository import ticket_by_number
from tests.channels.test_telegram import stored
from tests.fakes.sms import FakeSmsc, settings_for
from tests.fakes.vk import FakeVK
from tests.mailfactory import mail
from tests.services import services_for

STAFF_GROUP = -1001234567890
VK_GROUP = 7
ANNA_TG, BORIS_TG, ANNA_VK = 5001, 5002, 610001
ANNA_PHONE = "+79990000001"
# The customers, with every address they can be reached at.
IVAN = {"email": "ivan@romashka.ru", "phone": "+79161234567", "duplicate": "boss@romashka.ru"}
PETR_TG, PETR_PHONE = 1001, "+79163333333"
OLGA_VK, OLGA_PHONE = 77, "+79164444444"
WEB_EMAIL, WEB_PHONE = "web@client.example", "+79162222222"
CUSTOMER_MAIL = {IVAN["email"], IVAN["duplicate"], "office@romashka.ru",
                 "copies@romashka.ru", WEB_EMAIL, "petr@client.example"}
CUSTOMER_PHONES = {IVAN["phone"], PETR_PHONE, OLGA_PHONE, WEB_PHONE}
DIRECTORY = {
    "companies": [{"name": "Romashka LLC", "domains": ["romashka.ru"],
                   "email": "office@romashka.ru"}],
    "contacts": [{"name": "Ivan", "email": IVAN["email"], "phone": IVAN["phone"],
                  "duplicate_email": IVAN["duplicate"], "company": "Romashka LLC"},
                 {"name": "Petr", "email": "petr@client.example", "phone": PETR_PHONE,
                  "telegram_id": PETR_TG},
                 {"name": "Olga", "phone": OLGA_PHONE, "identities": {"vk": str(OLGA_VK)}}],
    "employees": [{"name": "Anna", "email": "anna@helpgate.test", "phone": ANNA_PHONE,
                   "role": "admin", "telegram_id": ANNA_TG,
                   "identities": {"vk": str(ANNA_VK)}},
                  {"name": "Boris", "email": "boris@helpgate.test", "role": "agent",
                   "telegram_id": BORIS_TG}],
}
_serial = itertools.count(1)


@pytest.fixture
async def vk(no_vk_rate_sleep):
    async with FakeVK(group_id=VK_GROUP, token="vk-token") as fake:
        yield fake


@pytest.fixture
async def sms():
    async with FakeSmsc(balance=100000.0) as fake:
        yield fake


def desk_config(relay, tg, vk, sms) -> Config:
    every = [s for s in ("open", "pending", "resolved", "closed")]
    return Config(
        language="ru",
        mail={"smtp": relay.smtp_config()},
        telegram={"token": tg.token, "api_base_url": tg.base_url, "polling_timeout": 1,
                  "staff_chat_id": STAFF_GROUP},
        vk={"token": "vk-token", "group_id": VK_GROUP, "api_base_url": vk.base_url},
        sms=settings_for(sms, status_changes=every),
        notifications={
            "status_changes": every, "company_duplicate": "always",
            "global_duplicate": "copies@romashka.ru", "fallback_order": ["email", "sms"],
            "employee_channels": ["email", "sms", "telegram", "vk"],
            "employee_status_changes": every})


def messenger(channel: str, user: int, text: str, clock) -> InboundMessage:
    """What the Telegram or VK adapter hands the pipeline for a customer's words."""
    number = next(_serial)
    raw = json.dumps({"update": number, "from": user, "text": text}).encode()
    return InboundMessage(channel=channel, raw=raw, dedupe_key=f"privacy:{number}",
                          received_at=clock.now, sender_id=str(user), sender_name="Клиент",
                          text=text, subject=text)


def web_form(text: str, clock) -> InboundMessage:
    """A web form submission as its adapter keeps and parses it."""
    record = {"id": f"form{next(_serial)}", "fields": [
        {"key": "name", "label": "Имя", "value": "Светлана"},
        {"key": "email", "label": "Email", "value": WEB_EMAIL},
        {"key": "phone", "label": "Телефон", "value": WEB_PHONE},
        {"key": "text", "label": "Сообщение", "value": text}]}
    return parse_form(json.dumps(record).encode(), clock.now)


class Desk:
    def __init__(self, config, store, clock, relay, tg, vk, sms) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.relay, self.tg, self.vk, self.sms = relay, tg, vk, sms
        self.pipeline = Pipeline(config, store, clock)
        self.transports = {"email": EmailTransport(config),
                           "telegram": TelegramTransport(config.telegram),
                           "vk": VkTransport(config.vk), "sms": SmsTransport(config.sms)}
        self.worker = OutboxWorker(store, config, self.transports, clock)

    async def deliver(self) -> None:
        while await self.worker.run_once():
            pass
        states = await self.store.run(lambda s: dict(s.execute(select(
            OutboxMessage.state, func.count()).group_by(OutboxMessage.state)).all()))
        # Everything went: nothing waits, nothing was refused (a refused customer
        # message would prove nothing).
        assert set(states) == {"sent"}, states

    def received(self) -> dict[str, Counter]:
        """What each fake delivered, by recipient."""
        return {
            "email": Counter(to.lower() for m in self.relay.received for to in m.rcpt_tos),
            "telegram": Counter(m["chat_id"] for m in self.tg.sent),
            "vk": Counter(m.peer_id for m in self.vk.sent),
            "sms": Counter(_digits(m.phone) for m in self.sms.sent)}

    def to_customers(self) -> dict[str, Counter]:
        got = self.received()
        return {"email": +Counter({k: v for k, v in got["email"].items()
                                   if k in CUSTOMER_MAIL}),
                "telegram": +Counter({k: v for k, v in got["telegram"].items()
                                      if k == PETR_TG}),
                "vk": +Counter({k: v for k, v in got["vk"].items() if k == OLGA_VK}),
                "sms": +Counter({k: v for k, v in got["sms"].items()
                                 if k in {_digits(p) for p in CUSTOMER_PHONES}})}

    def to_anna(self) -> dict[str, int]:
        got = self.received()
        return {"email": got["email"]["anna@helpgate.test"],
                "telegram": got["telegram"][ANNA_TG], "vk": got["vk"][ANNA_VK],
                "sms": got["sms"][_digits(ANNA_PHONE)]}

    async def close(self) -> None:
        for transport in self.transports.values():
            await transport.close()


def _digits(phone: str) -> str:
    return "".join(c for c in phone if c.isdigit())


def thread_of(tg, number: int) -> int:
    [thread] = [key[1] for key, topic in tg.topics.items()
                if key[0] == STAFF_GROUP and topic["name"].startswith(f"#{number} ")]
    return thread


async def reply(desk, number: int, text: str, public: bool, author: str = "anna@helpgate.test"):
    """`helpgate reply N [--private] --as EMAIL TEXT`: the CLI's own call."""
    return await desk.store.run(staff_reply, desk.config, number, text, public, author,
                                "cli", desk.clock.now)


async def change_status(desk, number: int, target: str, until: datetime | None = None):
    """`helpgate status N STATUS`: the CLI's own call."""
    def work(session):
        ticket = ticket_by_number(session, number, lock=True)
        status_service(desk.config).request(session, ticket, target, desk.clock.now,
                                            "changed by an operator (CLI)", until)
    await desk.store.run(work)


async def assign(desk, number: int, email: str) -> None:
    """`helpgate assign N EMAIL`: the CLI's own call."""
    def work(session):
        ticket = ticket_by_number(session, number, lock=True)
        assignment_service(desk.config).assign(session, ticket, find_employee(session, email),
                                               desk.clock.now, "assigned by an operator (CLI)")
    await desk.store.run(work)


async def test_nothing_private_or_internal_reaches_any_customer_on_any_channel(
        store, clock, relay, tg, vk, sms):
    config = desk_config(relay, tg, vk, sms)
    await store.run(people.import_directory, people.DirectoryFile.model_validate(DIRECTORY),
                    clock.now)
    for user, name in ((PETR_TG, "Petr"), (ANNA_TG, "Anna"), (BORIS_TG, "Boris")):
        tg.user(user, name)
    tg.group("Support staff", forum=True, chat_id=STAFF_GROUP,
             members=(tg.user(ANNA_TG, "Anna"), tg.user(BORIS_TG, "Boris")))
    vk.user(OLGA_VK, "Olga")
    vk.user(ANNA_VK, "Anna")
    desk = Desk(config, store, clock, relay, tg, vk, sms)
    boris_token = (await store.run(api_tokens.issue, "boris@helpgate.test", "ui",
                                   clock.now))["token"]
    client = TestClient(TestServer(Api(config, store, clock).app()))
    await client.start_server()
    adapter = TelegramAdapter(config.telegram, services_for(desk.pipeline))
    await adapter.start()
    try:
        await _drive(desk, client, boris_token, adapter)
    finally:
        await adapter.stop()
        await client.close()
        await desk.close()


async def _drive(desk, client, token, adapter) -> None:
    store, clock, pipeline = desk.store, desk.clock, desk.pipeline
    auth = {"Authorization": f"Bearer {token}"}

    async def api(path: str, body: dict) -> dict:
        response = await client.post(path, json=body, headers=auth)
        assert response.status in (200, 201), await response.text()
        return await response.json()

    async def in_topic(number: int, text: str, who: int = ANNA_TG) -> None:
        """An employee writes in the ticket's topic of the staff group."""
        count = await store.run(lambda s: s.scalar(select(func.count(InboundRow.id))))
        desk.tg.send_text(desk.tg.user(who, "Anna"), text, chat=STAFF_GROUP,
                          thread_id=thread_of(desk.tg, number))
        await stored(store, count + 1)
        await _decided(store)

    # -- The baseline: public tickets on every channel, acknowledged to their customers.
    public = {
        "email": (await pipeline.ingest_email(mail(subject="Принтер"))).ticket,
        "telegram": (await pipeline.ingest(messenger("telegram", PETR_TG, "Сканер", clock))
                     ).ticket,
        "vk": (await pipeline.ingest(messenger("vk", OLGA_VK, "Роутер", clock))).ticket,
        "webform": (await pipeline.ingest(web_form("Не открывается сайт", clock))).ticket}
    await desk.deliver()
    baseline = desk.to_customers()
    # Each customer was reached on their channel (the fakes see customers at all).
    assert baseline["email"][IVAN["email"]] and baseline["email"][WEB_EMAIL]
    assert baseline["telegram"][PETR_TG] and baseline["vk"][OLGA_VK]
    anna_before = desk.to_anna()

    # -- Tickets of the internal type on every channel: no acknowledgement.
    internal = {
        "email": (await pipeline.ingest_email(mail(subject="Внутреннее: принтер", body="x"),
                                              "internal")).ticket,
        "telegram": (await pipeline.ingest(messenger("telegram", PETR_TG, "Внутреннее",
                                                     clock), "internal")).ticket,
        "vk": (await pipeline.ingest(messenger("vk", OLGA_VK, "Внутреннее", clock),
                                     "internal")).ticket,
        "webform": (await pipeline.ingest(web_form("Внутренняя заявка", clock),
                                          "internal")).ticket}
    assert len(set(internal.values())) == 4 and not set(internal.values()) & set(
        public.values())
    await desk.deliver()      # their topics are made in the staff group

    # -- Private notes on the public tickets: the CLI's path, the API, the staff topic.
    answer = (await store.run(canned.create, "Перезагрузка", "Перезагрузите роутер.",
                              clock.now))["id"]
    for channel, number in public.items():
        await reply(desk, number, f"Заметка CLI {channel}", public=False)
        await api(f"/tickets/{number}/note", {"text": f"Заметка API {channel}"})
        await in_topic(number, f"/note заметка в теме {channel}")
        # A canned answer kept as a note (its text, not sent).
        text = await store.run(canned.canned_text, answer)
        await reply(desk, number, text, public=False, author="boris@helpgate.test")
        # Assignment tells the assignee, never the customer.
        await api(f"/tickets/{number}/assign", {"employee": "anna@helpgate.test"})

    # -- Everything staff may do on an internal ticket: answers, canned answers, status
    # changes (each in the email and SMS lists), send and resolve, assignment.
    for channel, number in internal.items():
        await assign(desk, number, "anna@helpgate.test")
        await reply(desk, number, f"Ответ CLI {channel}", public=True)
        await api(f"/tickets/{number}/reply", {"text": f"Ответ API {channel}"})
        await api(f"/tickets/{number}/reply", {"canned": answer})
        await in_topic(number, f"Ответ в теме {channel}")
        await change_status(desk, number, "pending", clock.now.replace(year=2030))
        await api(f"/tickets/{number}/status", {"status": "open"})
        if channel == "email":
            await in_topic(number, "/close")     # the staff topic's way to resolve
        else:
            await api(f"/tickets/{number}/reply", {"text": "И решено", "resolve": True})
        await change_status(desk, number, "closed")
        await api(f"/tickets/{number}/assign", {"employee": None})
    statuses = await store.run(lambda s: [ticket_by_number(s, n).status
                                          for n in internal.values()])
    assert statuses == ["closed"] * 4

    await desk.deliver()
    # Nothing more reached any customer: no address, chat or phone.
    assert desk.to_customers() == baseline
    # Employees were told (so the paths above ran and the fakes deliver): Anna, the
    # assignee, on every channel; each private note is on its ticket.
    anna = desk.to_anna()
    assert all(anna[channel] > anna_before[channel] for channel in anna), (anna_before, anna)
    notes = await store.run(lambda s: s.scalar(select(func.count(Comment.id)).where(
        Comment.public.is_(False), Comment.author_kind == "employee")))
    assert notes == 4 * 4


async def _decided(store) -> None:
    """The staff topic's message is decided (the adapter hands it to the pipeline)."""
    from tests.waiting import eventually

    async def done():
        states = await store.run(lambda s: s.execute(select(InboundRow.state)).scalars().all())
        return "received" not in states
    await eventually(done, what="the staff message decided")
