"""Which events queue which notifications (R-OUT-3, R-OUT-5, R-GW-2, R-TH-3, R-TH-8):
staff hear of customer messages, customers hear staff's answers, a stand-in author for an
unknown sender is never relayed to the customer, robots get nothing."""

from __future__ import annotations

import pytest

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore import people
from helpgate.ticketstore.queries import outbox_list
from tests.mailfactory import TRUSTED_MX, mail, staff_mail

TRUSTING = Config(mail={"authserv_ids": [TRUSTED_MX]})


@pytest.fixture
async def staffed(store, clock):
    await store.run(people.upsert_company, people.CompanyEntry(
        name="Romashka LLC", domains=["romashka.ru"], email="office@romashka.ru"), clock.now)
    await store.run(people.upsert_employee, people.EmployeeEntry(
        name="Anna", email="anna@helpgate.test", role="admin"), clock.now)
    await store.run(people.upsert_employee, people.EmployeeEntry(
        name="Boris", email="boris@helpgate.test", role="agent"), clock.now)
    return store


async def rows(store) -> list[tuple[str, str]]:
    return [(r["kind"], r["to"]) for r in await store.run(outbox_list)]


async def test_new_ticket_acknowledged_and_staff_told(staffed, clock):
    result = await Pipeline(Config(), staffed, clock).ingest_email(mail())
    assert result.action == "new_ticket"
    assert await rows(staffed) == [("ack", "ivan@romashka.ru"),
                                   ("staff", "anna@helpgate.test"),
                                   ("staff", "boris@helpgate.test")]
    ack = (await staffed.run(outbox_list))[0]
    assert ack["subject"] == f"[#{result.ticket}] Не работает принтер"
    assert ack["text"].startswith("##- Пожалуйста, пишите ответ выше этой строки -##")
    assert ack["headers"]["Auto-Submitted"] == "auto-replied"
    assert ack["headers"]["In-Reply-To"].endswith("@client.example>")


async def test_staff_answer_goes_to_the_customer_only(staffed, clock):
    pipeline = Pipeline(TRUSTING, staffed, clock)
    number = (await pipeline.ingest_email(mail())).ticket
    before = len(await rows(staffed))
    answer = await pipeline.ingest_email(staff_mail(sender="boris@helpgate.test",
                                              subject=f"Re: [#{number}]", body="Сделано."))
    assert answer.action == "comment"
    assert (await rows(staffed))[before:] == [("comment", "ivan@romashka.ru")]


async def test_stand_in_author_is_not_relayed_to_the_customer(staffed, clock):
    pipeline = Pipeline(Config(), staffed, clock)
    number = (await pipeline.ingest_email(mail())).ticket
    before = len(await rows(staffed))
    result = await pipeline.ingest_email(mail(sender="colleague@elsewhere.example",
                                              subject=f"Re: [#{number}]", body="И у меня."))
    assert "unknown_sender" in result.rules
    assert (await rows(staffed))[before:] == [("staff", "anna@helpgate.test"),
                                              ("staff", "boris@helpgate.test")]


async def test_internal_ticket_type_never_notifies_the_customer(staffed, clock):
    pipeline = Pipeline(TRUSTING, staffed, clock)
    result = await pipeline.ingest_email(mail(), ticket_type="internal")
    assert [kind for kind, _ in await rows(staffed)] == ["staff", "staff"]
    await pipeline.ingest_email(staff_mail(sender="anna@helpgate.test",
                                     subject=f"Re: [#{result.ticket}]", body="Внутреннее."))
    assert all(kind == "staff" for kind, _ in await rows(staffed))


async def test_employees_setting_limits_staff_notifications(staffed, clock):
    config = Config(notifications={"employees": ["boris@helpgate.test"]})
    await Pipeline(config, staffed, clock).ingest_email(mail())
    assert [to for kind, to in await rows(staffed) if kind == "staff"] == ["boris@helpgate.test"]


async def test_robots_get_nothing(staffed, clock):
    pipeline = Pipeline(Config(), staffed, clock)
    result = await pipeline.ingest_email(mail(headers={"Auto-Submitted": "auto-replied"}))
    assert result.action == "ignored" and await rows(staffed) == []
