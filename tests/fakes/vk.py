"""A local fake of the VK community-bot API, for tests that cannot reach api.vk.ru.

It speaks VK's wire format closely enough that the real vk-api library (VkApi,
VkBotLongPoll, VkUpload) runs against it unchanged, and keeps the state a test asserts on:
what the community sent (`vk.sent`), how often each method was called (`vk.requests`,
long-poll requests counted as "a_check").

    async with FakeVK(group_id=7, token="t") as vk:
        vk.user(42, "Ivan", "Petrov")
        session = vk_session(vk)          # a VkApi whose api.vk.ru calls reach the fake
        lp = await asyncio.to_thread(VkBotLongPoll, session, 7, wait=5)
        vk.send_text(42, "hello")         # the customer writes; queued for long poll
        events = await asyncio.to_thread(lp.check)
        ...
        lp.session.close(); session.http.close()   # unclosed sockets fail the tests

Tests set `VkApi.RPS_DELAY = 0` (the session from `vk_session` does it on its instance):
the library otherwise sleeps a third of a second before every call. vk-api is
synchronous: call it in a worker thread (`asyncio.to_thread`), never on the event loop the
fake runs on.

Behaviour kept from the real service, because product code must cope with it:
- errors come with HTTP 200 as `{"error": {error_code, error_msg, request_params}}`;
- messages.send needs random_id; a repeated (peer_id, random_id) within
  `random_id_window` seconds answers the first message's id and sends nothing (0 = no
  dedupe); text over 4096 characters is error 914; a user who never wrote to the
  community (and was not registered with `vk.user`) cannot be written to: error 901;
- in chats (peer_id >= 2000000000) bots receive message id 0 and must use
  conversation_message_id;
- long poll: the ts from groups.getLongPollServer is the current one (events queued
  before are not delivered, start polling first); events stay addressable by ts, so a
  client asking again with an old ts gets the same events again;
- only event types enabled in the long poll settings (groups.setLongPollSettings) are
  queued; message_reply (the community's own messages) is off until enabled.

Approximations (shapes from VK's documentation, not checked against the live service):
the wording of errors 15 and 100, the upload server's error answer, doc `type` codes,
photo sizes (every size serves the uploaded bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import secrets
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any

import aiohttp
import requests
import vk_api
from aiohttp import web
from requests.adapters import HTTPAdapter

API_VERSION = "5.199"
CHAT_PEER_BASE = 2_000_000_000
MAX_MESSAGE_LENGTH = 4096
API_PREFIXES = ("https://api.vk.ru/", "https://api.vk.com/")

ERROR_MESSAGES = {
    3: "Unknown method passed",
    5: "User authorization failed: invalid access_token (4).",
    6: "Too many requests per second",
    8: "Invalid request: v (version) is required",
    9: "Flood control",
    10: "Internal server error",
    15: "Access denied",
    100: "One of the parameters specified was missing or invalid",
    901: "Can't send messages for users without permission",
    902: "Can't send messages to this user due to their privacy settings",
    914: "Message is too long",
}

CLIENT_INFO = {
    "button_actions": ["text", "vkpay", "open_app", "location", "open_link", "callback",
                       "intent_subscribe", "intent_unsubscribe"],
    "keyboard": True, "inline_keyboard": True, "carousel": True, "lang_id": 0,
}

# What a freshly enabled community long poll delivers; message_reply echoes the
# community's own messages and is off until a test (or the product) enables it.
DEFAULT_LP_EVENTS = {"message_new": 1, "message_edit": 1, "message_event": 1,
                     "message_allow": 1, "message_deny": 1, "message_reply": 0,
                     "message_typing_state": 0}


class ApiFault(Exception):
    """An API error the fake answers in VK's envelope."""

    def __init__(self, code: int, msg: str | None = None) -> None:
        super().__init__(code)
        self.code, self.msg = code, msg or ERROR_MESSAGES.get(code, "Unknown error")


@dataclass
class Sent:
    """One message the community sent with messages.send (edits update it in place)."""
    peer_id: int
    random_id: int
    message: str
    attachment: str
    keyboard: dict | None
    reply_to: int | None
    message_id: int
    conversation_message_id: int
    date: int


