"""The Telegram fake against the real aiogram 3: if aiogram accepts what the fake says
and the fake understands what aiogram sends, channel tests built on the fake test the
Telegram channel, not a picture of it."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
)
from aiogram.utils.backoff import BackoffConfig
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from tests.fakes.telegram import FakeTelegram
from tests.waiting import eventually

# Reconnect quickly after an outage, so the outage test stays short.
FAST_BACKOFF = BackoffConfig(min_delay=0.1, max_delay=0.3, factor=1.5, jitter=0.05)


@pytest.fixture
async def tg():
    async with FakeTelegram() as fake:
        yield fake


def make_bot(tg: FakeTelegram, token: str | None = None) -> Bot:
    api = TelegramAPIServer.from_base(tg.base_url)
    return Bot(token or tg.token, session=AiohttpSession(api=api))


@pytest.fixture
async def bot(tg):
    bot = make_bot(tg)
    yield bot
    await bot.session.close()


@asynccontextmanager
async def polling(dp: Dispatcher, bot: Bot):
    """Run aiogram's own polling loop for the body of the with-block."""
    started = asyncio.Event()
    dp.startup.register(started.set)
    task = asyncio.create_task(dp.start_polling(
        bot, polling_timeout=1, handle_signals=False, close_bot_session=False,
        backoff_config=FAST_BACKOFF))
    await asyncio.wait_for(started.wait(), 10)
    try:
        yield
    finally:
        await dp.stop_polling()
        await task


def recording_dispatcher(seen: list[str], reply: bool = True) -> Dispatcher:
    dp = Dispatcher()

    @dp.message(F.text)
    async def on_text(message, bot: Bot):
        seen.append(message.text)
        if reply:
            await bot.send_message(message.chat.id, f"echo: {message.text}")

    return dp


async def test_get_me_reports_the_bot_and_its_privacy_mode(tg, bot):
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (123456, "helpgate_bot", True)
    assert me.can_join_groups and not me.can_read_all_group_messages
    tg.privacy = False
    assert (await bot.get_me()).can_read_all_group_messages
    assert tg.requests["getMe"] == 2


async def test_unknown_token_is_401_and_unknown_method_404(tg):
    stranger = make_bot(tg, "999:wrong")
    with pytest.raises(TelegramUnauthorizedError):
        await stranger.get_me()
    await stranger.session.close()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{tg.base_url}/bot{tg.token}/sendTelepathy") as response:
            assert response.status == 404
            assert await response.json() == {"ok": False, "error_code": 404,
                                             "description": "Not Found"}
        # Method names are case-insensitive, and a JSON body works too.
        async with http.post(f"{tg.base_url}/bot{tg.token}/getme", json={}) as response:
            assert (await response.json())["result"]["id"] == 123456


async def test_polling_dispatcher_receives_a_message_and_replies(tg, bot):
    ann = tg.user(1001, "Ann", "ann")
    seen: list[str] = []
    dp = recording_dispatcher(seen)
    async with polling(dp, bot):
        tg.send_text(ann, "hello")
        await eventually(lambda: tg.sent, what="the reply")
    assert seen == ["hello"]
    reply = tg.sent[-1]
    assert (reply["method"], reply["chat_id"]) == ("sendMessage", 1001)
    assert reply["text"] == "echo: hello"
    # One counter per chat: the customer's message was 1, the reply is 2.
    assert reply["message"]["message_id"] == 2


async def test_getupdates_long_polls_confirms_by_offset_and_409s_a_second_poller(tg, bot):
    ann = tg.user(1001, "Ann")
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await eventually(lambda: tg.polling, what="the first long poll")
    second = asyncio.create_task(bot.get_updates(timeout=5))
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates"):
        await first
    tg.send_text(ann, "wake up")
    [update] = await second
    assert update.message.text == "wake up"
    # Not confirmed yet: asked again, the update is still there.
    assert [u.update_id for u in await bot.get_updates()] == [update.update_id]
    assert await bot.get_updates(offset=update.update_id + 1) == []
    assert tg.pending == []


async def test_429_is_telegram_retry_after_with_the_given_delay(tg, bot):
    tg.user(1001, "Ann")
    tg.fail_next("sendMessage", 429, retry_after=7)
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(1001, "first try")
    assert caught.value.retry_after == 7
    await bot.send_message(1001, "second try")
    assert [s["text"] for s in tg.sent] == ["second try"]
    assert tg.requests["sendMessage"] == 2


