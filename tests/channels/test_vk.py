"""VK as a channel (R-CH-4), against the local VK fake with the real vk-api library and
the pipeline on SQLite and PostgreSQL: long poll (its cursor, its failures, VK going away
and a restart lose and double nothing), the Callback API (confirmation, secret, repeats),
files, and a kept record read again the same."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import select

from helpgate.channels.base import ChannelStartError
from helpgate.channels.vk.adapter import VkAdapter
from helpgate.channels.vk.parse import envelope, parse
from helpgate.config.schema import Config, VkConfig
from helpgate.gateway.channels import CHANNELS
from helpgate.threading.context import Action
from helpgate.ticketstore.models import Attachment, Contact, Identity, Ticket
from helpgate.ticketstore.models import InboundMessage as InboundRow
from tests.fakes.vk import FakeVK
from tests.mailservers import free_port
from tests.services import services_for
from tests.waiting import eventually

GROUP = 4242
TOKEN = "vk-group-token"
SECRET = "s3cret"
CODE = "c0nf1rm"
KEY = f"vk:{GROUP}"


# vk-api waits 1/20 s before each call of a community token; the fake needs none.
pytestmark = pytest.mark.usefixtures("no_vk_rate_sleep")


@pytest.fixture
async def vk():
    async with FakeVK(group_id=GROUP, token=TOKEN, confirmation_code=CODE,
                      secret=SECRET) as fake:
        yield fake


def vk_config(vk: FakeVK, **values) -> VkConfig:
    return VkConfig(**{"token": TOKEN, "group_id": GROUP, "api_base_url": vk.base_url,
                       "confirmation_code": CODE, "secret": SECRET, **values})


class Recorder:
    """The pipeline's ingest, remembering what each call was handed."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.messages: list = []

    async def __call__(self, messages, ticket_type):
        self.messages += messages
        return await self.pipeline.ingest_many(messages, ticket_type)


def adapter_for(vk, pipeline, ingest=None, max_size=10 * 1024 * 1024, **values):
    adapter = VkAdapter(vk_config(vk, **values), services_for(pipeline, ingest=ingest),
                        max_size)
    adapter.wait = 1          # a parked poll ends soon; stop cancels it anyway
    adapter.backoff_start = 0.05
    return adapter


@pytest.fixture
async def running(vk, pipeline):
    """A long poll adapter started against the fake (its first ts is VK's current one)."""
    recorder = Recorder(pipeline)
    adapter = adapter_for(vk, pipeline, ingest=recorder)
    adapter.recorder = recorder
    await adapter.start()
    yield adapter
    await adapter.stop()


async def inbound(store) -> list[tuple]:
    return await store.run(lambda s: [tuple(r) for r in s.execute(
        select(InboundRow.dedupe_key, InboundRow.state).order_by(InboundRow.id))])


async def stored_count(store, n: int, what: str = "the messages to be stored"):
    async def enough():
        return len(await inbound(store)) >= n
    await eventually(enough, what=what)
    return await inbound(store)


async def cursor(pipeline):
    return await services_for(pipeline).cursors.get(KEY)


def keys(events) -> list[str]:
    return [f"event:{e['event_id']}" for e in events]


# ---------------------------------------------------------------------- long poll

