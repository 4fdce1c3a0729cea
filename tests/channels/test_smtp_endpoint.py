"""Our SMTP/LMTP endpoint (R-CH-2), spoken to with the standard library's clients: only
our recipients (never an open relay), the size limit, 250 only after the message is
stored, 451 when it cannot be, LMTP's one answer per recipient, a burst of connections
all greeted, a session time limit, and a clear error when the port cannot be opened."""

from __future__ import annotations

import asyncio
import smtplib

import pytest
from sqlalchemy import func, select

from helpgate.channels.base import ChannelStartError
from helpgate.channels.mail.smtp import MailEndpoint
from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore import repository
from helpgate.ticketstore.models import InboundMessage, Ticket
from tests.mailfactory import mail
from tests.services import services_for


def endpoint_config(**endpoint) -> Config:
    return Config(mail={"endpoint": {"port": 0, **endpoint}, "max_message_size": "64KB"})


@pytest.fixture
async def served(store, clock):
    """Start an endpoint for a config; stopped after the test."""
    started: list[MailEndpoint] = []

    async def start(config: Config) -> MailEndpoint:
        pipeline = Pipeline(config, store, clock)
        endpoint = MailEndpoint(config, services_for(pipeline))
        await endpoint.start()
        started.append(endpoint)
        return endpoint
    yield start
    for endpoint in started:
        await endpoint.stop()


async def count(store, model) -> int:
    return await store.run(lambda s: s.scalar(select(func.count()).select_from(model)))


def crlf(raw: bytes) -> bytes:
    # On the wire lines end in CRLF; smtplib sends bytes as they are.
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def talk(port: int, recipients: list[str], raw: bytes, lmtp: bool = False,
         sender: str = "ivan@romashka.ru"):
    """One SMTP (or LMTP) session; returns (refused recipients, DATA answer or error)."""
    client = smtplib.LMTP("127.0.0.1", port) if lmtp else smtplib.SMTP("127.0.0.1", port)
    try:
        client.ehlo_or_helo_if_needed()
        client.mail(sender)
        refused = {}
        for rcpt in recipients:
            code, text = client.rcpt(rcpt)
            if code != 250:
                refused[rcpt] = (code, text.decode())
        if len(refused) == len(recipients):
            return refused, None
        code, text = client.data(crlf(raw))
        return refused, (code, text.decode())
    finally:
        client.close()


async def in_thread(function, *args, **kwargs):
    return await asyncio.to_thread(function, *args, **kwargs)


async def test_mail_to_our_address_becomes_a_ticket_after_250(store, served):
    endpoint = await served(endpoint_config())
    refused, answer = await in_thread(talk, endpoint.port, ["support@helpgate.localhost"],
                                      mail(body="Принтер не печатает."))
    assert refused == {}
    assert answer[0] == 250 and "Stored as inbound message 1 (new_ticket)" in answer[1]
    assert await count(store, Ticket) == 1


async def test_other_recipients_are_refused_and_nothing_is_stored(store, served):
    endpoint = await served(endpoint_config())
    refused, answer = await in_thread(talk, endpoint.port,
                                      ["victim@gmail.com", "support@evil.example"], mail())
    assert answer is None
    assert {code for code, _ in refused.values()} == {550}
    assert "not a relay" in refused["victim@gmail.com"][1]
    assert await count(store, InboundMessage) == 0


async def test_configured_addresses_and_domains_are_accepted(store, served):
    endpoint = await served(endpoint_config(addresses=["Help@Firm.Example"],
                                            domains=["desk.example"]))
    refused, answer = await in_thread(
        talk, endpoint.port, ["help@firm.example", "any@desk.example",
                              "support@helpgate.localhost", "x@sub.desk.example"], mail())
    assert set(refused) == {"support@helpgate.localhost", "x@sub.desk.example"}
    assert answer[0] == 250


async def test_a_staff_reply_address_with_a_plus_tag_is_ours(store, served):
    """Staff notifications reply to support+<token>@… (issue #15): the endpoint takes it,
    and only as a tag of an address it accepts anyway."""
    endpoint = await served(endpoint_config())
    token = "support+abcdefghijklmnopqrstuvwxyz@helpgate.localhost"
    refused, answer = await in_thread(
        talk, endpoint.port, [token, "other+abc@helpgate.localhost",
                              "support+abc@evil.example"], mail())
    assert set(refused) == {"other+abc@helpgate.localhost", "support+abc@evil.example"}
    assert answer[0] == 250
    # The envelope recipient is kept with the message (the To header may lack the tag).
    raw = await store.run(lambda s: s.scalar(select(InboundMessage.raw)))
    assert f"\r\nDelivered-To: {token}\r\nFrom: ".encode() in raw