async def test_blocked_chat_is_forbidden_and_unknown_chat_bad_request(tg, bot):
    tg.user(1001, "Ann")
    tg.block(1001)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(1001, "are you there?")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(4242, "who?")
    tg.fail_next("getChat", 400)
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.get_chat(1001)
    assert tg.sent == []


async def test_text_limits_and_html_checked_as_telegram_does(tg, bot):
    tg.user(1001, "Ann")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(1001, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(1001, "1 < 2", parse_mode="HTML")
    sent = await bot.send_message(1001, "<b>5 &lt; 6</b>", parse_mode="HTML")
    assert sent.text == "5 < 6"
    assert tg.sent[-1]["text"] == "<b>5 &lt; 6</b>"


async def test_document_upload_arrives_with_bytes_and_name(tg, bot):
    tg.user(1001, "Ann")
    data = b"%PDF-1.4 invoice\x00\xff"
    message = await bot.send_document(1001, BufferedInputFile(data, filename="invoice.pdf"),
                                      caption="Your invoice")
    record = tg.sent[-1]
    assert (record["method"], record["data"], record["filename"]) == (
        "sendDocument", data, "invoice.pdf")
    assert record["caption"] == "Your invoice"
    assert message.document.file_name == "invoice.pdf"
    assert message.document.mime_type == "application/pdf"
    assert (await bot.download(message.document.file_id)).read() == data


async def test_customer_file_is_downloadable_and_over_20_mb_is_too_big(tg, bot):
    ann = tg.user(1001, "Ann")
    data = bytes(range(256)) * 10
    sent = tg.send_document(ann, data, "log.bin", "application/octet-stream")
    file = await bot.get_file(sent["document"]["file_id"])
    assert file.file_size == len(data)
    assert (await bot.download(file)).read() == data
    huge = tg.send_document(ann, b"iso", "disk.iso", size=25 * 1024 * 1024)
    with pytest.raises(TelegramBadRequest, match="file is too big"):
        await bot.get_file(huge["document"]["file_id"])
    photo = tg.send_photo(ann, b"\xff\xd8 a jpeg" * 50)
    largest = photo["photo"][-1]
    assert (await bot.download(largest["file_id"])).read() == b"\xff\xd8 a jpeg" * 50


async def test_buttons_callback_answers_and_edits(tg, bot):
    ann = tg.user(1001, "Ann")
    keyboard = InlineKeyboardMarkup(inline_keyboard=[[
        InlineKeyboardButton(text="Close ticket", callback_data="close:7")]])
    message = await bot.send_message(1001, "Done?", reply_markup=keyboard)
    assert tg.sent[-1]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "close:7"
    tg.press_button(ann, tg.sent[-1]["message"], "close:7")
    [update] = await bot.get_updates()
    assert update.callback_query.data == "close:7"
    assert update.callback_query.message.message_id == message.message_id
    await bot.answer_callback_query(update.callback_query.id, text="Closed")
    assert tg.callback_answers[update.callback_query.id]["text"] == "Closed"
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(update.callback_query.id)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("Done?", chat_id=1001, message_id=message.message_id,
                                    reply_markup=keyboard)
    edited = await bot.edit_message_text("Closed.", chat_id=1001, message_id=message.message_id)
    assert edited.text == "Closed." and edited.reply_markup is None
    # The customer edits an earlier message of theirs.
    own = tg.send_text(ann, "my order is 12", reply_to=message.message_id)
    tg.edit_text(own, "my order is 13")
    updates = await bot.get_updates(offset=update.update_id + 1)
    assert updates[0].message.reply_to_message.message_id == message.message_id
    assert updates[0].message.text == "my order is 12"     # the update is a snapshot
    assert updates[1].edited_message.text == "my order is 13"
    assert updates[1].edited_message.edit_date is not None
    tg.share_contact(ann, "+79001234567")
    last = (await bot.get_updates(offset=updates[1].update_id + 1))[0].message
    assert (last.contact.phone_number, last.contact.user_id) == ("+79001234567", 1001)


async def test_webhook_secret_checked_by_aiogram(tg, bot):
    ann = tg.user(1001, "Ann")
    handled: list[str] = []
    dp = Dispatcher()

    @dp.message(F.text)
    async def on_text(message):
        handled.append(message.text)
        await message.answer(f"got: {message.text}")

    app = web.Application()
    SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token="s3cret-Token_1",
                         handle_in_background=False).register(app, path="/hook")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        with pytest.raises(TelegramBadRequest, match="unallowed characters"):
            await bot.set_webhook(url, secret_token="not secret!")
        assert await bot.set_webhook(url, secret_token="s3cret-Token_1")
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await bot.get_updates()
        assert await tg.deliver_webhook(tg.send_text(ann, "via hook")) == 200
        assert handled == ["via hook"]
        assert tg.sent[-1]["text"] == "got: via hook"
        assert await tg.deliver_webhook(tg.send_text(ann, "forged"), secret="wrong") == 401
        assert handled == ["via hook"]
        info = await bot.get_webhook_info()
        assert (info.url, info.pending_update_count) == (url, 1)
        assert "401" in info.last_error_message
    finally:
        await runner.cleanup()