async def test_a_users_messages_open_a_ticket_and_continue_it_with_files(
        vk, running, store, pipeline):
    vk.user(42, "Иван", "Петров")
    first = vk.send_text(42, "Не печатает принтер\nМодель HP 1020")
    second = vk.send_doc(42, b"%PDF-1.4 scan", "scan.pdf", text="Вот скан")
    third = vk.send_photo(42, b"\xff\xd8photo")
    rows = await stored_count(store, 3)
    assert rows == [(key, "processed") for key in keys([first, second, third])]
    results = await store.run(lambda s: s.execute(select(InboundRow.result)
                                                  .order_by(InboundRow.id)).scalars().all())
    assert [r["action"] for r in results] == [Action.NEW_TICKET, Action.COMMENT,
                                              Action.COMMENT]
    ticket = await store.run(lambda s: s.execute(
        select(Ticket.subject, Ticket.channel, Ticket.contact_id)).one())
    assert (ticket.subject, ticket.channel) == ("Не печатает принтер", "vk")
    contact = await store.run(lambda s: s.execute(select(Contact.id, Contact.name)).one())
    identity = await store.run(lambda s: s.execute(
        select(Identity.kind, Identity.channel, Identity.external_id, Identity.contact_id)
    ).one())
    assert (contact.name, ticket.contact_id) == ("Иван Петров", contact.id)
    assert tuple(identity) == ("contact", "vk", "42", contact.id)
    files = await store.run(lambda s: s.execute(
        select(Attachment.filename, Attachment.content_type, Attachment.data)
        .order_by(Attachment.id)).all())
    photo_name = f"photo42_{third['object']['message']['attachments'][0]['photo']['id']}.jpg"
    assert [tuple(f) for f in files] == [("scan.pdf", "application/pdf", b"%PDF-1.4 scan"),
                                         (photo_name, "image/jpeg", b"\xff\xd8photo")]
    assert await cursor(pipeline) == (None, len(vk.events))


async def test_edits_are_kept_and_other_events_and_chats_are_skipped(vk, running, store):
    original = vk.send_text(42, "Не печатет")
    edit = vk.edit_text(original, "Не печатает")
    vk.press_button(42, 42, {"action": "close"}, conversation_message_id=1)
    vk.send_text(43, "всем привет", peer_id=2_000_000_001)
    last = vk.send_text(42, "Последнее")
    rows = await stored_count(store, 3)
    await eventually(lambda: running.ts == len(vk.events), what="the cursor to move")
    assert [key for key, _ in await inbound(store)] == keys([original, edit, last])
    edited = running.recorder.messages[1]
    assert (edited.text, edited.headers.get("x-vk-edited")) == ("Не печатает", "1")
    assert len(rows) == 3


@pytest.mark.parametrize("failed", [1, 2])
async def test_long_poll_failures_lose_nothing(vk, running, store, pipeline, failed):
    before = vk.send_text(42, "до")
    await stored_count(store, 1)
    vk.lp_fail(failed)
    during = vk.send_text(42, "во время")
    after = vk.send_text(42, "после")
    await stored_count(store, 3)
    await eventually(lambda: running.ts == len(vk.events), what="the cursor to move")
    assert [key for key, _ in await inbound(store)] == keys([before, during, after])
    assert await cursor(pipeline) == (None, 3)


async def test_failed_3_takes_a_new_key_and_ts_and_goes_on(vk, running, store, caplog):
    vk.lp_fail(3)
    await eventually(lambda: "failed=3" in caplog.text, what="the warning")
    later = vk.send_text(42, "после сбоя")
    assert await stored_count(store, 1) == [(keys([later])[0], "processed")]


async def test_vk_down_and_up_loses_and_doubles_nothing(vk, running, store, pipeline):
    first = vk.send_text(42, "раз")
    await stored_count(store, 1)
    await eventually(lambda: vk.requests["a_check"] >= 2, what="the next poll to park")
    await vk.go_down()
    # VK queues what customers write meanwhile; the adapter retries with backoff.
    queued = [vk.send_text(42, "два"), vk.send_text(77, "три")]
    polls = vk.requests["a_check"]
    await vk.come_up()
    rows = await stored_count(store, 3)
    assert [key for key, _ in rows] == keys([first, *queued])
    assert vk.requests["a_check"] > polls
    await eventually(lambda: running.ts == len(vk.events), what="the cursor to move")
    assert await cursor(pipeline) == (None, len(vk.events))
    # Each event was handed to the pipeline once.
    handed = [m.dedupe_key for m in running.recorder.messages]
    assert sorted(handed) == sorted(keys([first, *queued]))


