"""The Telegram channel (R-CH-3) against the fake Bot API with the real aiogram: a
customer's messages and files become tickets with a contact known by their Telegram id,
nothing is lost or stored twice when Telegram goes away or the adapter restarts, and a
webhook takes only posts that carry our secret. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from helpgate.channels.base import ChannelStartError
from helpgate.channels.telegram import parse as tgparse
from helpgate.channels.telegram.adapter import TelegramAdapter
from helpgate.channels.telegram.channel import TELEGRAM
from helpgate.config.schema import Config, TelegramConfig
from helpgate.gateway.channels import CHANNELS, parse_kept
from helpgate.gateway.pipeline import _inbound_raw
from helpgate.threading.context import Action
from helpgate.ticketstore.models import Attachment, Comment, Contact, Identity
from helpgate.ticketstore.models import InboundMessage as InboundRow
from tests.fakes.telegram import FakeTelegram
from tests.services import services_for
from tests.waiting import eventually

MB = 1024 * 1024
SECRET = "s3cret_Token-1"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)



def settings(tg: FakeTelegram, **changes) -> TelegramConfig:
    return TelegramConfig(token=tg.token, api_base_url=tg.base_url, polling_timeout=1,
                          **changes)


def adapter_for(tg, pipeline, **changes) -> TelegramAdapter:
    adapter = TelegramAdapter(settings(tg, **changes), services_for(pipeline))
    adapter.min_backoff = 0.05   # reconnect quickly after an outage
    return adapter


@asynccontextmanager
async def running(adapter: TelegramAdapter):
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


async def inbound(store) -> list[tuple]:
    return await store.run(lambda s: [tuple(r) for r in s.execute(
        select(InboundRow.dedupe_key, InboundRow.state).order_by(InboundRow.id))])


async def stored(store, count: int) -> list[tuple]:
    async def enough():
        rows = await inbound(store)
        return rows if len(rows) >= count else None
    return await eventually(enough, what=f"{count} stored updates")


async def cursor(store, tg) -> int | None:
    from helpgate.ticketstore.repository import get_cursor
    kept = await store.run(get_cursor, f"telegram:{tg.bot['id']}")
    return kept and kept[1]


async def comment_texts(store) -> list[str]:
    return await store.run(lambda s: s.execute(
        select(Comment.text).where(Comment.author_kind != "system").order_by(Comment.id))
        .scalars().all())


# ---- polling -------------------------------------------------------------------------


async def test_a_customers_message_opens_a_ticket_for_a_contact_known_by_telegram_id(
        tg, pipeline, store):
    ann = tg.user(1001, "Ann", last_name="Lee")
    tg.send_text(ann, "My printer is on fire")
    async with running(adapter_for(tg, pipeline)) as adapter:
        [(key, state)] = await stored(store, 1)
        assert adapter.username == "helpgate_bot"
    assert (key, state) == (f"update:{tg._update_id}", "processed")
    assert await comment_texts(store) == ["My printer is on fire"]
    identity = await store.run(lambda s: tuple(s.execute(
        select(Identity.kind, Identity.channel, Identity.external_id, Contact.name)
        .join(Contact, Contact.id == Identity.contact_id)).one()))
    assert identity == ("contact", "telegram", "1001", "Ann Lee")
    assert await cursor(store, tg) == tg._update_id


async def test_a_photo_and_a_document_become_attachments_with_their_bytes(
        tg, pipeline, store):
    ann = tg.user(1001, "Ann")
    photo, report = b"\xff\xd8JPEG" * 500, b"%PDF-1.7 report"
    tg.send_photo(ann, photo, caption="The error")
    tg.send_document(ann, report, "report.pdf", "application/pdf")
    async with running(adapter_for(tg, pipeline)):
        await stored(store, 2)
    files = await store.run(lambda s: [tuple(r) for r in s.execute(
        select(Attachment.filename, Attachment.content_type, Attachment.data)
        .order_by(Attachment.id))])
    # The photo's largest size, not the thumbnail Telegram lists first.
    assert [(name, kind) for name, kind, _ in files] == [
        (files[0][0], "image/jpeg"), ("report.pdf", "application/pdf")]
    assert [data for *_, data in files] == [photo, report]
    assert (await comment_texts(store))[0] == "The error"


async def test_a_file_over_the_download_limit_is_named_in_the_text_not_fetched(
        tg, pipeline, store):
    ann = tg.user(1001, "Ann")
    tg.send_document(ann, b"zip", "logs.zip", "application/zip", size=25 * MB,
                     caption="Вот логи сервера")
    async with running(adapter_for(tg, pipeline)):
        await stored(store, 1)
    [text] = await comment_texts(store)
    assert text.startswith("Вот логи сервера\n\n[Файл «logs.zip» (25.0 MB) слишком большой")
    assert "по электронной почте" in text
    assert tg.requests["getFile"] == 0
    assert await store.run(lambda s: s.scalar(select(Attachment.id))) is None


async def test_telegram_down_midstream_loses_and_doubles_nothing(tg, pipeline, store):
    ann, bob = tg.user(1001, "Ann"), tg.user(1002, "Bob")
    for n in range(3):
        tg.send_text(ann, f"first {n}")
    async with running(adapter_for(tg, pipeline)):
        await stored(store, 3)
        await eventually(lambda: tg.polling, what="the next long poll")
        await tg.go_down()                 # cuts the long poll in progress
        for n in range(3):
            tg.send_text(bob, f"while down {n}")
        tg.fail_next("getUpdates", 502)    # and Telegram answers badly once it is back
        await tg.come_up()
        tg.send_text(ann, "after")
        rows = await stored(store, 7)
    assert len(rows) == 7 and len({key for key, _ in rows}) == 7
    assert {state for _, state in rows} == {"processed"}
    assert sorted(await comment_texts(store)) == sorted(
        [f"first {n}" for n in range(3)] + [f"while down {n}" for n in range(3)] + ["after"])
    assert await cursor(store, tg) == tg._update_id


async def test_a_restarted_adapter_resumes_from_its_cursor(tg, pipeline, store):
    """Stopped while a batch is being stored: the batch is finished and the cursor moved,
    but Telegram still holds it (no later getUpdates confirmed it); the next start
    confirms it with the cursor instead of storing it again."""
    ann = tg.user(1001, "Ann")
    tg.send_text(ann, "one")
    tg.send_text(ann, "two")
    stopping = []

    async def stop_while_storing(messages, ticket_type):
        stopping.append(asyncio.ensure_future(adapter.stop()))
        return await pipeline.ingest_many(messages, ticket_type)
    adapter = TelegramAdapter(settings(tg), services_for(pipeline, ingest=stop_while_storing))
    await adapter.start()
    await eventually(lambda: stopping, what="the first batch")
    await stopping[0]
    assert [state for _, state in await inbound(store)] == ["processed"] * 2
    assert [u["message"]["text"] for u in tg.pending] == ["one", "two"]
    assert await cursor(store, tg) == tg._update_id
    tg.send_text(ann, "three")
    async with running(adapter_for(tg, pipeline)):
        rows = await stored(store, 3)
        await eventually(lambda: not tg.pending, what="the updates confirmed")
    assert [state for _, state in rows] == ["processed"] * 3
    assert await comment_texts(store) == ["one", "two", "three"]


async def test_what_is_not_a_customers_private_message_is_skipped(tg, pipeline, store):
    ann = tg.user(1001, "Ann")
    group = tg.group("Staff room", members=(ann,))
    tg.send_text(ann, "chatter in a group", chat=group)
    sent = tg.send_text(ann, "Hello")
    tg.edit_text(sent, "Hello, the printer is broken")
    async with running(adapter_for(tg, pipeline)):
        rows = await stored(store, 2)
        await eventually(lambda: not tg.pending, what="the updates confirmed")
    assert [key.split(":")[0] for key, _ in rows] == ["update", "edit"]
    # The edit rewrites the comment the message made; its first text is in the history.
    assert await comment_texts(store) == ["Hello, the printer is broken"]
    history = await store.run(lambda s: s.scalar(select(Comment.decision))["edits"])
    assert [entry["text"] for entry in history] == ["Hello"]
    assert await cursor(store, tg) == tg._update_id


async def test_a_kept_envelope_is_read_again_as_the_same_message(tg, pipeline, store):
    ann = tg.user(1001, "Ann", last_name="Lee")
    tg.send_photo(ann, b"PNGDATA" * 100, caption="screen")
    async with running(adapter_for(tg, pipeline)):
        await stored(store, 1)
    inbound_id = await store.run(lambda s: s.scalar(select(InboundRow.id)))
    raw, channel, _ = await store.run(_inbound_raw, inbound_id)
    again = parse_kept(channel, raw, NOW)
    assert (again.channel, again.sender, again.sender_name, again.text) == (
        "telegram", ("telegram", "1001"), "Ann Lee", "screen")
    assert [a.data for a in again.attachments] == [b"PNGDATA" * 100]
    assert again.dedupe_key == (await inbound(store))[0][0]

    # Kept but never decided (a crash in between): decided at start-up by this parser.
    later = tg.send_text(ann, "and a second thing").update
    message = tgparse.parse(tgparse.envelope(later), NOW)

    def keep_only(session):
        from helpgate.ticketstore.repository import keep_raw
        return keep_raw(session, message, message.sender_key)
    kept_id, _ = await store.run(keep_only)
    [result] = await pipeline.process_received()
    assert result.inbound == kept_id and result.action != Action.QUARANTINED
    assert (await comment_texts(store))[-1] == "and a second thing"


# ---- webhook -------------------------------------------------------------------------


async def test_a_webhook_stores_posts_with_our_secret_and_refuses_the_rest(
        tg, pipeline, store):
    ann = tg.user(1001, "Ann")
    adapter = adapter_for(tg, pipeline, mode="webhook", webhook_port=0,
                          webhook_url="https://support.example/telegram",
                          webhook_secret=SECRET)
    async with running(adapter):
        assert tg.webhook["url"] == "https://support.example/telegram"
        url = f"http://127.0.0.1:{adapter.port}/telegram"
        wrong = tg.send_text(ann, "forged")
        assert await tg.deliver_webhook(wrong, url=url, secret="not-ours") == 401
        assert await tg.deliver_webhook(wrong, url=url, secret="") == 401
        assert await inbound(store) == []
        right = tg.send_text(ann, "Please call me")
        assert await tg.deliver_webhook(right, url=url) == 200
        # Answered only once stored: the row is there when the answer is.
        assert await inbound(store) == [(f"update:{right.update['update_id']}", "processed")]
    assert await comment_texts(store) == ["Please call me"]


async def test_a_webhook_answers_500_when_the_update_cannot_be_stored(tg, pipeline, store):
    ann = tg.user(1001, "Ann")

    async def broken(messages, ticket_type):
        raise ConnectionError("database away")
    adapter = TelegramAdapter(settings(tg, mode="webhook", webhook_port=0,
                                       webhook_url="https://support.example/telegram",
                                       webhook_secret=SECRET),
                              services_for(pipeline, ingest=broken))
    async with running(adapter):
        queued = tg.send_text(ann, "Hello")
        status = await tg.deliver_webhook(queued, url=f"http://127.0.0.1:{adapter.port}"
                                                      "/telegram")
    assert status == 500
    assert [u["update_id"] for u in tg.pending] == [queued.update["update_id"]]


# ---- start-up errors -----------------------------------------------------------------


async def test_a_revoked_token_stops_the_start_with_a_fix(tg, pipeline):
    tg.tokens.clear()
    with pytest.raises(ChannelStartError, match=r"refused telegram.token .*@BotFather"):
        await adapter_for(tg, pipeline).start()


async def test_a_webhook_port_in_use_stops_the_start_with_a_fix(tg, pipeline):
    hook = {"mode": "webhook", "webhook_url": "https://support.example/telegram",
            "webhook_secret": SECRET}
    async with running(adapter_for(tg, pipeline, webhook_port=0, **hook)) as first:
        with pytest.raises(ChannelStartError, match=rf"cannot listen on 127.0.0.1:"
                                                    rf"{first.port} .*telegram.webhook_port"):
            await adapter_for(tg, pipeline, webhook_port=first.port, **hook).start()


# ---- the record and the registry -----------------------------------------------------


def envelope(message: dict, update_id: int = 7, kind: str = "message",
             files: dict | None = None, bot: str | None = None) -> bytes:
    return tgparse.envelope({"update_id": update_id, kind: message}, files, bot)


def private(text: str | None = None, **content) -> dict:
    message = {"message_id": 3, "date": 1790000000, "chat": {"id": 42, "type": "private"},
               "from": {"id": 42, "is_bot": False, "first_name": "Пётр"}, **content}
    if text is not None:
        message["text"] = text
    return message


def test_parse_reads_edits_contacts_and_files_and_never_raises():
    edited = tgparse.parse(envelope(private("исправлено", edit_date=1790000100), 8,
                                    "edited_message"), NOW)
    assert (edited.dedupe_key, edited.headers) == ("edit:8", {"x-telegram-edited": "1"})
    card = tgparse.parse(envelope(private(contact={"phone_number": "+79001234567",
                                                   "first_name": "Пётр", "user_id": 42})), NOW)
    assert (card.sender_phone, card.text, card.problem) == ("+79001234567", "+79001234567", None)
    someone_else = tgparse.parse(envelope(private("вот", contact={
        "phone_number": "+79990000000", "first_name": "Иван", "user_id": 99})), NOW)
    assert someone_else.sender_phone is None
    document = private(document={"file_id": "F1", "file_unique_id": "U1",
                                 "file_name": "a.txt", "mime_type": "text/plain"})
    got = tgparse.parse(envelope(document, files={"U1": {
        "name": "a.txt", "mime": "text/plain", "data_b64": base64.b64encode(b"hi").decode()}}),
        NOW)
    assert [(a.filename, a.data) for a in got.attachments] == [("a.txt", b"hi")]
    lost = tgparse.parse(envelope(document, files={"U1": {
        "name": "a.txt", "mime": "text/plain", "failed": "Bad Request: invalid file_id"}}), NOW)
    assert lost.text.startswith('[The file "a.txt" could not be received')
    sticker = tgparse.parse(envelope(private(sticker={"file_id": "S"})), NOW)
    assert sticker.problem == "telegram message of kind sticker is not handled yet"
    group = tgparse.parse(envelope({**private("@helpgate_bot, hi"),
                                    "chat": {"id": -5, "type": "group"}}, bot="helpgate_bot"),
                          NOW)
    # A group's message (the adapter keeps only those to the bot): the group is the chat,
    # the mention is not part of the words.
    assert (group.chat_id, group.text, group.problem) == ("-5", "hi", None)
    channel = tgparse.parse(envelope({**private("hi"), "chat": {"id": -7, "type": "channel"}}),
                            NOW)
    assert channel.problem == "telegram update of kind message in a channel chat is not handled yet"
    assert tgparse.parse(b"\x00not json", NOW).problem.startswith("unreadable telegram record")
    assert json.loads(envelope(private("x")))["files"] == {}


def test_the_registry_knows_telegram_and_builds_it_only_with_a_token():
    assert CHANNELS["telegram"].kind is TELEGRAM
    services = services_for(type("P", (), {"store": None, "clock": staticmethod(
        lambda: NOW), "ingest_many": None})())
    assert TELEGRAM.adapters(Config(), services) == []
    assert CHANNELS["telegram"].transport(Config()) is None
    [adapter] = TELEGRAM.adapters(Config(telegram={"token": "123:abc"}), services)
    assert adapter.name == "telegram bot 123 (polling)"


async def test_start_is_greeted_not_stored_and_new_opens_another_ticket(tg, pipeline, store):
    """Pressing Start asks nothing: the bot says what to do, in the customer's language,
    and no ticket is opened. A chat continues its ticket; /new starts another one."""
    ann = tg.user(1001, "Аня", language_code="ru")
    tg.send_text(ann, "/start")
    tg.send_text(ann, "Не печатает принтер")
    tg.send_text(ann, "Модель HP 1020")
    tg.send_text(ann, "/new Нужен доступ к 1С")
    tg.send_text(ann, "С понедельника")
    async with running(adapter_for(tg, pipeline)):
        await stored(store, 4)
        await eventually(lambda: _confirmed(tg), what="the updates confirmed")
    greetings = [m["text"] for m in tg.sent if m["method"] == "sendMessage"]
    assert greetings == [Config().text("ru").bot_greeting]
    tickets = await store.run(lambda s: s.execute(
        select(Comment.ticket_id, Comment.text).where(Comment.author_kind == "contact")
        .order_by(Comment.id)).all())
    first, second = tickets[0].ticket_id, tickets[2].ticket_id
    assert [tuple(t) for t in tickets] == [
        (first, "Не печатает принтер"), (first, "Модель HP 1020"),
        (second, "Нужен доступ к 1С"), (second, "С понедельника")]
    assert first != second


async def _confirmed(tg) -> bool:
    return not tg.pending
