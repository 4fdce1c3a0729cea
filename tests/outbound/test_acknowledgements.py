"""Who gets an acknowledgement (R-TH-8, issue #15 items 10 and 11), read at the real
aiosmtpd relay: the author and never a third party's Reply-To, at most a few per address
and hour across gateway instances, never a robot, never a mailing list."""

from __future__ import annotations

import pytest

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.outbound.email import EmailTransport
from helpgate.outbound.outbox import OutboxWorker
from helpgate.ticketstore import people
from helpgate.ticketstore.queries import outbox_list
from tests.mailfactory import mail
from tests.mailservers import Relay


def relay_config(relay: Relay, **notifications) -> Config:
    return Config(mail={"smtp": relay.smtp_config()},
                  notifications={"employees": "none", **notifications})


def recipients(relay: Relay) -> list[str]:
    return sorted(to for received in relay.received for to in received.rcpt_tos)


async def send_all(store, config, clock) -> None:
    worker = OutboxWorker(store, config, {"email": EmailTransport(config)}, clock)
    while await worker.run_once():
        pass


async def test_the_author_is_acknowledged_never_the_reply_to(store, relay, clock):
    config = relay_config(relay)
    pipeline = Pipeline(config, store, clock)
    for number in range(5):
        await pipeline.ingest_email(mail(sender=f"rotating{number}@attacker.example",
                                         subject=f"Hello {number}",
                                         headers={"Reply-To": "victim@example.com"}))
    await send_all(store, config, clock)
    assert recipients(relay) == [f"rotating{n}@attacker.example" for n in range(5)]


async def test_acknowledgements_per_address_are_capped_across_instances(store, relay, clock):
    config = relay_config(relay, max_acknowledgements_per_hour=3)
    first, second = Pipeline(config, store, clock), Pipeline(config, store, clock)
    for number in range(6):
        gateway = first if number % 2 else second
        result = await gateway.ingest_email(mail(subject=f"Request {number}"))
        assert result.action == "new_ticket"  # every request is kept: only the ack is not
        clock.advance(minutes=1)
    await send_all(store, config, clock)
    assert recipients(relay) == ["ivan@romashka.ru"] * 3
    clock.advance(hours=1)
    await first.ingest_email(mail(subject="An hour later"))
    await send_all(store, config, clock)
    assert recipients(relay) == ["ivan@romashka.ru"] * 4


async def test_the_cap_holds_within_one_batch(store, relay, clock):
    config = relay_config(relay, max_acknowledgements_per_hour=2)
    await Pipeline(config, store, clock).ingest_many(
        [Pipeline(config, store, clock).parse(mail(subject=f"Batch {n}")) for n in range(4)])
    await send_all(store, config, clock)
    assert recipients(relay) == ["ivan@romashka.ru"] * 2


@pytest.mark.parametrize("subject", ["Автоматический ответ: Принтер", "Out of Office: Printer",
                                     "Abwesenheitsnotiz: Drucker", "Automatic reply: Printer"])
async def test_out_of_office_without_headers_gets_nothing(subject, store, relay, clock):
    """An auto-responder that sets no RFC 3834 header: its notice back to our
    acknowledgement is ignored; a fresh mail with such a subject is kept as a request but
    never answered. Either way nothing goes out to it: no loop."""
    config = relay_config(relay)
    pipeline = Pipeline(config, store, clock)
    fresh = [await pipeline.ingest_email(mail(sender="robot@lyutik.ru", subject=subject,
                                              body=f"Away {n}.")) for n in range(3)]
    assert {r.action for r in fresh} == {"new_ticket"}
    request = await pipeline.ingest_email(mail(subject="Принтер"))
    await send_all(store, config, clock)
    [ack] = relay.received
    back = await pipeline.ingest_email(mail(
        subject=f"{subject} {ack.message['Subject']}", body="Я в отпуске.",
        in_reply_to=ack.message["Message-ID"]))
    assert back.action == "ignored" and request.action == "new_ticket"
    await send_all(store, config, clock)
    assert recipients(relay) == ["ivan@romashka.ru"]


async def test_list_mail_opens_a_ticket_that_only_staff_hear_of(store, relay, clock):
    await store.run(people.upsert_employee, people.EmployeeEntry(
        name="Anna", email="anna@helpgate.test", role="admin"), clock.now)
    config = relay_config(relay, employees="all")
    result = await Pipeline(config, store, clock).ingest_email(mail(
        sender="staff-list@romashka.ru", headers={"List-Id": "<staff.romashka.ru>",
                                                  "List-Unsubscribe": "<mailto:u@x>"}))
    await send_all(store, config, clock)
    assert result.action == "new_ticket" and "auto_reply" in result.rules
    assert recipients(relay) == ["anna@helpgate.test"]
    assert [r["kind"] for r in await store.run(outbox_list)] == ["staff"]