async def test_a_restart_resumes_from_the_stored_cursor(vk, pipeline, store):
    recorder = Recorder(pipeline)
    adapter = adapter_for(vk, pipeline, ingest=recorder)
    await adapter.start()
    first = vk.send_text(42, "до перезапуска")
    await stored_count(store, 1)
    await eventually(lambda: adapter.ts == 1, what="the cursor to move")
    await adapter.stop()
    # Written while helpgate is down: VK keeps it, the stored ts finds it.
    missed = vk.send_text(42, "пока helpgate стоял")
    again = adapter_for(vk, pipeline, ingest=recorder)
    await again.start()
    try:
        rows = await stored_count(store, 2)
        await eventually(lambda: again.ts == 2, what="the cursor to move")
    finally:
        await again.stop()
    assert [key for key, _ in rows] == keys([first, missed])
    assert [m.dedupe_key for m in recorder.messages] == keys([first, missed])
    assert await cursor(pipeline) == (None, 2)


async def test_a_store_that_fails_moves_no_cursor_and_the_events_come_again(
        vk, pipeline, store):
    calls = []

    async def failing_once(messages, ticket_type):
        calls.append([m.dedupe_key for m in messages])
        if len(calls) == 1:
            raise OSError("database away")
        return await pipeline.ingest_many(messages, ticket_type)
    adapter = adapter_for(vk, pipeline, ingest=failing_once)
    await adapter.start()
    try:
        event = vk.send_text(42, "сохрани меня")
        await stored_count(store, 1)
    finally:
        await adapter.stop()
    assert calls == [keys([event])] * 2
    assert await cursor(pipeline) == (None, 1)


async def test_a_file_that_cannot_be_fetched_is_named_in_the_text(vk, pipeline, store):
    recorder = Recorder(pipeline)
    adapter = adapter_for(vk, pipeline, ingest=recorder, max_size=10)
    await adapter.start()
    try:
        vk.send_doc(42, b"x" * 100, "big.pdf", text="Большой файл")
        vk.send_photo(42, b"y" * 100)
        await stored_count(store, 2)
    finally:
        await adapter.stop()
    doc, photo = recorder.messages
    assert doc.attachments == () and photo.attachments == ()
    assert doc.text.startswith("Большой файл\n\n[Attachment \"big.pdf\" could not be fetched")
    assert "over the limit of 10 B" in doc.text and "over the limit" in photo.text
    assert [state for _, state in await inbound(store)] == ["processed", "processed"]


async def test_a_bad_token_stops_the_start_with_the_fix(vk, pipeline):
    adapter = adapter_for(vk, pipeline, token="wrong")
    with pytest.raises(ChannelStartError, match=r"error 5\): set \[vk\] token"):
        await adapter.start()
    callback = adapter_for(vk, pipeline, token="wrong", mode="callback", callback_port=0)
    with pytest.raises(ChannelStartError, match=r"set \[vk\] token"):
        await callback.start()


# ---------------------------------------------------------------------- callback API

@pytest.fixture
async def callback(vk, pipeline):
    recorder = Recorder(pipeline)
    adapter = adapter_for(vk, pipeline, ingest=recorder, mode="callback", callback_port=0)
    adapter.recorder = recorder
    await adapter.start()
    adapter.url = f"http://127.0.0.1:{adapter.port}/vk"
    yield adapter
    await adapter.stop()


async def test_callback_confirms_checks_the_secret_and_stores_once(vk, callback, store):
    assert await vk.confirm(callback.url) == CODE
    event = vk.send_text(42, "через Callback API")
    assert await vk.deliver_callback(event, callback.url, secret="wrong") == \
        (403, "bad secret")
    assert await inbound(store) == []
    assert await vk.deliver_callback(event, callback.url) == (200, "ok")
    assert await vk.deliver_callback(event, callback.url) == (200, "ok")
    assert await inbound(store) == [(keys([event])[0], "processed")]
    # The secret is not kept in the record.
    assert SECRET not in callback.recorder.messages[0].raw.decode()
    # A button press is answered and not stored.
    button = vk.press_button(42, 42, {"a": 1}, conversation_message_id=1)
    assert await vk.deliver_callback(button, callback.url) == (200, "ok")
    assert len(await inbound(store)) == 1