async def test_outage_during_polling_loses_and_doubles_nothing(tg, bot, caplog):
    ann = tg.user(1001, "Ann")
    seen: list[str] = []
    dp = recording_dispatcher(seen, reply=False)
    async with polling(dp, bot):
        tg.send_text(ann, "one")
        await eventually(lambda: seen == ["one"], what="the first message")
        await tg.go_down()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as http, http.get(tg.base_url):
                pass
        tg.send_text(ann, "two")
        tg.send_text(ann, "three")
        # Two failures: the long poll cut by the outage, then a refused reconnect.
        await eventually(lambda: sum("Failed to fetch updates" in r.getMessage()
                                     for r in caplog.records) >= 2,
                         what="aiogram seeing the outage")
        await tg.come_up()
        await eventually(lambda: len(seen) >= 3, what="the messages sent while down")
        tg.send_text(ann, "four")
        await eventually(lambda: len(seen) >= 4 and not tg.pending, what="the last message")
    assert seen == ["one", "two", "three", "four"]


async def test_forum_topics_create_send_delete(tg, bot):
    ann = tg.user(1001, "Ann")
    forum = tg.group("Support desk", forum=True)
    topic = await bot.create_forum_topic(forum["id"], "Ticket 7: printer")
    assert topic.name == "Ticket 7: printer"
    sent = await bot.send_message(forum["id"], "Agent here",
                                  message_thread_id=topic.message_thread_id)
    assert sent.message_thread_id == topic.message_thread_id and sent.is_topic_message
    assert tg.sent[-1]["message_thread_id"] == topic.message_thread_id
    answer = tg.send_text(ann, "thanks", chat=forum, thread_id=topic.message_thread_id)
    # As in Telegram, a message in a topic "replies" to the topic's first message.
    assert answer["reply_to_message"]["forum_topic_created"]["name"] == "Ticket 7: printer"
    me = await bot.get_chat_member(forum["id"], bot.id)
    assert me.status == "administrator" and me.can_manage_topics
    tg.delete_topic(forum["id"], topic.message_thread_id)
    with pytest.raises(TelegramBadRequest, match="message thread not found"):
        await bot.send_message(forum["id"], "hello?", message_thread_id=topic.message_thread_id)
    other = await bot.create_forum_topic(forum["id"], "Ticket 8")
    assert other.message_thread_id > topic.message_thread_id
    assert await bot.close_forum_topic(forum["id"], other.message_thread_id)
    assert await bot.delete_forum_topic(forum["id"], other.message_thread_id)
    with pytest.raises(TelegramBadRequest, match="message thread not found"):
        await bot.send_message(forum["id"], "hello?", message_thread_id=other.message_thread_id)
    plain = tg.group("No rights", forum=True, rights={"can_manage_topics": False})
    with pytest.raises(TelegramBadRequest, match="not enough rights"):
        await bot.create_forum_topic(plain["id"], "Ticket 9")


async def test_privacy_mode_hides_plain_group_chatter_from_a_non_admin_bot(tg):
    ann = tg.user(1001, "Ann")
    group = tg.group("Lobby", admin=False)
    assert tg.send_text(ann, "hi all", chat=group).update is None
    assert tg.send_text(ann, "/help", chat=group).update is not None
    assert tg.send_text(ann, "@helpgate_bot ping", chat=group).update is not None
    tg.privacy = False
    assert tg.send_text(ann, "hi again", chat=group).update is not None
    assert len(tg.pending) == 3


async def test_commands_chat_actions_and_chat_info(tg, bot):
    tg.user(1001, "Ann", "ann")
    await bot.set_my_commands([BotCommand(command="status", description="Ticket status")])
    assert [c.command for c in await bot.get_my_commands()] == ["status"]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad Command", description="x")])
    await bot.delete_my_commands()
    assert await bot.get_my_commands() == []
    await bot.send_chat_action(1001, "typing")
    assert tg.actions == [{"chat_id": 1001, "action": "typing", "message_thread_id": None}]
    chat = await bot.get_chat("@ann")
    assert (chat.id, chat.type, chat.first_name) == (1001, "private", "Ann")
