"""Real mail is never lost, never blocks, never depends on the backend (issue #14).

Every class of hostile or broken mail goes through the whole pipeline on SQLite and on
PostgreSQL (the `store` fixture runs each test on both) and must give the same, expected
decision: R-TS-5 (nothing accepted is lost), R-TH-8 (robots get no answer), R-TH-9 (only a
true re-delivery is a duplicate).
"""

from __future__ import annotations

import asyncio
import smtplib
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from helpgate.config.schema import Config
from helpgate.gateway import pipeline as pipeline_module
from helpgate.gateway.pipeline import Pipeline
from helpgate.gateway.run import Gateway
from helpgate.threading.rules import sender_identity
from helpgate.ticketstore.models import InboundMessage, OutboxMessage, Ticket
from helpgate.ticketstore.queries import quarantine_list
from tests.conftest import PG_ADMIN_URL, _drop_schema, _postgres_store
from tests.mailfactory import mail
from tests.waiting import eventually

NUL_AND_LONG = (
    b"From: \"Iv\x00an " + b"N" * 300 + b"\" <ivan@romashka.ru>\r\n"
    b"Subject: Pri\x00nter \xc2\x85 down\r\nDate: " + b"Mon, 23 Nov 2026 " * 10 + b"\r\n"
    b"Message-ID: <" + b"m" * 600 + b"@x>\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
    b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nte\x00xt\r\n--B\r\n"
    b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
    b"filename=\"../../a\x00b.pdf\"\r\n\r\n%PDF\r\n--B--\r\n")

# (what it is, raw mail, the decision every backend must take)
CLASSES = [
    ("internationalised address", "From: Иван <иван@пример.рф>\r\nSubject: Принтер\r\n"
     "Message-ID: <idn@x>\r\n\r\nНе печатает.\r\n".encode(), "new_ticket"),
    ("mbox envelope line", b"From ivan@romashka.ru  Tue Oct 29 03:52:03 2013\n"
     b"From: ivan@romashka.ru\nSubject: mbox\nMessage-ID: <mbox@x>\n\nbody\n", "new_ticket"),
    ("bounce from a daemon with no address", b"From: MAILER-DAEMON (Mail Delivery System)\n"
     b"Subject: Undelivered Mail\n\nMessage-ID: <hg1.ab@helpgate.localhost>\n", "ignored"),
    ("bounce with only a null Return-Path", b"Return-Path: <>\nSubject: failure notice\n\n"
     b"Sorry.\n", "ignored"),
    ("subject only", b"From: ivan@romashka.ru\nSubject: Call me back\nMessage-ID: <s@x>\n\n",
     "new_ticket"),
    ("lost start boundary", b"From: ivan@romashka.ru\nSubject: s\n"
     b"Content-Type: multipart/mixed; boundary=XYZ\n\nplain words\n", "new_ticket"),
    ("raw UTF-8 file name", "From: ivan@romashka.ru\nSubject: s\nContent-Type: multipart/"
     "mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\nсчёт\n--B\nContent-Disposition:"
     " attachment; filename=\"Счёт.pdf\"\n\n%PDF\n--B--\n".encode(), "new_ticket"),
    ("charset label naming no charset", b"From: ivan@romashka.ru\nSubject: s\n"
     b"Content-Type: text/plain; charset=base64\n\n\xd0\x9f\xd1\x80\xd0\xb8\n", "new_ticket"),
    ("NUL and over-long values", NUL_AND_LONG, "new_ticket"),
    ("address longer than SMTP allows", b"From: " + b"a" * 330 + b"@romashka.ru\n"
     b"Subject: s\n\nbody\n", "quarantined"),
    ("our Message-ID with a 20-digit ticket", b"From: ivan@romashka.ru\nSubject: s\n"
     b"In-Reply-To: <hg12345678901234567890.ab@helpgate.localhost>\n\nbody\n", "new_ticket"),
    ("marker with a 20-digit number", b"From: ivan@romashka.ru\n"
     b"Subject: Re: [#12345678901234567890] s\n\nbody\n", "new_ticket"),
]


@pytest.mark.parametrize("raw, action", [c[1:] for c in CLASSES], ids=[c[0] for c in CLASSES])
async def test_each_class_gets_its_decision_on_every_backend(pipeline, store, raw, action):
    result = await pipeline.ingest_email(raw)
    assert result.action == action, result.reason
    stored, state = await store.run(lambda s: s.execute(select(
        InboundMessage.raw, InboundMessage.state).where(
        InboundMessage.id == result.inbound)).one())
    assert stored == raw and state != "received"
    if action == "quarantined":
        assert result.reason


