"""The IMAP adapter against a real Dovecot (R-CH-1): IDLE and polling, TLS and STARTTLS,
the cursor across restarts, a UIDVALIDITY change, a server restarted under a running
gateway, move-after-store, and poisoned or half-processed messages that must neither
block the mailbox nor be stored twice."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from helpgate.channels.mail import imap as imap_module
from helpgate.channels.mail.imap import ImapMailbox
from helpgate.channels.mail.imap_client import Protocol
from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore.models import InboundMessage, Ticket
from helpgate.ticketstore.repository import get_cursor
from tests.dovecot import Dovecot
from tests.mailfactory import mail
from tests.services import services_for
from tests.waiting import eventually


@pytest.fixture
async def mailboxes(store, clock):
    """Start ImapMailbox readers for configs; all are stopped after the test."""
    running: list[ImapMailbox] = []

    async def start(imap: dict) -> ImapMailbox:
        config = Config(mail={"imap": [imap]}, notifications={"employees": "none"})
        pipeline = Pipeline(config, store, clock)
        # Through the pipeline's attribute, so a test may wrap ingest_many meanwhile.
        mailbox = ImapMailbox(config.mail.imap[0], services_for(
            pipeline, ingest=lambda messages, kind=None: pipeline.ingest_many(messages, kind)),
            config.mail.max_message_size)
        mailbox.pipeline = pipeline
        await mailbox.start()
        running.append(mailbox)
        await asyncio.wait_for(mailbox.connected.wait(), 10)
        return mailbox
    yield start
    for mailbox in running:
        await mailbox.stop()


async def count(store, model, *where) -> int:
    return await store.run(lambda s: s.scalar(
        select(func.count()).select_from(model).where(*where)))


async def stored(store, n: int):
    return await eventually(lambda: _at_least(store, n))


async def _at_least(store, n: int) -> bool:
    return await count(store, InboundMessage) >= n


async def deliver(dovecot: Dovecot, *raws: bytes) -> None:
    await asyncio.to_thread(dovecot.deliver, *raws)


async def test_idle_picks_up_a_new_mail_without_polling(store, dovecot, mailboxes):
    await mailboxes(dovecot.imap_config(idle=True, poll_interval=3600))
    await deliver(dovecot, mail(subject="Через IDLE"))
    await stored(store, 1)
    assert await count(store, Ticket) == 1
    assert await eventually(lambda: _flags(dovecot)) == {1: "\\Seen"}


async def _flags(dovecot):
    flags = await asyncio.to_thread(dovecot.flags)
    return flags if flags and all(flags.values()) else None


async def test_a_mail_reported_while_another_is_read_is_read_without_another_push(
        store, certificate, mailboxes):
    """A server reports a mail that lands during our FETCH or STORE in that command's
    answer, once: it must be read then, not after the next push (here 10 minutes away)."""
    server = Dovecot(certificate, idle_notify_interval=600).start()
    try:
        mailbox = await mailboxes(server.imap_config(idle=True, poll_interval=3600))
        ingest = mailbox.pipeline.ingest_many

        async def second_mail_lands_meanwhile(messages, ticket_type=None):
            if any(message.subject == "Первое" for message in messages):
                await deliver(server, mail(subject="Второе"))
            return await ingest(messages, ticket_type)

        mailbox.pipeline.ingest_many = second_mail_lands_meanwhile
        await deliver(server, mail(subject="Первое"))
        await stored(store, 2)
    finally:
        server.cleanup()


async def test_polling_where_idle_is_off(store, dovecot, mailboxes):
    await deliver(dovecot, mail(subject="Первое"))
    await mailboxes(dovecot.imap_config(idle=False, poll_interval=0.2))
    await stored(store, 1)
    await deliver(dovecot, mail(subject="Второе"))
    await stored(store, 2)
    assert await count(store, Ticket) == 2


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_tls_and_starttls(store, dovecot, mailboxes, security):
    await deliver(dovecot, mail())
    await mailboxes(dovecot.imap_config(security))
    await stored(store, 1)


async def test_a_restart_resumes_from_the_cursor(store, dovecot, mailboxes, clock):
    await deliver(dovecot, *(mail(subject=f"Письмо {i}") for i in range(3)))
    first = await mailboxes(dovecot.imap_config())
    await stored(store, 3)
    await first.stop()
    await deliver(dovecot, *(mail(subject=f"Позже {i}") for i in range(2)))
    await mailboxes(dovecot.imap_config())
    await stored(store, 5)
    await asyncio.sleep(0.3)
    assert await count(store, InboundMessage) == 5
    assert await count(store, Ticket) == 5
    assert (await store.run(get_cursor, first.key))[1] == 5


async def test_a_uidvalidity_change_reads_again_without_duplicates(store, dovecot,
                                                                   mailboxes):
    await deliver(dovecot, mail(subject="A"), mail(subject="B"))
    first = await mailboxes(dovecot.imap_config())
    await stored(store, 2)
    validity = (await store.run(get_cursor, first.key))[0]
    await first.stop()
    await asyncio.to_thread(dovecot.recreate_inbox_with_new_uidvalidity)
    await deliver(dovecot, mail(subject="C"))
    second = await mailboxes(dovecot.imap_config())
    await stored(store, 3)
    await eventually(lambda: _cursor_at(store, second.key, 3))
    assert (await store.run(get_cursor, second.key))[0] != validity
    assert await count(store, Ticket) == 3
    assert await count(store, InboundMessage) == 3


async def _cursor_at(store, key, position) -> bool:
    cursor = await store.run(get_cursor, key)
    return cursor is not None and cursor[1] == position


@pytest.mark.pipeline_errors_expected
async def test_a_server_restart_under_a_running_gateway_loses_nothing(store, dovecot,
                                                                      mailboxes):
    mailbox = await mailboxes(dovecot.imap_config(idle=True))
    await deliver(dovecot, mail(subject="До перезапуска"))
    await stored(store, 1)
    await asyncio.to_thread(dovecot.stop)
    await eventually(lambda: _disconnected(mailbox), 30, "the lost connection noticed")
    await asyncio.to_thread(dovecot.start)
    await deliver(dovecot, mail(subject="После перезапуска"))
    await stored(store, 2)
    assert await count(store, Ticket) == 2


async def _disconnected(mailbox) -> bool:
    return not mailbox.connected.is_set()


async def test_move_after_store(store, dovecot, mailboxes):
    await asyncio.to_thread(dovecot.create, "Processed")
    await deliver(dovecot, mail(subject="Переложить"))
    await mailboxes(dovecot.imap_config(after="move", move_to="Processed"))
    await stored(store, 1)
    await eventually(lambda: _moved(dovecot))


async def _moved(dovecot) -> bool:
    return await asyncio.to_thread(dovecot.count) == 0 and \
        await asyncio.to_thread(dovecot.count, "Processed") == 1


async def test_a_poisoned_message_is_quarantined_and_does_not_block(store, dovecot,
                                                                    mailboxes):
    await deliver(dovecot, b"X-Garbage: yes\n\n", mail(subject="После мусора"))
    await mailboxes(dovecot.imap_config())
    await stored(store, 2)
    await eventually(lambda: _flags(dovecot))
    assert await count(store, InboundMessage, InboundMessage.state == "quarantined") == 1
    assert await count(store, Ticket) == 1


async def test_mail_once_stuck_in_front_of_a_mailbox_is_read_and_so_is_the_rest(
        store, dovecot, mailboxes):
    """Issue #14: an internationalised sender (raw UTF-8), an mbox envelope line, NUL
    bytes and a reused Message-ID once failed to store and the reader reconnected forever,
    so nothing after them was read. Each is now decided, every mail after them too, all
    flagged, and the cursor stands after the last."""
    hostile = ["From: Иван <иван@пример.рф>\r\nSubject: IDN\r\n\r\nтекст\r\n".encode(),
               b"From ivan@romashka.ru  Tue Oct 29 03:52:03 2013\r\nFrom: ivan@romashka.ru\r\n"
               b"Subject: mbox\r\n\r\nbody\r\n",
               b"From: \"N\x00\" <nul@romashka.ru>\r\nSubject: a\x00b\r\n\r\nx\x00y\r\n",
               mail(message_id="<reused@x>", body="один"),
               mail(message_id="<reused@x>", body="другой")]
    await deliver(dovecot, *hostile, mail(subject="После них"))
    mailbox = await mailboxes(dovecot.imap_config())
    await stored(store, 6)
    flags = await eventually(lambda: _flags(dovecot))
    assert len(flags) == 6
    assert await count(store, Ticket) == 6
    cursor = await store.run(get_cursor, mailbox.key)
    assert cursor is not None and cursor[1] == 6


@pytest.mark.pipeline_errors_expected
async def test_stored_but_not_flagged_is_not_stored_twice(store, dovecot, mailboxes,
                                                          monkeypatch):
    original = imap_module.ImapMailbox._after_stored
    calls = []

    async def crash_once(self, client, uids):
        calls.append(uids)
        if len(calls) == 1:
            raise ConnectionResetError("connection dropped before the flag")
        return await original(self, client, uids)
    monkeypatch.setattr(imap_module.ImapMailbox, "_after_stored", crash_once)
    monkeypatch.setattr(imap_module, "MAX_BACKOFF", 0.1)
    await deliver(dovecot, mail(subject="Один раз"))
    await mailboxes(dovecot.imap_config())
    await eventually(lambda: _flags(dovecot))
    assert len(calls) == 2
    assert await count(store, InboundMessage) == 1
    assert await count(store, Ticket) == 1


async def test_an_oversized_message_keeps_its_header_in_quarantine(store, dovecot, clock):
    config = Config(mail={"imap": [dovecot.imap_config()], "max_message_size": "4KB"})
    mailbox = ImapMailbox(config.mail.imap[0], services_for(Pipeline(config, store, clock)),
                          config.mail.max_message_size)
    await deliver(dovecot, mail(subject="Огромное", body="строка\n" * 2000),
                  mail(subject="Обычное"))
    await mailbox.start()
    try:
        await stored(store, 2)
        await eventually(lambda: _flags(dovecot))
    finally:
        await mailbox.stop()
    reasons = await store.run(lambda s: s.scalars(select(InboundMessage.reason).where(
        InboundMessage.state == "quarantined")).all())
    assert len(reasons) == 1 and "is over mail.max_message_size (4096)" in reasons[0]
    assert await count(store, Ticket) == 1


async def test_a_mailbox_opens_tickets_of_its_own_type(store, dovecot, mailboxes):
    from helpgate.ticketstore.queries import ticket_list
    await deliver(dovecot, mail(subject="Авария"))
    await mailboxes(dovecot.imap_config(ticket_type="incident"))
    await stored(store, 1)
    [ticket] = await store.run(ticket_list, Config())
    assert ticket["type"] == "incident"


async def test_a_backlog_is_stored_batch_by_batch_while_the_next_is_fetched(
        store, dovecot, clock, monkeypatch):
    """Batch n+1 is fetched and parsed while batch n is stored; each batch is flagged and
    the cursor moved only after it is stored, and every mail is stored once."""
    monkeypatch.setattr(imap_module, "FETCH_BATCH", 4)
    events: list[str] = []
    config = Config(mail={"imap": [dovecot.imap_config()]},
                    notifications={"employees": "none"})
    pipeline = Pipeline(config, store, clock)

    async def parse_many(channel, raws):
        events.append(f"parse {len(raws)}")
        return [pipeline.parse(raw) for raw in raws]
    original_ingest, original_after = pipeline.ingest_many, ImapMailbox._after_stored

    async def ingest_many(messages, ticket_type=None):
        events.append(f"store {len(messages)}")
        await asyncio.sleep(0.05)  # the store's work, long enough for the fetch to overlap
        return await original_ingest(messages, ticket_type)

    async def after_stored(self, client, uids):
        events.append(f"flag {len(uids)}")
        return await original_after(self, client, uids)
    monkeypatch.setattr(ImapMailbox, "_after_stored", after_stored)
    await deliver(dovecot, *(mail(subject=f"Заявка {n}") for n in range(10)))
    mailbox = ImapMailbox(config.mail.imap[0], services_for(pipeline, ingest_many, parse_many),
                          config.mail.max_message_size)
    await mailbox.start()
    try:
        await stored(store, 10)
        flags = await eventually(lambda: _flags(dovecot))
        await eventually(lambda: _cursor_at(store, mailbox.key, 10))
    finally:
        await mailbox.stop()
    assert len(flags) == 10
    assert await count(store, Ticket) == 10
    assert events == ["parse 4", "store 4", "parse 4", "flag 4", "store 4", "parse 2",
                      "flag 4", "store 2", "flag 2"]


def test_a_backlogs_batches_hold_at_most_fetch_batch_mails_and_fetch_bytes_bytes(
        monkeypatch):
    """One commit per batch, so batches are large; but a run of scans must not be held
    in memory at once: bytes bound a batch too. A mail over the budget goes alone, and
    one over max_message_size (fetched as its header only) costs nothing."""
    monkeypatch.setattr(imap_module, "FETCH_BATCH", 3)
    monkeypatch.setattr(imap_module, "FETCH_BYTES", 100)
    sizes = {1: 10, 2: 10, 3: 10, 4: 10, 5: 60, 6: 60, 7: 500, 8: 10, 9: 5000, 10: 10}
    assert imap_module._batches(list(sizes), sizes, max_size=1000) == [
        [1, 2, 3], [4, 5], [6], [7], [8, 9, 10]]
    assert imap_module._batches([], {}, max_size=1000) == []
    assert imap_module._batches([11, 12], {}, max_size=1000) == [[11, 12]]  # sizes unknown


@pytest.mark.pipeline_errors_expected
@pytest.mark.parametrize("failing_on", [b"RFC822.SIZE", b"BODY[]", b"SEARCH"])
async def test_a_response_the_imap_library_fails_on_does_not_block_the_mailbox(
        store, dovecot, mailboxes, monkeypatch, failing_on):
    """A server's answer the response reader fails on (aioimaplib's own reader once
    overflowed the recursion limit on a size fetch of 1,000 UIDs) closes the connection
    without ever answering the command. The reader must not wait for that answer
    forever: it reconnects and reads on, every mail stored once."""
    monkeypatch.setattr(imap_module, "MAX_BACKOFF", 0.1)
    original = Protocol.data_received
    failed = []

    def data_received(self, data):
        if failing_on in data and not failed:
            failed.append(data)
            # As the overflow did: in the middle of re-arming the command's timer, the
            # old one cancelled and no new one set.
            for command in [self.pending_sync_command, *self.pending_async_commands.values()]:
                if command is not None:
                    command._timer.cancel()
            raise RecursionError("maximum recursion depth exceeded")
        return original(self, data)
    monkeypatch.setattr(Protocol, "data_received", data_received)
    await deliver(dovecot, *(mail(subject=f"Заявка {n}") for n in range(3)))
    await mailboxes(dovecot.imap_config())
    await stored(store, 3)
    assert failed
    assert await count(store, InboundMessage) == 3


@pytest.mark.pipeline_errors_expected
async def test_a_failure_while_the_next_batch_is_fetched_loses_and_doubles_nothing(
        store, dovecot, mailboxes, monkeypatch):
    monkeypatch.setattr(imap_module, "FETCH_BATCH", 3)
    monkeypatch.setattr(imap_module, "MAX_BACKOFF", 0.1)
    original = imap_module.ImapMailbox._after_stored
    calls = []

    async def crash_on_the_second(self, client, uids):
        calls.append(uids)
        if len(calls) == 2:
            raise ConnectionResetError("connection dropped with a fetch in flight")
        return await original(self, client, uids)
    monkeypatch.setattr(imap_module.ImapMailbox, "_after_stored", crash_on_the_second)
    await deliver(dovecot, *(mail(subject=f"Заявка {n}") for n in range(8)))
    await mailboxes(dovecot.imap_config())
    flags = await eventually(lambda: _all_flagged(dovecot, 8))
    assert len(flags) == 8
    assert await count(store, InboundMessage) == 8
    assert await count(store, Ticket) == 8


async def _all_flagged(dovecot, n: int):
    flags = await _flags(dovecot)
    return flags if flags and len(flags) == n else None


async def test_the_gateway_parses_a_large_fetch_in_worker_processes(store, dovecot, clock,
                                                                     monkeypatch):
    from helpgate.gateway import run as run_module
    from helpgate.gateway.bulk import ParserPool
    from helpgate.gateway.run import Gateway
    monkeypatch.setattr(run_module, "POOL_FROM", 3)
    pooled = []
    original = ParserPool.parse

    async def parse(self, raws, now, parse):
        pooled.append(len(raws))
        return await original(self, raws, now, parse)
    monkeypatch.setattr(ParserPool, "parse", parse)
    config = Config(mail={"imap": [dovecot.imap_config()], "parser_workers": 1,
                          "endpoint": {"enabled": False}},
                    notifications={"employees": "none"})
    gateway = Gateway(config, store, clock=clock)
    serving = asyncio.create_task(gateway.serve())
    try:
        raws = [mail(subject=f"Заявка {n}") for n in range(5)]
        # The first large batch starts the workers and, meanwhile, parses here.
        assert len(await gateway.parse_many("email", raws)) == 5
        assert pooled == []
        await eventually(lambda: _ready(gateway), 30, "the parser workers started")
        messages = await gateway.parse_many("email", raws)
        assert pooled == [5]
        assert [m.subject for m in messages] == [f"Заявка {n}" for n in range(5)]
        await deliver(dovecot, *raws)
        await stored(store, 5)
        assert await count(store, Ticket) == 5
    finally:
        gateway.stop.set()
        await serving
    assert gateway._parsers is None  # the worker processes are shut down with the gateway


async def _ready(gateway) -> bool:
    return gateway._parsers is not None


async def test_no_parser_workers_when_set_to_none(store, dovecot, clock):
    from helpgate.gateway.run import Gateway
    config = Config(mail={"imap": [dovecot.imap_config()], "parser_workers": 0,
                          "endpoint": {"enabled": False}},
                    notifications={"employees": "none"})
    gateway = Gateway(config, store, clock=clock)
    serving = asyncio.create_task(gateway.serve())
    try:
        await deliver(dovecot, *(mail(subject=f"Заявка {n}") for n in range(10)))
        await stored(store, 10)
        assert gateway._parsers is None
    finally:
        gateway.stop.set()
        await serving
