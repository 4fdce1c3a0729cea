"""The VK fake runs the real vk-api library unchanged: if these pass, product code built on
vk-api meets the same envelope, errors, long poll and upload flow it would meet at VK.

vk-api is synchronous, so every library call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
from aiohttp import web
from vk_api import VkUpload
from vk_api.bot_longpoll import VkBotEvent, VkBotEventType, VkBotLongPoll, VkBotMessageEvent
from vk_api.exceptions import ApiError

from tests.fakes.vk import FakeVK, vk_session
from tests.waiting import eventually

GROUP = 4242
TOKEN = "group-token"
CHAT = 2_000_000_001


@pytest.fixture
async def vk():
    async with FakeVK(group_id=GROUP, token=TOKEN, confirmation_code="abc123",
                      secret="s3cret") as fake:
        yield fake


@pytest.fixture
def api(vk):
    session = vk_session(vk)
    yield session
    session.http.close()


@pytest.fixture
async def longpoll(vk, api):
    lp = await asyncio.to_thread(VkBotLongPoll, api, GROUP, wait=5)
    yield lp
    lp.session.close()


async def call(api, method: str, **values):
    return await asyncio.to_thread(api.method, method, values)


async def check(lp):
    return await asyncio.to_thread(lp.check)


async def test_group_info_and_users(vk, api):
    vk.user(42, "Ivan", "Petrov")
    info = await call(api, "groups.getById")
    assert info["groups"][0]["id"] == GROUP
    users = await call(api, "users.get", user_ids="42,77")
    assert users[0]["first_name"] == "Ivan"
    assert users[1]["deactivated"] == "deleted"
    assert (await call(api, "groups.getCallbackConfirmationCode",
                       group_id=GROUP))["code"] == "abc123"


async def test_wrong_token_is_error_5(vk):
    wrong = vk_session(vk, token="not-the-token")
    try:
        with pytest.raises(ApiError) as caught:
            await call(wrong, "groups.getById")
    finally:
        wrong.http.close()
    assert caught.value.code == 5
    assert "invalid access_token" in caught.value.error["error_msg"]
    assert {"key": "method", "value": "groups.getById"} in caught.value.error["request_params"]


async def test_send_records_and_random_id_dedupes(vk, api):
    vk.user(42)
    keyboard = {"one_time": False, "buttons": []}
    first = await call(api, "messages.send", peer_id=42, random_id=7, message="Hello",
                       keyboard=json.dumps(keyboard))
    again = await call(api, "messages.send", peer_id=42, random_id=7, message="Hello")
    other = await call(api, "messages.send", peer_id=42, random_id=8, message="Bye")
    assert again == first != other
    assert [(s.peer_id, s.random_id, s.message) for s in vk.sent] == [
        (42, 7, "Hello"), (42, 8, "Bye")]
    assert vk.sent[0].keyboard == keyboard
    assert vk.requests["messages.send"] == 3


async def test_send_refusals(vk, api):
    vk.user(42)
    with pytest.raises(ApiError) as too_long:
        await call(api, "messages.send", peer_id=42, random_id=1, message="x" * 4097)
    with pytest.raises(ApiError) as stranger:
        await call(api, "messages.send", peer_id=99, random_id=2, message="hi")
    vk.block(42)
    with pytest.raises(ApiError) as blocked:
        await call(api, "messages.send", peer_id=42, random_id=3, message="hi")
    assert (too_long.value.code, stranger.value.code, blocked.value.code) == (914, 901, 901)
    assert vk.sent == []


async def test_injected_flood_control_then_success(vk, api):
    vk.user(42)
    vk.fail_next("messages.send", 9)
    with pytest.raises(ApiError) as caught:
        await call(api, "messages.send", peer_id=42, random_id=5, message="hi")
    assert caught.value.code == 9
    assert vk.sent == []
    assert await call(api, "messages.send", peer_id=42, random_id=5, message="hi") > 0
    assert len(vk.sent) == 1


async def test_lost_answer_then_retry_sends_once(vk, api):
    """The message went out but the answer was an error: the retry with the same
    random_id gets the same id and nothing is sent twice."""
    vk.user(42)
    vk.fail_next("messages.send", 10, after=True)
    with pytest.raises(ApiError):
        await call(api, "messages.send", peer_id=42, random_id=11, message="once")
    message_id = await call(api, "messages.send", peer_id=42, random_id=11, message="once")
    assert [s.message_id for s in vk.sent] == [message_id]


async def test_too_many_rps_is_retried_by_vk_api(vk, api):
    vk.fail_next("users.get", 6)
    assert await call(api, "users.get", user_ids="1")
    assert vk.requests["users.get"] == 2


async def test_longpoll_delivers_message_new(vk, longpoll):
    assert longpoll.url.startswith(vk.base_url)   # plain http: no adapter needed
    vk.user(42, "Ivan")
    vk.send_text(42, "I need help", payload={"command": "start"})
    vk.send_text(43, "hi all", peer_id=CHAT)
    private, chat = await check(longpoll)
    assert isinstance(private, VkBotMessageEvent)
    assert private.type is VkBotEventType.MESSAGE_NEW and private.from_user
    assert private.message.text == "I need help"
    assert json.loads(private.message.payload) == {"command": "start"}
    assert private.client_info["keyboard"] is True
    assert chat.from_chat and chat.chat_id == 1 and chat.message.id == 0
    assert chat.message.conversation_message_id == 1


async def test_longpoll_waits_for_an_event(vk, longpoll):
    waiting = asyncio.create_task(check(longpoll))
    await eventually(lambda: vk.requests["a_check"] == 1, what="the poll to park")
    vk.send_text(42, "late")
    events = await waiting
    assert [e.message.text for e in events] == ["late"]


async def test_old_ts_gets_the_same_events_again(vk, api):
    server = await call(api, "groups.getLongPollServer", group_id=GROUP)
    vk.send_text(42, "one")
    vk.send_text(42, "two")

    def poll(ts, wait=0):
        with requests.Session() as http:
            return http.get(server["server"], params={
                "act": "a_check", "key": server["key"], "ts": ts, "wait": wait}).json()

    first = await asyncio.to_thread(poll, server["ts"])
    again = await asyncio.to_thread(poll, server["ts"])
    assert first == again
    assert [u["object"]["message"]["text"] for u in first["updates"]] == ["one", "two"]
    assert (await asyncio.to_thread(poll, first["ts"]))["updates"] == []


@pytest.mark.parametrize("failed", [1, 2, 3])
async def test_longpoll_failures_lose_and_repeat_nothing(vk, longpoll, failed):
    vk.send_text(42, "before")
    texts = [e.message.text for e in await check(longpoll)]
    key = longpoll.key
    vk.lp_fail(failed)
    if failed != 3:
        vk.send_text(42, "queued while failing")  # 3 loses the ts: VK drops such events
    assert await check(longpoll) == []
    assert (longpoll.key != key) == (failed in (2, 3))
    vk.send_text(42, "after")
    texts += [e.message.text for e in await check(longpoll)]
    expected = ["before", "after"] if failed == 3 else ["before", "queued while failing",
                                                        "after"]
    assert texts == expected


async def test_edit_and_button_events(vk, api, longpoll):
    original = vk.send_text(42, "helo")
    vk.edit_text(original, "hello")
    vk.press_button(42, 42, {"action": "close"}, conversation_message_id=5)
    new, edit, button = await check(longpoll)
    assert isinstance(edit, VkBotMessageEvent) and edit.type is VkBotEventType.MESSAGE_EDIT
    assert edit.obj.text == "hello" and edit.obj.id == new.message.id
    assert type(button) is VkBotEvent and button.obj.payload == {"action": "close"}
    await call(api, "messages.sendMessageEventAnswer", event_id=button.obj.event_id,
               user_id=42, peer_id=42,
               event_data=json.dumps({"type": "show_snackbar", "text": "Closed"}))
    assert vk.event_answers[0]["event_data"]["text"] == "Closed"


async def test_edit_sent_message_and_message_reply_setting(vk, api, longpoll):
    vk.user(42)
    await call(api, "groups.setLongPollSettings", group_id=GROUP, message_reply=1)
    settings = await call(api, "groups.getLongPollSettings", group_id=GROUP)
    assert settings["events"]["message_reply"] == 1
    await call(api, "messages.send", peer_id=42, random_id=1, message="draft")
    await call(api, "messages.edit", peer_id=42, conversation_message_id=1, message="final")
    (reply,) = await check(longpoll)
    assert reply.type is VkBotEventType.MESSAGE_REPLY and reply.obj.text == "draft"
    assert vk.sent[0].message == "final" and vk.edits[0]["message"] == "final"


async def test_document_and_photo_upload(vk, api, tmp_path):
    vk.user(42)
    data = b"%PDF-1.4 invoice"
    (tmp_path / "invoice.pdf").write_bytes(data)
    (tmp_path / "shot.jpg").write_bytes(b"\xff\xd8jpeg")
    upload = VkUpload(api)
    try:
        saved = await asyncio.to_thread(upload.document_message, str(tmp_path / "invoice.pdf"),
                                        title="invoice.pdf", peer_id=42)
        photos = await asyncio.to_thread(upload.photo_messages, str(tmp_path / "shot.jpg"),
                                         peer_id=42)
    finally:
        upload.http.close()
    doc, photo = saved["doc"], photos[0]
    assert saved["type"] == "doc" and (doc["title"], doc["ext"]) == ("invoice.pdf", "pdf")
    attachment = f"doc{doc['owner_id']}_{doc['id']},photo{photo['owner_id']}_{photo['id']}"
    await call(api, "messages.send", peer_id=42, random_id=3, attachment=attachment)
    assert vk.sent[0].attachment == attachment
    assert vk.attachment_data(f"doc{doc['owner_id']}_{doc['id']}") == data
    with requests.Session() as http:
        got = await asyncio.to_thread(http.get, photo["sizes"][-1]["url"])
    assert got.content == b"\xff\xd8jpeg"


async def test_incoming_document_is_downloadable(vk, longpoll):
    vk.send_doc(42, b"scan bytes", "scan.pdf", text="see attached")
    vk.send_photo(42, b"photo bytes")
    doc_event, photo_event = await check(longpoll)
    doc = doc_event.message.attachments[0]["doc"]
    assert (doc["title"], doc["ext"], doc["size"]) == ("scan.pdf", "pdf", 10)
    sizes = photo_event.message.attachments[0]["photo"]["sizes"]
    with requests.Session() as http:
        got_doc = await asyncio.to_thread(http.get, doc["url"])
        got_photo = await asyncio.to_thread(http.get, sizes[-1]["url"])
    assert (got_doc.content, got_photo.content) == (b"scan bytes", b"photo bytes")


async def test_callback_delivery():
    received = []

    async def endpoint(request):
        body = await request.json()
        if body["type"] == "confirmation":
            return web.Response(text="abc123")
        if body.get("secret") != "s3cret":
            return web.Response(status=403, text="bad secret")
        received.append(body)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/vk", endpoint)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/vk"
    try:
        async with FakeVK(group_id=GROUP, secret="s3cret") as vk:
            assert await vk.confirm(url) == "abc123"
            event = vk.send_text(42, "via callback")
            assert await vk.deliver_callback(event, url) == (200, "ok")
            assert await vk.deliver_callback(event, url, secret="wrong") == (403, "bad secret")
    finally:
        await runner.cleanup()
    assert [(b["type"], b["event_id"], b["group_id"]) for b in received] == [
        ("message_new", event["event_id"], GROUP)]
    assert received[0]["object"]["message"]["text"] == "via callback"


async def test_down_and_up_on_the_same_port(vk, api, longpoll):
    vk.user(42)
    await call(api, "messages.send", peer_id=42, random_id=1, message="before")
    port = vk.port
    parked = asyncio.create_task(check(longpoll))
    await eventually(lambda: vk.requests["a_check"] == 1, what="the poll to park")
    await vk.go_down()
    with pytest.raises(requests.ConnectionError):
        await parked
    with pytest.raises(requests.ConnectionError):
        await call(api, "groups.getById")
    await vk.come_up()
    assert vk.port == port
    vk.send_text(42, "after restart")
    assert [e.message.text for e in await check(longpoll)] == ["after restart"]
    await call(api, "messages.send", peer_id=42, random_id=1, message="before")
    assert [s.message for s in vk.sent] == ["before"]