class _ToFake(HTTPAdapter):
    """A requests transport that sends what was addressed to VK's API host to the fake."""

    def __init__(self, prefix: str, base_url: str) -> None:
        super().__init__()
        self.prefix, self.base_url = prefix, base_url.rstrip("/") + "/"

    def send(self, request, **kwargs):
        request.url = self.base_url + request.url[len(self.prefix):]
        kwargs["proxies"] = {}  # the fake is on loopback: never through a proxy
        return super().send(request, **kwargs)


def mount(session: requests.Session, base_url: str) -> requests.Session:
    """Route the session's calls to api.vk.ru / api.vk.com (vk-api hard-codes the host)."""
    for prefix in API_PREFIXES:
        session.mount(prefix, _ToFake(prefix, base_url))
    return session


def vk_session(fake: FakeVK, token: str | None = None) -> vk_api.VkApi:
    """A real VkApi (v5.199, no rate-limit sleep) talking to the fake; close `.http`."""
    session = vk_api.VkApi(token=token or fake.token, api_version=API_VERSION,
                           session=mount(requests.Session(), fake.base_url))
    session.RPS_DELAY = 0
    return session


def _int(params, name: str, default: int | None = None) -> int:
    value = params.get(name)
    if value in (None, ""):
        if default is not None:
            return default
        raise ApiFault(100, f"One of the parameters specified was missing or invalid: "
                            f"{name} is undefined")
    try:
        return int(value)
    except ValueError:
        raise ApiFault(100, f"One of the parameters specified was missing or invalid: "
                            f"{name} not integer") from None