async def test_callback_answers_500_when_the_store_fails(vk, pipeline, store, caplog):
    async def broken(messages, ticket_type):
        raise OSError("database away")
    adapter = adapter_for(vk, pipeline, ingest=broken, mode="callback", callback_port=0)
    await adapter.start()
    try:
        event = vk.send_text(42, "не сохранится")
        status = await vk.deliver_callback(event, f"http://127.0.0.1:{adapter.port}/vk")
    finally:
        await adapter.stop()
    caplog.clear()  # the logged error is this test's point
    assert status == (500, "not stored")


async def test_callback_port_in_use_stops_the_start_with_the_fix(vk, pipeline):
    port = free_port()
    first = adapter_for(vk, pipeline, mode="callback", callback_port=port)
    await first.start()
    try:
        second = adapter_for(vk, pipeline, mode="callback", callback_port=port)
        with pytest.raises(ChannelStartError, match=rf"cannot listen on 127.0.0.1:{port} "
                           r"\(vk callback\).*set another \[vk\] callback_port"):
            await second.start()
    finally:
        await first.stop()


# ---------------------------------------------------------------------- the record

async def test_a_kept_record_reads_again_as_the_same_message(vk, running, store):
    vk.send_doc(42, b"data", "act.pdf", text="Акт")
    await stored_count(store, 1)
    [message] = running.recorder.messages
    raw = await store.run(lambda s: s.scalar(select(InboundRow.raw)))
    assert raw == message.raw
    assert parse(raw, message.received_at) == message
    assert CHANNELS["vk"].kind.parse(raw, message.received_at) == message


def test_parse_never_raises(clock):
    for raw in (b"\xff\xfe", b"[]", b'{"event": 1}', b'{"event": {"type": "message_new"}}',
                envelope({"type": "message_new", "event_id": "e1",
                          "object": {"message": {"from_id": "x"}}}),
                envelope({"type": "group_join", "event_id": "e2", "object": {}}),
                envelope({"type": "message_new", "event_id": "e3",
                          "object": {"message": {"from_id": -5, "text": "наше"}}})):
        message = parse(raw, clock.now)
        assert message.problem and message.channel == "vk" and message.dedupe_key, raw


def test_parse_keys_without_event_id_and_damaged_files(clock):
    message = {"from_id": 42, "peer_id": 42, "conversation_message_id": 7, "text": "т",
               "date": 1_700_000_000, "attachments": [{"type": "doc", "doc": {}},
                                                      {"type": "sticker", "sticker": {}}]}
    new = parse(envelope({"type": "message_new", "object": {"message": message}},
                         {"0": {"name": "a.txt", "mime": "text/plain", "data_b64": "%%"}}),
                clock.now)
    edit = parse(envelope({"type": "message_edit", "object": replace_dict(
        message, update_time=1_700_000_100)}), clock.now)
    assert (new.dedupe_key, edit.dedupe_key) == ("msg:42:7", "edit:42:7:1700000100")
    assert new.text == "т\n\n[Attachment \"a.txt\" is damaged in the kept record]\n" \
                       "[VK attachment: sticker]"
    assert (new.sender_id, new.chat, new.problem) == ("42", True, None)
    good = base64.b64encode(b"hi").decode()
    with_file = parse(envelope({"type": "message_new", "object": {"message": message}},
                               {"0": {"name": "a.txt", "mime": "text/plain",
                                      "data_b64": good}}), clock.now)
    assert [(a.filename, a.data) for a in with_file.attachments] == [("a.txt", b"hi")]


def replace_dict(d: dict, **values) -> dict:
    return {**d, **values}


def test_the_channel_is_off_without_a_token():
    config = Config()
    assert CHANNELS["vk"].kind.adapters(config, None) == []
    assert CHANNELS["vk"].transport(config) is None


def test_callback_mode_needs_the_secret():
    with pytest.raises(ValueError, match="vk.secret is required"):
        VkConfig(token="t", group_id=1, mode="callback", confirmation_code="c")
    with pytest.raises(ValueError, match="vk.group_id is required"):
        VkConfig(token="t")


async def test_json_of_a_record_is_what_vk_sent(vk, running, store):
    event = vk.send_text(42, "как есть")
    await stored_count(store, 1)
    kept = json.loads(running.recorder.messages[0].raw)
    assert kept["event"] == event and kept["files"] == {}
    assert kept["names"] == {"42": "Test User"}