async def test_the_envelope_sender_is_kept_as_return_path(store, served):
    """RFC 5321 §4.4: final delivery writes the envelope sender on top; a null sender
    (a bounce or auto-reply, R-TH-8) is then visible to the rules and to a replay."""
    endpoint = await served(endpoint_config())
    await in_thread(talk, endpoint.port, ["support@helpgate.localhost"], mail(), False, "")
    raw = await store.run(lambda s: s.scalar(select(InboundMessage.raw)))
    assert raw.startswith(b"Return-Path: <>\r\nDelivered-To: support@helpgate.localhost\r\n")


async def test_a_message_over_the_size_limit_gets_552(store, served):
    endpoint = await served(endpoint_config())
    _, answer = await in_thread(talk, endpoint.port, ["support@helpgate.localhost"],
                                mail(body="строка текста\n" * 5_000))
    assert answer[0] == 552
    assert await count(store, InboundMessage) == 0


@pytest.mark.pipeline_errors_expected
async def test_a_message_that_cannot_be_stored_gets_451(store, served, monkeypatch):
    endpoint = await served(endpoint_config())

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(repository, "insert_ignoring_conflict", broken)
    _, answer = await in_thread(talk, endpoint.port, ["support@helpgate.localhost"], mail())
    assert answer[0] == 451 and "try again later" in answer[1]
    monkeypatch.undo()
    assert await count(store, InboundMessage) == 0
    # The sending server retries later and the message gets in.
    _, answer = await in_thread(talk, endpoint.port, ["support@helpgate.localhost"], mail())
    assert answer[0] == 250


async def test_lmtp_answers_once_per_recipient_and_stores_once(store, served):
    endpoint = await served(endpoint_config(protocol="lmtp", domains=["helpgate.localhost"]))

    def session():
        client = smtplib.LMTP("127.0.0.1", endpoint.port)
        try:
            client.ehlo_or_helo_if_needed()
            # smtplib.LMTP.sendmail reads one DATA reply per recipient (RFC 2033).
            return client.sendmail("ivan@romashka.ru", ["support@helpgate.localhost",
                                                        "sales@helpgate.localhost"],
                                   crlf(mail()))
        finally:
            client.close()
    assert await in_thread(session) == {}
    assert await count(store, InboundMessage) == 1


async def test_stopping_lets_a_message_in_flight_be_stored_and_answered(store, clock):
    config = endpoint_config()
    pipeline = Pipeline(config, store, clock)
    storing = asyncio.Event()

    async def slow_ingest(messages, ticket_type):
        storing.set()
        await asyncio.sleep(0.3)  # SIGTERM arrives while the message is being stored
        return await pipeline.ingest_many(messages, ticket_type)
    endpoint = MailEndpoint(config, services_for(pipeline, slow_ingest))
    await endpoint.start()
    sending = asyncio.create_task(in_thread(talk, endpoint.port,
                                            ["support@helpgate.localhost"], mail()))
    await asyncio.wait_for(storing.wait(), 5)
    await endpoint.stop()
    _, answer = await sending
    assert answer[0] == 250
    assert await count(store, Ticket) == 1


BURST = 1_000


async def test_a_burst_of_connections_is_greeted_every_one(store, served):
    """#14.13: 1,000 mail servers connecting at once all get their 220 (asyncio's default
    listen backlog of 100 lost about a third of such a burst)."""
    endpoint = await served(endpoint_config())

    async def greeted() -> bool:
        # A sending server's patience (Postfix waits 30 s to connect, 300 s for 220).
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", endpoint.port), 30)
        except (OSError, TimeoutError):
            return False
        try:
            return (await asyncio.wait_for(reader.readline(), 30)).startswith(b"220 ")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    answers = await asyncio.gather(*(greeted() for _ in range(BURST)))
    assert sum(answers) == BURST


async def test_a_session_over_the_time_limit_is_closed_with_421(store, served):
    endpoint = await served(endpoint_config(max_session_time="1s"))
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
    try:
        assert (await reader.readline()).startswith(b"220 ")
        writer.write(b"HELO client.example\r\n")
        assert (await reader.readline()).startswith(b"250 ")
        # The client then says nothing more (a stuck or slow-drip sender).
        closing = await asyncio.wait_for(reader.readline(), 10)
        assert closing.startswith(b"421 4.4.2") and b"time limit" in closing
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


async def test_a_port_in_use_is_one_clear_error(store, served, clock):
    first = await served(endpoint_config())
    second = MailEndpoint(endpoint_config(port=first.port), services_for(Pipeline(
        endpoint_config(), store, clock)))
    with pytest.raises(ChannelStartError, match=rf"cannot listen on 127.0.0.1:{first.port} "
                       r"\(smtp endpoint\): .*in use; .*set another \[mail.endpoint\] port"):
        await second.start()