async def test_hostile_values_are_stored_cleaned_on_every_backend(pipeline, store):
    result = await pipeline.ingest_email(NUL_AND_LONG)
    ticket = await store.run(lambda s: s.scalar(select(Ticket)))
    assert ticket.subject == "Printer down"
    comment = await store.run(lambda s: s.get(pipeline_module.Comment, result.comment))
    assert comment.text == "text" and len(comment.email_date) <= 100
    assert [a.filename for a in comment.attachments] == ["../../ab.pdf"]


@pytest.fixture
async def endpoint(store):
    """A running gateway with its SMTP endpoint on a free port; its endpoint."""
    gateway = Gateway(Config(mail={"endpoint": {"port": 0}}), store, timer_interval=60)
    running = asyncio.create_task(gateway.serve())
    endpoint = gateway.channels[0]
    await eventually(lambda: endpoint.port is not None)
    yield endpoint
    gateway.stop.set()
    await asyncio.wait_for(running, 20)


async def test_a_null_envelope_sender_gets_no_acknowledgement(store, endpoint):
    # An auto-reply with no header of its own saying so: only the envelope tells.
    raw = mail(sender="robot@romashka.ru", subject="Re: your request", body="Noted.")
    await asyncio.to_thread(_smtp_send, endpoint.port, "", raw)
    row = await eventually(lambda: store.run(
        lambda s: s.scalar(select(InboundMessage).where(InboundMessage.state != "received"))))
    assert row.state == "ignored" and "Return-Path <>" in row.reason
    assert await store.run(lambda s: s.scalar(select(func.count()).select_from(
        OutboxMessage))) == 0


