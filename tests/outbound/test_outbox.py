"""The outbox worker and email delivery against a real aiosmtpd relay (R-OUT-2, R-OUT-6):
what the customer receives, retries on 4xx and on a relay that is down, parking on 5xx,
never twice — not after a crash mid-send, not with two gateway instances."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.outbound import outbox
from helpgate.outbound.email import EmailTransport, TemplateError
from helpgate.outbound.outbox import OutboxWorker
from helpgate.ticketstore import instances
from helpgate.ticketstore import outbox as outbox_rows
from helpgate.ticketstore.models import OutboxMessage
from helpgate.ticketstore.outbox import DeliveryResult
from helpgate.ticketstore.queries import outbox_list
from helpgate.ticketstore.repository import Store
from tests.mailfactory import mail
from tests.mailservers import Relay

SEPARATOR = "##- Пожалуйста, пишите ответ выше этой строки -##"


def relay_config(relay: Relay, **mail) -> Config:
    return Config(mail={"smtp": relay.smtp_config(), **mail},
                  notifications={"employees": "none"},
                  outbox={"retry_after": "1m", "retry_max": "10m", "max_attempts": 3})


def worker(store: Store, config: Config, clock) -> OutboxWorker:
    return OutboxWorker(store, config, {"email": EmailTransport(config)}, clock)


async def states(store) -> list[tuple[str, int]]:
    return [(r["state"], r["attempts"]) for r in await store.run(outbox_list)]


async def test_an_acknowledgement_reaches_the_customer_threaded(store, relay, clock):
    config = relay_config(relay, reply_to="help@helpgate.localhost")
    result = await Pipeline(config, store, clock).ingest_email(
        mail(message_id="<q1@client.example>", body="Принтер не печатает."))
    assert await worker(store, config, clock).run_once() == 1
    [sent] = relay.received
    row = (await store.run(outbox_list))[0]
    message = sent.message
    assert (sent.mail_from, sent.rcpt_tos) == ("support@helpgate.localhost",
                                               ["ivan@romashka.ru"])
    assert message["Subject"] == f"[#{result.ticket}] Не работает принтер"
    assert message["Message-ID"] == row["message_id"]
    assert message["In-Reply-To"] == "<q1@client.example>"
    assert message["References"] == "<q1@client.example>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["Reply-To"] == "help@helpgate.localhost"
    assert message["From"] == "Support <support@helpgate.localhost>"
    text = sent.text()
    assert text.startswith(SEPARATOR)
    assert "> Принтер не печатает." in text
    assert not message.is_multipart()  # no design template: text/plain only
    assert (row["state"], row["attempts"], row["sent_at"] is not None) == ("sent", 1, True)


async def test_a_temporary_refusal_is_retried_later_and_sent_once(store, relay, clock):
    config = relay_config(relay)
    await Pipeline(config, store, clock).ingest_email(mail())
    relay.handler.rcpt_answer = "451 4.3.0 Mailbox busy, try later"
    delivery = worker(store, config, clock)
    await delivery.run_once()
    row = (await store.run(outbox_list))[0]
    assert (row["state"], row["attempts"]) == ("queued", 1)
    assert "451" in row["last_error"]
    relay.handler.rcpt_answer = None
    assert await delivery.run_once() == 0  # not due yet: backoff
    clock.advance(minutes=1)
    assert await delivery.run_once() == 1
    assert await states(store) == [("sent", 2)]
    assert len(relay.received) == 1


async def test_a_relay_that_is_down_gets_the_mail_when_it_returns(store, relay, clock):
    config = relay_config(relay)
    await Pipeline(config, store, clock).ingest_email(mail())
    await relay.stop()
    delivery = worker(store, config, clock)
    await delivery.run_once()
    row = (await store.run(outbox_list))[0]
    assert row["state"] == "queued" and "ConnectError" in row["last_error"]
    await relay.start()  # the same port again
    clock.advance(minutes=1)
    await delivery.run_once()
    assert await states(store) == [("sent", 2)] and len(relay.received) == 1


async def test_a_permanent_refusal_parks_the_message_visibly(store, relay, clock):
    config = relay_config(relay)
    await Pipeline(config, store, clock).ingest_email(mail())
    relay.handler.rcpt_answer = "550 5.1.1 No such user"
    await worker(store, config, clock).run_once()
    row = (await store.run(outbox_list))[0]
    assert row["state"] == "parked" and "550 5.1.1 No such user" in row["last_error"]
    clock.advance(hours=5)
    assert await worker(store, config, clock).run_once() == 0
    assert relay.received == []


async def test_temporary_failures_give_up_after_max_attempts(store, relay, clock):
    config = relay_config(relay)
    await Pipeline(config, store, clock).ingest_email(mail())
    relay.handler.data_answer = "452 4.3.1 Insufficient system storage"
    delivery = worker(store, config, clock)
    for _ in range(3):
        await delivery.run_once()
        clock.advance(hours=1)
    row = (await store.run(outbox_list))[0]
    assert (row["state"], row["attempts"]) == ("parked", 3)
    assert row["last_error"].startswith("gave up after 3 attempts: relay answered 452")


async def test_backoff_doubles_up_to_the_maximum():
    config = Config(outbox={"retry_after": "1m", "retry_max": "10m"}).outbox
    assert [outbox_rows.backoff(n, config) for n in (1, 2, 3, 4, 5)] == [
        timedelta(minutes=m) for m in (1, 2, 4, 8, 10)]


@pytest.mark.pipeline_errors_expected  # the parking is logged as an error for the admin
async def test_a_send_cut_off_by_a_crash_is_parked_uncertain_not_sent_twice(store, relay,
                                                                              clock):
    config = relay_config(relay)
    await Pipeline(config, store, clock).ingest_email(mail())
    # The gateway claims the row, hands it to the relay, and dies before recording.
    [claimed] = await store.run(outbox.claim, ["email"], clock(), timedelta(minutes=10))
    assert await store.run(outbox_rows.mark_sending, claimed.id)
    await EmailTransport(config).send(claimed)
    assert len(relay.received) == 1
    delivery = worker(store, config, clock)
    assert await delivery.run_once() == 0  # within the lease: left alone
    clock.advance(minutes=11)
    assert await delivery.run_once() == 0
    row = (await store.run(outbox_list))[0]
    assert row["state"] == "uncertain" and "may have gone out" in row["last_error"]
    assert len(relay.received) == 1
    # An admin who checked decides to send it again.
    await store.run(outbox_rows.retry, row["id"], clock())
    await delivery.run_once()
    assert await states(store) == [("sent", 1)] and len(relay.received) == 2


async def test_a_claim_never_handed_over_goes_back_to_the_queue(store, relay, clock):
    config = relay_config(relay)
    await Pipeline(config, store, clock).ingest_email(mail())
    # Claimed by a gateway that died before handing the message to the relay.
    await store.run(outbox.claim, ["email"], clock(), timedelta(minutes=10))
    delivery = worker(store, config, clock)
    assert await delivery.run_once() == 0
    clock.advance(minutes=11)
    assert await delivery.run_once() == 1
    assert await states(store) == [("sent", 1)] and len(relay.received) == 1


@pytest.mark.pipeline_errors_expected  # the parking is logged as an error for the admin
async def test_claims_of_a_dead_instance_return_at_once_not_after_the_lease(store, relay,
                                                                            clock):
    """#15.12: a killed gateway's claims are released once its heartbeat is stale
    (dead_after, 15 s by default), not after the 10-minute lease; only the message it
    had handed to the relay becomes uncertain."""
    config = relay_config(relay)
    pipeline = Pipeline(config, store, clock)
    for n in range(3):
        await pipeline.ingest_email(mail(sender=f"user{n}@romashka.ru"))
    killed = worker(store, config, clock)
    await store.run(instances.beat, killed.instance, clock())
    claimed = await store.run(outbox.claim, ["email"], clock(), timedelta(minutes=10),
                              outbox_rows.BATCH, killed.instance)
    assert len(claimed) == 3
    # It hands the first to the relay and is killed before recording the answer.
    assert await store.run(outbox_rows.mark_sending, claimed[0].id, killed.instance)
    await EmailTransport(config).send(claimed[0])
    survivor = worker(store, config, clock)
    assert await survivor.run_once() == 0  # a fresh heartbeat: its claims are its own
    clock.advance(seconds=16)  # silent past dead_after, far within the lease
    assert await survivor.run_once() == 2
    assert [state for state, _ in await states(store)] == ["uncertain", "sent", "sent"]
    ids = [r.message["Message-ID"] for r in relay.received]
    assert len(ids) == len(set(ids)) == 3
    # Not dead after all (a long pause): what it claimed is no longer its to send or record.
    assert not await store.run(outbox_rows.mark_sending, claimed[1].id, killed.instance)
    assert await store.run(outbox_rows.record, claimed[0].id, DeliveryResult.ok(), clock(),
                           config.outbox, killed.instance) == "uncertain"


async def test_a_round_writes_its_heartbeat_once_a_heartbeat_interval_not_every_round(
        store, relay, clock):
    """A round follows every commit of inbound mail; its heartbeat (a write, so a disk
    sync on the embedded database) and the look for stale claims come once a heartbeat
    interval (5 s by default), and at once when the clock is set back."""
    delivery = worker(store, relay_config(relay), clock)

    async def heartbeat():
        return await store.run(lambda s: s.scalar(select(instances.INSTANCES.c.heartbeat_at)
                                                  .where(instances.INSTANCES.c.id ==
                                                         delivery.instance)))
    await delivery.run_once()
    first = await heartbeat()
    assert first is not None
    clock.advance(seconds=4)
    await delivery.run_once()
    assert await heartbeat() == first
    clock.advance(seconds=1)
    await delivery.run_once()
    assert await heartbeat() > first
    clock.advance(seconds=-60)
    await delivery.run_once()
    assert await heartbeat() < first


async def test_a_live_instance_keeps_its_claims_and_leaves_on_a_clean_stop(store, relay,
                                                                             clock):
    config = relay_config(relay)
    await Pipeline(config, store, clock).ingest_email(mail())
    busy = worker(store, config, clock)
    await store.run(instances.beat, busy.instance, clock())
    [claimed] = await store.run(outbox.claim, ["email"], clock(), timedelta(minutes=10),
                                outbox_rows.BATCH, busy.instance)
    for _ in range(3):  # it keeps beating while its relay is slow
        clock.advance(seconds=10)
        await store.run(instances.beat, busy.instance, clock())
        assert await worker(store, config, clock).run_once() == 0
    assert await states(store) == [("claimed", 0)]
    # A clean stop: the worker finishes its round and removes its instance row.
    stop = asyncio.Event()
    stop.set()
    await busy.run(stop)
    alive = await store.run(lambda s: s.scalars(instances.live_instances(
        s, clock(), timedelta(hours=1))).all())
    assert busy.instance not in alive


async def test_retry_refuses_a_message_that_is_not_parked(store, relay, clock):
    config = relay_config(relay)
    await Pipeline(config, store, clock).ingest_email(mail())
    with pytest.raises(outbox_rows.RetryError, match="is queued"):
        await store.run(outbox_rows.retry, 1, clock())
    with pytest.raises(outbox_rows.RetryError, match="no outbox message 99"):
        await store.run(outbox_rows.retry, 99, clock())


async def test_two_instances_send_each_message_exactly_once(store, relay, clock):
    config = relay_config(relay)
    pipeline = Pipeline(config, store, clock)
    for n in range(30):
        await pipeline.ingest_email(mail(sender=f"user{n}@romashka.ru"))
    other = Store(store.url, connect_args=store.connect_args)
    try:
        workers = [worker(store, config, clock), worker(other, config, clock)]
        while sum(await asyncio.gather(*(w.run_once() for w in workers))):
            pass
    finally:
        await other.close()
    recipients = sorted(r.rcpt_tos[0] for r in relay.received)
    assert recipients == sorted(f"user{n}@romashka.ru" for n in range(30))
    assert {state for state, _ in await states(store)} == {"sent"}


async def test_the_worker_wakes_for_new_mail_and_drains_on_stop(store, relay, clock):
    config = Config(mail={"smtp": relay.smtp_config()}, notifications={"employees": "none"},
                    outbox={"poll_interval": 60})
    delivery = worker(store, config, clock)
    stop = asyncio.Event()
    running = asyncio.create_task(delivery.run(stop))
    await asyncio.sleep(0.05)
    await Pipeline(config, store, clock).ingest_email(mail())
    delivery.wake()  # what the gateway does after queueing: no minute-long poll wait
    await asyncio.wait_for(relay.handler.arrived.wait(), timeout=5)
    stop.set()
    await asyncio.wait_for(running, timeout=5)
    assert await states(store) == [("sent", 1)]


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_tls_and_starttls_with_auth(store, clock, certificate, security):
    relay = await Relay(security, certificate, login=("helpgate", "s3cret")).start()
    try:
        config = relay_config(relay)
        await Pipeline(config, store, clock).ingest_email(mail())
        await worker(store, config, clock).run_once()
        row = (await store.run(outbox_list))[0]
        assert row["state"] == "sent", row["last_error"]
        assert len(relay.received) == 1
        wrong = Config(mail={"smtp": relay.smtp_config(password="wrong")},
                       notifications={"employees": "none"})
        await Pipeline(wrong, store, clock).ingest_email(mail(sender="petr@romashka.ru"))
        await worker(store, wrong, clock).run_once()
        row = (await store.run(outbox_list))[-1]
        assert row["state"] == "parked" and "535" in row["last_error"], row["last_error"]
    finally:
        await relay.stop()


async def test_an_html_design_wraps_the_text(store, relay, clock, tmp_path):
    design = tmp_path / "design.html"
    design.write_text("<html><body><div class=brand>{{{CONTENT}}}</div></body></html>")
    config = relay_config(relay, html_template=str(design))
    await Pipeline(config, store, clock).ingest_email(mail(body="<script>x</script>"))
    await worker(store, config, clock).run_once()
    message = relay.received[0].message
    html = message.get_body(("html",)).get_content()
    assert html.startswith("<html><body><div class=brand>" + SEPARATOR)
    assert "&gt; &lt;script&gt;x&lt;/script&gt;" in html
    assert message.get_body(("plain",)).get_content().startswith(SEPARATOR)


def test_a_template_without_the_slot_is_a_clear_error(tmp_path):
    design = tmp_path / "design.html"
    design.write_text("<html></html>")
    with pytest.raises(TemplateError, match=r"has no \{\{\{CONTENT\}\}\} slot"):
        EmailTransport(Config(mail={"html_template": str(design)}))


async def test_a_stop_hands_back_the_claims_a_round_has_not_started(store, relay, clock):
    """A round claims up to BATCH rows and hands them over outbox.in_flight at a time; a stop
    lets the group in flight finish and returns the rest to the queue at once, for the
    next gateway, instead of keeping them until the whole round is sent."""
    config = relay_config(relay)
    in_flight = config.outbox.in_flight
    pipeline = Pipeline(config, store, clock)
    for n in range(in_flight * 2 + 1):
        await pipeline.ingest_email(mail(sender=f"user{n}@romashka.ru"))
    stop = asyncio.Event()
    delivery = worker(store, config, clock)
    sending = delivery.transports["email"]

    class StopWhileSending:
        channel = "email"

        async def send(self, message):
            stop.set()
            return await sending.send(message)

        async def close(self):
            pass

    delivery.transports = {"email": StopWhileSending()}
    await delivery.run(stop)
    counts = Counter(state for state, _ in await states(store))
    assert counts == {"sent": in_flight, "queued": in_flight + 1}
    assert len(relay.received) == in_flight
    # The next gateway takes them at once and sends each once.
    assert await worker(store, config, clock).run_once() == in_flight + 1
    assert len(relay.received) == in_flight * 2 + 1


@pytest.mark.pipeline_errors_expected  # the failed round and the parking are logged
async def test_a_crash_between_a_groups_sends_and_its_result_commit_leaves_it_uncertain(
        store, relay, clock, monkeypatch):
    """A group is handed over after the commit that marks it "sending"; its outcomes are
    recorded in the commit that marks the next group. A gateway that dies between the
    sends and that commit leaves exactly the group it handed over uncertain, none sent
    again; the rest of its round was never marked and goes out once."""
    config = Config(mail={"smtp": relay.smtp_config()}, notifications={"employees": "none"},
                    outbox={"in_flight": 3})
    pipeline = Pipeline(config, store, clock)
    for n in range(5):
        await pipeline.ingest_email(mail(sender=f"user{n}@romashka.ru"))
    killed = worker(store, config, clock)

    def dies(*args, **kwargs):
        raise RuntimeError("killed before the outcomes were committed")

    monkeypatch.setattr(outbox_rows, "record_many", dies)
    with pytest.raises(RuntimeError, match="killed"):
        await killed.run_once()
    monkeypatch.undo()
    assert len(relay.received) == 3   # the first group went out; the commit did not
    assert Counter(state for state, _ in await states(store)) == {"sending": 3, "claimed": 2}
    clock.advance(seconds=16)   # its heartbeat stale past dead_after
    survivor = worker(store, config, clock)
    assert await survivor.run_once() == 2
    rows = await store.run(outbox_list)
    assert [row["state"] for row in rows] == ["uncertain"] * 3 + ["sent"] * 2
    ids = Counter(r.message["Message-ID"] for r in relay.received)
    assert len(ids) == 5 and max(ids.values()) == 1


async def test_a_groups_outcomes_are_recorded_together_each_by_its_own_verdict(store,
                                                                                relay,
                                                                                clock):
    """record_many: one group, every verdict (sent, retried later, parked, uncertain),
    and a row another instance holds left as it is."""
    config = relay_config(relay)
    pipeline = Pipeline(config, store, clock)
    for n in range(5):
        await pipeline.ingest_email(mail(sender=f"user{n}@romashka.ru"))
    lease = timedelta(minutes=10)
    ours = [m.id for m in await store.run(outbox.claim, ["email"], clock(), lease, 4, "gw-1")]
    [theirs] = [m.id for m in await store.run(outbox.claim, ["email"], clock(), lease, 1,
                                              "gw-2")]
    assert await store.run(outbox_rows.mark_sending_many, ours, "gw-1") == ours
    assert await store.run(outbox_rows.mark_sending_many, [theirs], "gw-2") == [theirs]
    now = clock.advance(seconds=1)
    verdicts = await store.run(outbox_rows.record_many, [
        (ours[0], DeliveryResult.ok()), (ours[1], DeliveryResult.retry("451 busy")),
        (theirs, DeliveryResult.ok()), (ours[2], DeliveryResult.failed("550 no such user")),
        (ours[3], DeliveryResult.unknown("no answer"))], now, config.outbox, "gw-1")
    assert verdicts == ["sent", "queued", "sending", "parked", "uncertain"]

    def read(session):
        return {row.id: row for row in session.execute(select(
            OutboxMessage.id, OutboxMessage.state, OutboxMessage.sent_at,
            OutboxMessage.next_attempt_at, OutboxMessage.last_error))}
    rows = await store.run(read)
    assert rows[ours[0]].sent_at == now and rows[ours[0]].last_error is None
    assert rows[ours[1]].next_attempt_at == now + timedelta(minutes=1)
    assert rows[ours[1]].last_error == "451 busy" and rows[ours[1]].sent_at is None
    assert rows[ours[2]].last_error == "550 no such user"
    assert rows[ours[3]].last_error == "no answer" and rows[ours[3]].sent_at is None
    assert rows[theirs].state == "sending" and rows[theirs].sent_at is None