class FakeVK:
    """The VK API, long poll server, upload and file servers of one community."""

    def __init__(self, group_id: int = 1, token: str = "vk-test-token",
                 confirmation_code: str = "c0nf1rm", secret: str | None = None,
                 name: str = "Test community") -> None:
        self.group_id, self.token, self.name = group_id, token, name
        self.confirmation_code, self.secret = confirmation_code, secret
        self.port = 0
        self.random_id_window = 3600.0
        self.users: dict[int, dict] = {}
        self.chats: dict[int, str] = {}
        self.allowed: set[int] = set()       # peers the community may write to
        self.blocked: set[int] = set()       # peers that answer 901 whatever happens
        self.sent: list[Sent] = []
        self.edits: list[dict] = []
        self.event_answers: list[dict] = []
        self.requests: Counter[str] = Counter()
        self.lp_settings = {"is_enabled": True, "api_version": API_VERSION,
                            "events": dict(DEFAULT_LP_EVENTS)}
        self.events: list[dict] = []         # the long poll history; ts = its length
        self.lp_key = secrets.token_hex(20)
        self._lp_failures: deque[tuple[int, int | None]] = deque()
        self._faults: dict[str, deque[tuple[int, str | None, bool]]] = defaultdict(deque)
        # A share of messages.send calls that fail with error 10 (VK's internal error) at
        # random, nothing sent (bench/outbox.py).
        self.transient_rate = 0.0
        self.random = random.Random(18)
        self._by_random_id: dict[tuple[int, int], tuple[Sent, float]] = {}
        self._messages: dict[tuple[int, int], dict] = {}   # (peer_id, cmid) -> message
        self._message_ids = itertools.count(1)
        self._cmids: Counter[int] = Counter()
        self._object_ids = itertools.count(100)
        self._uploads: dict[str, tuple[str, bytes]] = {}    # opaque file -> (name, data)
        self._files: dict[str, bytes] = {}                   # download key -> data
        self._stored: dict[str, str] = {}                    # "doc-1_5" -> download key
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeVK:
        await self.come_up()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.go_down()

    async def come_up(self) -> None:
        """Listen (again) on the same port, with all state kept."""
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_route("*", "/method/{name}", self._api)
        app.router.add_get("/whp/{group_id}", self._long_poll)
        app.router.add_post("/upload/{kind}", self._upload)
        app.router.add_get("/files/{key}", self._download)
        # A short shutdown: a parked long poll is cut off like a real server going away.
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def go_down(self) -> None:
        """Stop listening and drop open connections (come_up restarts on the same port)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # ----------------------------------------------------------------- test controls

    def fail_next(self, method: str, error_code: int, error_msg: str | None = None,
                  times: int = 1, after: bool = False) -> None:
        """The next `times` calls of `method` answer this error. With after=True the call
        takes effect first (a message is sent) and only the answer is the error, as when
        VK's response is lost."""
        for _ in range(times):
            self._faults[method].append((error_code, error_msg, after))

    def block(self, peer_id: int) -> None:
        """The user forbade messages from the community: messages.send answers 901."""
        self.blocked.add(peer_id)

    def lp_fail(self, failed: int, ts: int | None = None) -> None:
        """The next long poll request answers {"failed": 1|2|3}: 1 gives a ts to go on
        with (default: the one asked, nothing lost), 2 expires the key, 3 loses key and
        ts (the client must call groups.getLongPollServer again)."""
        self._lp_failures.append((failed, ts))
        self._wake()

    def user(self, user_id: int, first_name: str = "Test", last_name: str = "User",
             allow_messages: bool = True) -> dict:
        self.users[user_id] = {"id": user_id, "first_name": first_name,
                               "last_name": last_name, "can_access_closed": True,
                               "is_closed": False}
        if allow_messages:
            self.allowed.add(user_id)
        return self.users[user_id]

    def chat(self, peer_id: int, title: str) -> None:
        self.chats[peer_id] = title
        self.allowed.add(peer_id)

    def attachment_data(self, ref: str) -> bytes:
        """The bytes behind an attachment string the community sent ("doc-7_101")."""
        owner_and_id = "_".join(ref.split("_")[:2])
        return self._files[self._stored[owner_and_id]]

    # ----------------------------------------------------------------- customer side

    def send_text(self, from_id: int, text: str, peer_id: int | None = None,
                  payload: Any = None, attachments: list[dict] | None = None,
                  reply_to: dict | None = None) -> dict:
        """A customer writes to the community (peer_id defaults to the private chat)."""
        peer_id = peer_id or from_id
        self.allowed.add(peer_id)
        if from_id not in self.users:
            self.user(from_id)
        self._cmids[peer_id] += 1
        message = {
            "date": int(time.time()), "from_id": from_id,
            # Bots get no message id in chats, only the conversation_message_id.
            "id": 0 if peer_id >= CHAT_PEER_BASE else next(self._message_ids),
            "out": 0, "version": 1, "attachments": attachments or [],
            "conversation_message_id": self._cmids[peer_id], "fwd_messages": [],
            "important": False, "is_hidden": False, "peer_id": peer_id,
            "random_id": 0, "text": text,
        }
        if payload is not None:
            message["payload"] = payload if isinstance(payload, str) else json.dumps(payload)
        if reply_to is not None:
            message["reply_message"] = reply_to
        self._messages[(peer_id, message["conversation_message_id"])] = message
        return self._event("message_new", {"message": message, "client_info": CLIENT_INFO})

    def send_doc(self, from_id: int, data: bytes, title: str, ext: str | None = None,
                 peer_id: int | None = None, text: str = "") -> dict:
        ext = ext or (title.rsplit(".", 1)[1] if "." in title else "")
        doc = self._store_doc(from_id, title, ext, data)
        return self.send_text(from_id, text, peer_id, attachments=[{"type": "doc", "doc": doc}])

    def send_photo(self, from_id: int, data: bytes, peer_id: int | None = None,
                   text: str = "") -> dict:
        photo = self._store_photo(from_id, data)
        return self.send_text(from_id, text, peer_id,
                              attachments=[{"type": "photo", "photo": photo}])

    def edit_text(self, event_or_message: dict, new_text: str) -> dict:
        """The customer edits a message: a message_edit event (object = the message)."""
        obj = event_or_message.get("object", event_or_message)
        message = obj.get("message", obj)  # message_new wraps it, message_edit does not
        key = (message["peer_id"], message["conversation_message_id"])
        edited = dict(self._messages[key], text=new_text, update_time=int(time.time()))
        self._messages[key] = edited
        return self._event("message_edit", edited)

    def press_button(self, from_id: int, peer_id: int, payload: Any,
                     conversation_message_id: int) -> dict:
        """A callback button pressed under one of the community's messages."""
        return self._event("message_event", {
            "user_id": from_id, "peer_id": peer_id, "event_id": secrets.token_hex(7),
            "payload": payload, "conversation_message_id": conversation_message_id})

    # ----------------------------------------------------------------- callback API

    async def deliver_callback(self, event: dict, url: str,
                               secret: str | None = None) -> tuple[int, str]:
        """POST the event to the app as VK's Callback API does; (status, body text).
        `secret` overrides the configured one (to send a wrong one)."""
        body = {k: event[k] for k in ("type", "event_id", "v", "object", "group_id")}
        if (secret or self.secret) is not None:
            body["secret"] = secret or self.secret
        return await self._post_json(url, body)

    async def confirm(self, url: str) -> str:
        """VK's confirmation request; the app must answer the confirmation code."""
        body: dict[str, Any] = {"type": "confirmation", "group_id": self.group_id}
        if self.secret is not None:
            body["secret"] = self.secret
        return (await self._post_json(url, body))[1]

    async def _post_json(self, url: str, body: dict) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.post(url, json=body) as response:
            return response.status, await response.text()

    # ----------------------------------------------------------------- internals

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _event(self, type_: str, obj: dict) -> dict:
        event = {"group_id": self.group_id, "type": type_,
                 "event_id": secrets.token_hex(20), "v": self.lp_settings["api_version"],
                 "object": obj}
        if self.lp_settings["is_enabled"] and self.lp_settings["events"].get(type_):
            self.events.append(event)
            self._wake()
        return event

    def _file_url(self, data: bytes, name: str) -> tuple[str, str]:
        key = secrets.token_hex(8)
        self._files[key] = data
        return key, f"{self.base_url}/files/{key}?name={name}"

    def _store_doc(self, owner_id: int, title: str, ext: str, data: bytes) -> dict:
        doc_id = next(self._object_ids)
        key, url = self._file_url(data, title)
        self._stored[f"doc{owner_id}_{doc_id}"] = key
        return {"id": doc_id, "owner_id": owner_id, "title": title, "size": len(data),
                "ext": ext, "date": int(time.time()), "type": 1 if ext == "txt" else 8,
                "url": url, "access_key": secrets.token_hex(9)}

    def _store_photo(self, owner_id: int, data: bytes) -> dict:
        photo_id = next(self._object_ids)
        key, url = self._file_url(data, "photo.jpg")
        self._stored[f"photo{owner_id}_{photo_id}"] = key
        # VK offers several sizes; the fake serves the same bytes for each.
        sizes = [{"type": t, "width": w, "height": h, "url": f"{url}&size={t}"}
                 for t, w, h in (("s", 75, 56), ("m", 130, 97), ("x", 604, 453))]
        return {"album_id": -3, "date": int(time.time()), "id": photo_id,
                "owner_id": owner_id, "access_key": secrets.token_hex(9), "sizes": sizes,
                "text": "", "has_tags": False}

    def _peer(self, peer_id: int) -> dict:
        if peer_id >= CHAT_PEER_BASE:
            return {"id": peer_id, "type": "chat", "local_id": peer_id - CHAT_PEER_BASE}
        if peer_id < 0:
            return {"id": peer_id, "type": "group", "local_id": -peer_id}
        return {"id": peer_id, "type": "user", "local_id": peer_id}

    # ----------------------------------------------------------------- HTTP: API

    async def _api(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        params = dict(request.query)
        if request.method == "POST":
            params.update(await request.post())
        self.requests[name] += 1
        try:
            if params.get("access_token") != self.token:
                raise ApiFault(5)
            if not params.get("v"):
                raise ApiFault(8)
            handler = getattr(self, "_m_" + name.replace(".", "_"), None)
            if handler is None:
                raise ApiFault(3)
            if self.transient_rate and name == "messages.send" and \
                    self.random.random() < self.transient_rate:
                raise ApiFault(10)
            fault = self._faults[name].popleft() if self._faults.get(name) else None
            if fault and not fault[2]:
                raise ApiFault(fault[0], fault[1])
            result = handler(params)
            if fault:
                raise ApiFault(fault[0], fault[1])
            return web.json_response({"response": result})
        except ApiFault as fault:
            shown = [{"key": "method", "value": name}, {"key": "oauth", "value": "1"}]
            shown += [{"key": k, "value": str(v)} for k, v in params.items()
                      if k != "access_token"]
            return web.json_response({"error": {"error_code": fault.code,
                                                "error_msg": fault.msg,
                                                "request_params": shown}})

    def _check_group(self, params) -> None:
        if _int(params, "group_id") != self.group_id:
            raise ApiFault(15, "Access denied: no access to this group")

    def _m_groups_getById(self, params) -> Any:
        group = {"id": self.group_id, "name": self.name, "screen_name": f"club{self.group_id}",
                 "is_closed": 0, "type": "group"}
        version = tuple(int(p) for p in params["v"].split("."))
        # Since 5.194 the answer is an object; older versions answer a bare list.
        return {"groups": [group], "profiles": []} if version >= (5, 194) else [group]

    def _m_groups_getLongPollServer(self, params) -> dict:
        self._check_group(params)
        return {"key": self.lp_key, "server": f"{self.base_url}/whp/{self.group_id}",
                "ts": str(len(self.events))}

    def _m_groups_getLongPollSettings(self, params) -> dict:
        self._check_group(params)
        return json.loads(json.dumps(self.lp_settings))

    def _m_groups_setLongPollSettings(self, params) -> int:
        self._check_group(params)
        if "enabled" in params:
            self.lp_settings["is_enabled"] = params["enabled"] == "1"
        if "api_version" in params:
            self.lp_settings["api_version"] = params["api_version"]
        for event_type in list(self.lp_settings["events"]) + list(DEFAULT_LP_EVENTS):
            if event_type in params:
                self.lp_settings["events"][event_type] = int(params[event_type])
        return 1

    def _m_groups_getCallbackConfirmationCode(self, params) -> dict:
        self._check_group(params)
        return {"code": self.confirmation_code}

    def _m_users_get(self, params) -> list[dict]:
        ids = [int(i) for i in params.get("user_ids", params.get("user_id", "")).split(",")
               if i.strip()]
        return [self.users.get(i, {"id": i, "first_name": "DELETED", "last_name": "",
                                   "deactivated": "deleted"}) for i in ids]

    def _m_messages_getConversationsById(self, params) -> dict:
        items = []
        for peer_id in (int(p) for p in params.get("peer_ids", "").split(",") if p.strip()):
            allowed = peer_id in self.allowed and peer_id not in self.blocked
            item = {"peer": self._peer(peer_id), "in_read": 0, "out_read": 0,
                    "can_write": {"allowed": allowed} if allowed else
                    {"allowed": False, "reason": 901}}
            if peer_id >= CHAT_PEER_BASE:
                item["chat_settings"] = {"title": self.chats.get(peer_id, "Chat"),
                                         "members_count": 2, "state": "in"}
            items.append(item)
        return {"count": len(items), "items": items}

    def _m_messages_send(self, params) -> int:
        peer_id = _int(params, "peer_id", default=0) or _int(params, "user_id")
        random_id = _int(params, "random_id")
        message, attachment = params.get("message", ""), params.get("attachment", "")
        if not message and not attachment:
            raise ApiFault(100, "One of the parameters specified was missing or invalid: "
                                "message is empty or invalid")
        if len(message) > MAX_MESSAGE_LENGTH:
            raise ApiFault(914)
        if peer_id in self.blocked or peer_id not in self.allowed:
            raise ApiFault(901)
        now = time.monotonic()
        earlier = self._by_random_id.get((peer_id, random_id))
        if random_id and earlier and now - earlier[1] < self.random_id_window:
            return earlier[0].message_id
        self._cmids[peer_id] += 1
        sent = Sent(peer_id, random_id, message, attachment,
                    json.loads(params["keyboard"]) if params.get("keyboard") else None,
                    _int(params, "reply_to") if params.get("reply_to") else None,
                    next(self._message_ids), self._cmids[peer_id], int(time.time()))
        self.sent.append(sent)
        if random_id:
            self._by_random_id[(peer_id, random_id)] = (sent, now)
        self._event("message_reply", {
            "date": sent.date, "from_id": -self.group_id, "id": sent.message_id, "out": 1,
            "peer_id": peer_id, "text": message, "conversation_message_id":
            sent.conversation_message_id, "random_id": random_id, "attachments": []})
        return sent.message_id

    def _m_messages_edit(self, params) -> int:
        peer_id = _int(params, "peer_id")
        if "conversation_message_id" in params:
            key, value = "conversation_message_id", _int(params, "conversation_message_id")
        else:
            key, value = "message_id", _int(params, "message_id")
        found = [s for s in self.sent if s.peer_id == peer_id and getattr(s, key) == value]
        if not found:
            raise ApiFault(100, f"One of the parameters specified was missing or invalid: "
                                f"{key} is undefined")
        sent = found[0]
        if len(params.get("message", "")) > MAX_MESSAGE_LENGTH:
            raise ApiFault(914)
        sent.message = params.get("message", sent.message)
        sent.attachment = params.get("attachment", sent.attachment)
        if params.get("keyboard"):
            sent.keyboard = json.loads(params["keyboard"])
        self.edits.append({"peer_id": peer_id, "message_id": sent.message_id,
                           "conversation_message_id": sent.conversation_message_id,
                           "message": sent.message, "keyboard": sent.keyboard})
        return 1

    def _m_messages_sendMessageEventAnswer(self, params) -> int:
        data = params.get("event_data")
        self.event_answers.append({"event_id": params.get("event_id", ""),
                                   "user_id": _int(params, "user_id"),
                                   "peer_id": _int(params, "peer_id"),
                                   "event_data": json.loads(data) if data else None})
        return 1

    def _upload_url(self, kind: str, params) -> str:
        return (f"{self.base_url}/upload/{kind}?peer_id={params.get('peer_id', '')}"
                f"&gid={self.group_id}&rhash={secrets.token_hex(8)}")

    def _m_docs_getMessagesUploadServer(self, params) -> dict:
        _int(params, "peer_id")
        return {"upload_url": self._upload_url("doc", params)}

    def _m_docs_save(self, params) -> dict:
        upload = self._uploads.pop(params.get("file", ""), None)
        if upload is None:
            raise ApiFault(100, "One of the parameters specified was missing or invalid: "
                                "file is invalid")
        filename, data = upload
        ext = filename.rsplit(".", 1)[1] if "." in filename else ""
        doc = self._store_doc(-self.group_id, params.get("title") or filename, ext, data)
        return {"type": "doc", "doc": doc}

    def _m_photos_getMessagesUploadServer(self, params) -> dict:
        return {"upload_url": self._upload_url("photo", params), "album_id": -3,
                "group_id": self.group_id}

    def _m_photos_saveMessagesPhoto(self, params) -> list[dict]:
        keys = json.loads(params.get("photo") or "[]")
        if not keys or keys[0].get("photo") not in self._uploads:
            raise ApiFault(100, "One of the parameters specified was missing or invalid: "
                                "photo is undefined")
        return [self._store_photo(-self.group_id, self._uploads.pop(k["photo"])[1])
                for k in keys]

    # ----------------------------------------------------------------- HTTP: servers

    async def _upload(self, request: web.Request) -> web.Response:
        """The upload server: multipart in, an opaque reference for docs.save out."""
        form = await request.post()
        files = [(k, v) for k, v in form.items() if isinstance(v, web.FileField)]
        kind = request.match_info["kind"]
        if kind == "doc":
            files = [(k, v) for k, v in files if k == "file"]
        if not files:
            return web.json_response({"error": "file not found"})
        opaque = []
        for _, field in files:
            ref = secrets.token_hex(24)
            self._uploads[ref] = (field.filename or "file", field.file.read())
            opaque.append(ref)
        if kind == "doc":
            return web.json_response({"file": opaque[0]})
        return web.json_response({"server": 1, "hash": secrets.token_hex(16),
                                  "photo": json.dumps([{"photo": r} for r in opaque])})

    async def _download(self, request: web.Request) -> web.Response:
        data = self._files.get(request.match_info["key"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="application/octet-stream")

    async def _long_poll(self, request: web.Request) -> web.Response:
        """`?act=a_check&key&ts&wait`: answers at once when events after ts exist, else
        waits up to `wait` seconds for one."""
        self.requests["a_check"] += 1
        query = request.query
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(int(query.get("wait", "25") or 0), 90)
        while True:
            if self._lp_failures:
                return web.json_response(self._lp_failure(*self._lp_failures.popleft(),
                                                          query.get("ts", "0")))
            if query.get("key") != self.lp_key:
                return web.json_response({"failed": 2})
            ts = query.get("ts", "")
            if not ts.isdigit() or int(ts) > len(self.events):
                return web.json_response({"failed": 1, "ts": str(len(self.events))})
            remaining = deadline - loop.time()
            if int(ts) < len(self.events) or remaining <= 0:
                return web.json_response({"ts": str(len(self.events)),
                                          "updates": self.events[int(ts):]})
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _lp_failure(self, failed: int, ts: int | None, asked: str) -> dict:
        if failed == 1:
            return {"failed": 1, "ts": str(ts) if ts is not None else asked}
        self.lp_key = secrets.token_hex(20)  # 2 and 3: the key is no longer valid
        return {"failed": failed}