def _smtp_send(port: int, sender: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.sendmail(sender, ["support@helpgate.localhost"], raw)


# ------------------------------------------------------- 8. reused Message-IDs
async def test_a_reused_message_id_with_other_content_is_kept_and_decided(pipeline, store):
    first = await pipeline.ingest_email(mail(message_id="<same@client>", body="Первое"))
    second = await pipeline.ingest_email(mail(message_id="<same@client>", body="Второе"))
    forged = await pipeline.ingest_email(mail(sender="mallory@evil.example",
                                              message_id="<same@client>", body="Первое"))
    assert [r.action for r in (first, second, forged)] == ["new_ticket"] * 3
    assert len({first.inbound, second.inbound, forged.inbound}) == 3
    again = await pipeline.ingest_email(
        b"Received: from mx.example by us\r\nDelivered-To: support@helpgate.localhost\r\n"
        + mail(message_id="<same@client>", body="Первое"))
    assert again.action != "duplicate" or again.inbound == first.inbound


async def test_a_true_redelivery_is_a_duplicate(pipeline):
    raw = mail(message_id="<once@client>", body="Один раз")
    first = await pipeline.ingest_email(raw)
    traced = b"Return-Path: <ivan@romashka.ru>\r\nReceived: by mx2\r\n" + raw.replace(
        b"\r\n", b"\n")
    again = await pipeline.ingest_email(traced)
    assert (again.action, again.inbound) == ("duplicate", first.inbound)


# ----------------------------------------- 9. decided even when the decision failed
def _break_decision_and_quarantine(monkeypatch) -> None:
    """A decision that fails and a quarantine write that fails too (the database gone
    for a moment): the raw message is committed, nothing else is."""
    def crash(ctx, directory):
        raise RuntimeError("rule bug")

    def no_database(*args, **kwargs):
        raise ConnectionError("database gone")
    monkeypatch.setattr(sender_identity, "apply", crash)
    monkeypatch.setattr(pipeline_module, "_finish_if_received", no_database)


@pytest.mark.pipeline_errors_expected
async def test_a_stuck_message_is_listed_and_decided_by_a_redelivery(pipeline, store, clock,
                                                                     monkeypatch):
    raw = mail(body="Очень важно")
    with monkeypatch.context() as patch:
        _break_decision_and_quarantine(patch)
        with pytest.raises(ConnectionError):
            await pipeline.ingest_email(raw)
    stuck = await store.run(quarantine_list, clock() + timedelta(minutes=1))
    assert [(q["state"], q["reason"].startswith("undecided")) for q in stuck] == [
        ("received", True)]
    retry = await pipeline.ingest_email(raw)
    assert retry.action == "new_ticket" and retry.inbound == stuck[0]["id"]
    assert await store.run(quarantine_list, clock() + timedelta(minutes=1)) == []


@pytest.mark.pipeline_errors_expected
async def test_the_running_gateway_decides_a_stuck_message_within_seconds(store, endpoint,
                                                                           monkeypatch):
    with monkeypatch.context() as patch:
        _break_decision_and_quarantine(patch)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(_smtp_send, endpoint.port, "ivan@romashka.ru",
                                    mail(body="Срочно"))
        assert refused.value.smtp_code == 451
    # No retry from the sender: the gateway itself decides it.
    ticket = await eventually(lambda: store.run(lambda s: s.scalar(select(Ticket))), 20,
                              "the stuck message to be decided")
    assert ticket.number == 1


# ------------------------------------------------ 12. the throttle across instances
@pytest.fixture
async def two_instances():
    """Two stores on one PostgreSQL schema: two gateway instances sharing a database."""
    first, schema = await _postgres_store()
    from helpgate.ticketstore.repository import Store
    second = Store(PG_ADMIN_URL, connect_args={"server_settings": {"search_path": schema}})
    yield first, second
    await first.close()
    await second.close()
    await _drop_schema(schema)


async def test_the_throttle_holds_across_two_instances(two_instances, clock):
    config = Config(threading={"throttle_max": 60, "throttle_window": "1h"},
                    notifications={"acknowledge_new_tickets": False})
    pipelines = [Pipeline(config, store, clock) for store in two_instances]
    mails = [mail(sender="flood@lyutik.ru", body=f"сообщение {n}") for n in range(80)]

    async def feed(pipeline, part):
        results = []
        for start in range(0, len(part), 5):
            batch = [pipeline.parse(raw) for raw in part[start:start + 5]]
            results += await pipeline.ingest_many(batch)
        return results

    halves = await asyncio.gather(feed(pipelines[0], mails[0::2]),
                                  feed(pipelines[1], mails[1::2]))
    actions = [r.action for half in halves for r in half]
    assert actions.count("quarantined") == 20
    assert actions.count("new_ticket") == 60


# --------------------------------------------------------------- the CLI's edges
def test_ingest_of_an_internationalised_sender_makes_a_ticket(hg):
    result = hg.ingest(CLASSES[0][1])
    assert result["action"] == "new_ticket"
    assert hg.ticket(result["ticket"])["contact"]["email"] == "иван@пример.рф"


def test_ingest_applies_the_message_size_limit(hg):
    hg.configure('[mail]\nmax_message_size = "1KB"\n')
    result = hg.ingest(mail(body="x" * 5000))
    assert result["action"] == "quarantined"
    assert "over mail.max_message_size" in result["reason"]
    listed = hg.json("quarantine", "list", "--json")
    assert [q["id"] for q in listed] == [result["inbound"]] and listed[0]["size"] < 1024


@pytest.mark.parametrize("args, message", [
    (("ticket", "99999999999999999999"), "no ticket 99999999999999999999"),
    (("status", "9223372036854775808", "open"), "no ticket 9223372036854775808"),
    (("outbox", "retry", "99999999999999999999"), "no outbox message 99999999999999999999"),
    (("quarantine", "replay", "18446744073709551616"),
     "no quarantined message 18446744073709551616"),
])
def test_numbers_no_row_can_have_are_not_found(hg, args, message):
    code, out, err = hg.run(*args)
    assert (code, out, err.strip()) == (1, "", f"helpgate: error: {message}")


# ------------------------------------------------------------------- 11. big mail
async def test_a_large_attachment_is_kept_byte_for_byte_on_every_backend(pipeline, store):
    """Large bodies skip the parser's line handling and SQLite's bound copies
    (channels/mail/blobs.py, repository.write_blob); the bytes must come out the same."""
    import os
    from email.message import EmailMessage
    data = os.urandom(3 * 1024 * 1024 + 7)
    message = EmailMessage()
    message["From"], message["Subject"] = "ivan@romashka.ru", "scan"
    message["Message-ID"] = "<big@x>"
    message.set_content("see the scan")
    message.add_attachment(data, maintype="image", subtype="tiff", filename="scan.tif")
    raw = bytes(message)
    config = Config(mail={"max_attachment_size": "10MB"})
    result = await Pipeline(config, store, pipeline.clock).ingest_email(raw)
    assert result.action == "new_ticket"
    comment = await store.run(lambda s: s.get(pipeline_module.Comment, result.comment))
    assert [(a.filename, a.data == data) for a in comment.attachments] == [("scan.tif", True)]
    assert comment.text == "see the scan"
    stored = await store.run(lambda s: s.scalar(select(InboundMessage.raw).where(
        InboundMessage.id == result.inbound)))
    assert stored == raw
