"""SMS as an outbound channel (issue 18 part 1) against the local fakes of SMSC.ru, SMS.ru
and SMSAero, through the real OutboxWorker on SQLite and PostgreSQL.

For each provider: a staff answer `--via sms` is sent once to the contact's phone in
E.164; each permanent error parks the row with the provider's words and sends nothing;
each retryable one is retried and then sent once; a timeout after the request arrived
never leads to a second SMS (SMSC: asked by our id; the others: "uncertain")."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.replies import staff_reply
from helpgate.outbound.outbox import OutboxWorker
from helpgate.outbound.sms import SmsTransport
from helpgate.ticketstore import people
from helpgate.ticketstore.models import OutboxMessage
from tests.fakes.sms import FAKES, FakeSmsAero, FakeSmsc, FakeSmsGateway, FakeSmsRu, settings_for
from tests.mailfactory import mail

PHONE = "8 (916) 123-45-67"
DIGITS = "79161234567"
ANSWER = "Заменили картридж, принтер печатает."
# The client's timeout in these tests (a loopback connection of a busy machine must
# never take that long), and a delay well beyond it.
TIMEOUT = 1.0
BEYOND = 3.0


@pytest.fixture(params=list(FAKES))
async def fake(request):
    async with FAKES[request.param]() as server:
        yield server


def config_for(fake: FakeSmsGateway, outbox: dict | None = None, **sms) -> Config:
    return Config(sms=settings_for(fake, timeout=TIMEOUT, **sms),
                  notifications={"employees": "none", "acknowledge_new_tickets": False},
                  outbox=outbox or {})


async def answered(store, clock, config, text: str = ANSWER, phone: str = PHONE) -> int:
    """A contact's mail ticket, and a staff answer to it queued by SMS; the row's id."""
    await store.run(people.import_directory, people.DirectoryFile.model_validate({
        "employees": [{"name": "Анна", "email": "anna@helpgate.test", "role": "admin"}],
        "contacts": [{"name": "Иван", "email": "ivan@romashka.ru", "phone": phone}]}),
        clock.now)
    ticket = (await Pipeline(config, store, clock).ingest_email(mail())).ticket
    result = await store.run(staff_reply, config, ticket, text, True, None, "cli",
                             clock.now, "sms")
    assert [q["channel"] for q in result["queued"]] == ["sms"]
    return await store.run(lambda s: s.scalar(
        select(OutboxMessage.id).where(OutboxMessage.channel == "sms")))


async def row(store, row_id: int) -> tuple[str, str | None, int]:
    return await store.run(lambda s: tuple(s.execute(
        select(OutboxMessage.state, OutboxMessage.last_error, OutboxMessage.attempts)
        .where(OutboxMessage.id == row_id)).one()))


class Desk:
    """The outbox worker with the SMS transport of one config."""

    def __init__(self, store, config, clock) -> None:
        self.transport = SmsTransport(config.sms)
        self.worker = OutboxWorker(store, config, {"sms": self.transport}, clock)

    async def __aenter__(self) -> OutboxWorker:
        return self.worker

    async def __aexit__(self, *exc) -> None:
        await self.transport.close()


async def test_a_staff_answer_goes_once_to_the_contacts_phone(fake, store, clock):
    config = config_for(fake, sender="Helpdesk")
    row_id = await answered(store, clock, config)
    async with Desk(store, config, clock) as worker:
        assert await worker.run_once() == 1
    assert [(s.phone, s.text) for s in fake.sent] == [(DIGITS, ANSWER)]
    assert fake.sent[0].sender == "Helpdesk"
    assert fake.requests["send"] == 1
    assert (await row(store, row_id))[0] == "sent"
    if isinstance(fake, FakeSmsc):
        assert fake.sent[0].our_id == str(row_id)   # what a status query finds it by


def permanent_errors(fake: FakeSmsGateway) -> list[tuple[str, callable]]:
    """(what the row's error says, how the fake is made to refuse) per permanent error."""
    def bad_number():
        fake.bad_numbers.add(DIGITS)

    def no_money():
        fake.balance = 0

    def bad_credentials():
        if isinstance(fake, FakeSmsc):
            fake.password = "changed"
        elif isinstance(fake, FakeSmsRu):
            fake.api_id = "changed"
        else:
            fake.api_key = "changed"
    words = {FakeSmsc: ("phone number is wrong", "no money left", "login or password"),
             FakeSmsRu: ("cannot send to this number", "no money left", "api_id is wrong"),
             FakeSmsAero: ("phone number is wrong", "no money left", "login or API key")}
    number, money, credentials = words[type(fake)]
    return [(number, bad_number), (money, no_money), (credentials, bad_credentials)]


@pytest.mark.parametrize("which", ["number", "money", "credentials"])
async def test_a_permanent_error_parks_the_row_and_sends_nothing(fake, store, clock, which):
    config = config_for(fake)
    row_id = await answered(store, clock, config)
    expected, provoke = dict(zip(["number", "money", "credentials"],
                                 permanent_errors(fake), strict=True))[which]
    provoke()
    async with Desk(store, config, clock) as worker:
        await worker.run_once()
        clock.advance(hours=2)
        assert await worker.run_once() == 0   # parked: never tried again by itself
    state, error, attempts = await row(store, row_id)
    assert (state, attempts) == ("parked", 1)
    assert expected in error
    assert fake.sent == [] and fake.requests["send"] == 1


PROVIDER_ERRORS = {FakeSmsc: (3, "no money left"), FakeSmsRu: (201, "no money left"),
                   FakeSmsAero: ("Insufficient balance", "no money left")}


async def test_the_providers_own_error_code_for_no_money_is_permanent(fake, store, clock):
    config = config_for(fake)
    row_id = await answered(store, clock, config)
    code, words = PROVIDER_ERRORS[type(fake)]
    fake.fail_next("error", code)
    async with Desk(store, config, clock) as worker:
        await worker.run_once()
    state, error, _ = await row(store, row_id)
    assert state == "parked" and words in error
    assert fake.sent == []


RETRYABLE_CODES = {FakeSmsc: [4, 9], FakeSmsRu: [220, 231], FakeSmsAero: []}


def retryable_faults(fake: FakeSmsGateway) -> list[tuple[str, object]]:
    return [("http", 500), ("http", 502), ("http", 503), ("http", 429),
            *(("error", code) for code in RETRYABLE_CODES[type(fake)])]


async def test_each_retryable_error_is_retried_and_sent_once(fake, store, clock):
    config = config_for(fake)
    faults = retryable_faults(fake)
    row_id = await answered(store, clock, config)
    async with Desk(store, config, clock) as worker:
        for kind, value in faults:
            fake.fail_next(kind, value)
            await worker.run_once()
            state, error, _ = await row(store, row_id)
            assert state == "queued", (kind, value, error)
            assert fake.sent == []
            clock.advance(hours=2)
        await worker.run_once()
    assert (await row(store, row_id))[:1] == ("sent",)
    assert [s.text for s in fake.sent] == [ANSWER]
    # (SMSC asks by our id before each later attempt: one status query per retry.)
    assert fake.requests["send"] == len(faults) + 1


async def test_a_429_waits_as_long_as_the_provider_asks(fake, store, clock):
    config = config_for(fake, outbox={"retry_after": "1s"})
    row_id = await answered(store, clock, config)
    fake.fail_next("http", 429)   # with Retry-After: 3
    async with Desk(store, config, clock) as worker:
        await worker.run_once()
        clock.advance(seconds=2)
        assert await worker.run_once() == 0
        clock.advance(seconds=2)
        assert await worker.run_once() == 1
    assert (await row(store, row_id))[0] == "sent"
    assert len(fake.sent) == 1


async def test_a_gateway_out_of_reach_is_retried(fake, store, clock):
    config = config_for(fake)
    row_id = await answered(store, clock, config)
    port = fake.port
    gone = Config(sms={**config.sms.model_dump(), "base_url": "http://127.0.0.1:9"},
                  notifications=config.notifications.model_dump())
    async with Desk(store, gone, clock) as worker:
        await worker.run_once()
    state, error, _ = await row(store, row_id)
    assert state == "queued" and "cannot connect" in error
    clock.advance(hours=2)
    async with Desk(store, config, clock) as worker:
        await worker.run_once()
    assert fake.port == port and len(fake.sent) == 1
    assert (await row(store, row_id))[0] == "sent"


async def test_a_timeout_after_the_request_arrived_sends_one_sms(fake, store, clock):
    """The gateway takes the SMS and answers too late: SMSC is asked by our id and says
    it has it (sent); SMS.ru and SMSAero cannot be asked, so the row is "uncertain" and
    stays so. Either way the fake has exactly one SMS, however often the worker runs."""
    config = config_for(fake)
    row_id = await answered(store, clock, config)
    fake.fail_next("slow", BEYOND)
    async with Desk(store, config, clock) as worker:
        await worker.run_once()
        for _ in range(3):
            clock.advance(hours=2)
            await worker.run_once()
    state, error, attempts = await row(store, row_id)
    if isinstance(fake, FakeSmsc):
        assert (state, attempts) == ("sent", 1)
        assert fake.requests["status"] == 1
    else:
        assert (state, attempts) == ("uncertain", 1)
        assert "no answer from" in error and f"helpgate outbox retry {row_id}" in error
    assert [s.text for s in fake.sent] == [ANSWER]
    assert fake.requests["send"] == 1


async def test_smsc_a_message_stuck_in_the_gateway_is_asked_for_before_a_resend(store, clock):
    """SMSC takes the request but processes it only after our timeout: the status query
    right after finds nothing, so the row is retried — and the retry asks again first,
    finds it, and sends nothing."""
    async with FakeSmsc() as fake:
        config = config_for(fake)
        row_id = await answered(store, clock, config)
        fake.fail_next("late", TIMEOUT + 0.5)
        async with Desk(store, config, clock) as worker:
            await worker.run_once()
            state, error, _ = await row(store, row_id)
            assert state == "queued" and "asked again before the next attempt" in error
            await asyncio.wait_for(fake.taken.wait(), 10)
            clock.advance(hours=2)
            await worker.run_once()
    assert (await row(store, row_id))[:1] == ("sent",)
    assert len(fake.sent) == 1 and fake.requests["send"] == 1
    assert fake.requests["status"] == 2


async def test_smsc_a_request_the_gateway_lost_is_sent_after_asking(store, clock):
    """The request reached SMSC and was never processed (lost there): asked twice, never
    found, so the next attempt sends it — once."""
    async with FakeSmsc() as fake:
        config = config_for(fake)
        row_id = await answered(store, clock, config)
        fake.fail_next("late", 60)   # answered (and taken) after the test is over
        async with Desk(store, config, clock) as worker:
            await worker.run_once()
            clock.advance(hours=2)
            await worker.run_once()
        assert (await row(store, row_id))[:1] == ("sent",)
        assert [s.text for s in fake.sent] == [ANSWER]
        assert fake.requests["status"] == 2


async def test_a_phone_that_cannot_be_a_number_is_no_sms_address(fake, store, clock):
    """A contact whose phone is not a number: `--via sms` falls back to their email."""
    config = config_for(fake)
    await store.run(people.import_directory, people.DirectoryFile.model_validate({
        "employees": [{"name": "Анна", "email": "anna@helpgate.test", "role": "admin"}],
        "contacts": [{"name": "Иван", "email": "ivan@romashka.ru", "phone": "12-34"}]}),
        clock.now)
    ticket = (await Pipeline(config, store, clock).ingest_email(mail())).ticket
    result = await store.run(staff_reply, config, ticket, ANSWER, True, None, "cli",
                             clock.now, "sms")
    assert result["queued"] == [{"channel": "email", "to": "ivan@romashka.ru"}]


async def test_a_long_answer_is_trimmed_to_max_parts_and_its_cost_shown(fake, store, clock):
    config = config_for(fake, max_parts=2)
    text = "Пожалуйста, перезагрузите принтер и проверьте картридж. " * 6
    await answered(store, clock, config, text=text)
    queued = await store.run(lambda s: s.scalar(select(OutboxMessage.content)
                                                .where(OutboxMessage.channel == "sms")))
    assert queued == text.strip()   # the row keeps the words; the rule applies on sending
    async with Desk(store, config, clock) as worker:
        await worker.run_once()
    (sms,) = fake.sent
    assert sms.parts == 2 and sms.text.endswith("…") and len(sms.text) <= 134
    assert text.startswith(sms.text[:-1])


async def test_too_long_park_refuses_to_send_a_long_answer(fake, store, clock):
    config = config_for(fake, max_parts=1, too_long="park")
    row_id = await answered(store, clock, config, text="Длинный ответ. " * 10)
    async with Desk(store, config, clock) as worker:
        await worker.run_once()
    state, error, _ = await row(store, row_id)
    assert state == "parked" and "needs 3 SMS parts, more than sms.max_parts (1)" in error
    assert fake.sent == []


async def test_the_sms_template_of_a_comment(fake, store, clock):
    config = config_for(fake, templates={"comment": "Заявка {number}: {text}"})
    await answered(store, clock, config, text="Готово.")
    async with Desk(store, config, clock) as worker:
        await worker.run_once()
    assert [s.text for s in fake.sent] == ["Заявка 1: Готово."]


async def test_status_changes_go_by_sms_only_for_the_listed_statuses(fake, store, clock):
    """R-OUT-5: `[sms] status_changes` (none by default) announce to the contact's phone;
    email keeps its own list (here pending and resolved)."""
    from helpgate.gateway.status_service import status_service
    from helpgate.ticketstore.repository import ticket_by_number
    config = Config(sms=settings_for(fake, timeout=TIMEOUT, status_changes=["resolved"]),
                    notifications={"employees": "none", "acknowledge_new_tickets": False,
                                   "status_changes": ["pending", "resolved"]})
    await answered(store, clock, config)

    def change(session, status, until=None):
        ticket = ticket_by_number(session, 1, lock=True)
        status_service(config).request(session, ticket, status, clock.now, "test", until)

    await store.run(change, "pending", clock.now.replace(year=2027))
    await store.run(change, "resolved")
    rows = await store.run(lambda s: [tuple(r) for r in s.execute(
        select(OutboxMessage.channel, OutboxMessage.content)
        .where(OutboxMessage.kind == "status").order_by(OutboxMessage.id))])
    resolved = "Статус обращения 1 изменён: Решена."
    assert rows == [("email", "Статус обращения 1 изменён: Отложена."),
                    ("sms", resolved), ("email", resolved)]
    async with Desk(store, config, clock) as worker:
        while await worker.run_once():
            pass
    assert [s.text for s in fake.sent] == [ANSWER, resolved]


async def test_no_status_sms_by_default(fake, store, clock):
    config = config_for(fake)
    assert config.sms.status_changes == []
    await answered(store, clock, config)
    from helpgate.gateway.status_service import status_service
    from helpgate.ticketstore.repository import ticket_by_number

    def resolve(session):
        status_service(config).request(session, ticket_by_number(session, 1, lock=True),
                                        "resolved", clock.now, "test")

    await store.run(resolve)
    channels = await store.run(lambda s: s.scalars(
        select(OutboxMessage.channel).where(OutboxMessage.kind == "status")).all())
    assert channels == ["email"]
