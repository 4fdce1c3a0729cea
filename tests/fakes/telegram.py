"""A local fake of the Telegram Bot API, so the real aiogram runs in tests unchanged.

Tests cannot reach api.telegram.org, and mocking aiogram would only test our reading of
aiogram. This aiohttp server speaks the Bot API wire format instead (calls
`POST {base}/bot<token>/<method>`, answers `{"ok":…}` with the error code as the HTTP
status, files at `{base}/file/bot<token>/<path>`):

    async with FakeTelegram() as tg:
        api = TelegramAPIServer.from_base(tg.base_url)
        bot = Bot(tg.token, session=AiohttpSession(api=api))
        ann = tg.user(1001, "Ann")
        tg.send_text(ann, "my printer is on fire")   # an Update for getUpdates / webhook
        ...                                          # run the bot
        assert tg.sent[-1]["text"] == "We are on it"

Three sides: the Bot API the bot calls (the `api_<Method>` coroutines), the customer
side a test drives (`user`, `group`, `send_text`, `press_button`, … queue Updates and
`deliver_webhook` POSTs them), and faults (`fail_next`, `block`, `go_down`/`come_up`).
All state lives on the FakeTelegram object, not in the aiohttp app, so the listener can
go down and come back on the same port without forgetting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import html
import json
import mimetypes
import random
import re
import secrets
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

DEFAULT_TOKEN = "123456:TEST-token"
MAX_TEXT, MAX_CAPTION = 4096, 1024            # characters after entity parsing
MAX_DOWNLOAD = 20 * 1024 * 1024               # getFile: bots download at most 20 MB
MAX_UPLOAD = {"photo": 10 * 1024 * 1024, "document": 50 * 1024 * 1024}
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
COMMAND = re.compile(r"[a-z0-9_]{1,32}")
# Update types a bot gets only when it asks for them in allowed_updates.
OPT_IN_UPDATES = {"chat_member", "message_reaction", "message_reaction_count"}
HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
             "a", "code", "pre", "blockquote", "tg-emoji"}
TAG = re.compile(r"<(/?)([a-zA-Z][\w-]*)(\s[^<>]*)?>")
# The rights getChatMember reports for the bot as an administrator (all fields aiogram
# 3.31 requires); a test narrows them with group(rights={...}).
ADMIN_RIGHTS = {
    "is_anonymous": False, "can_manage_chat": True, "can_delete_messages": True,
    "can_manage_video_chats": True, "can_restrict_members": True, "can_promote_members": False,
    "can_change_info": True, "can_invite_users": True, "can_post_stories": False,
    "can_edit_stories": False, "can_delete_stories": False, "can_send_welcome_messages": False,
    "can_pin_messages": True, "can_manage_topics": True,
}
DEFAULT_DESCRIPTION = {
    400: "Bad Request: chat not found", 401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user", 404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; "
         "make sure that only one bot instance is running",
    500: "Internal Server Error", 502: "Bad Gateway",
}
NOT_MODIFIED = ("message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")
# Sends the fake refuses with 403 in a blocked chat (the real API does the same).
SENDING = ("send", "edit", "copy", "forward")


class TelegramError(Exception):
    """An error answer. The HTTP status is the error_code: aiogram picks its exception
    class (TelegramRetryAfter, TelegramForbiddenError, …) from the status."""

    def __init__(self, status: int, description: str, retry_after: int | None = None):
        super().__init__(description)
        self.status, self.description, self.retry_after = status, description, retry_after

    def body(self) -> dict:
        body = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad(description: str) -> TelegramError:
    return TelegramError(400, f"Bad Request: {description}")


def now() -> int:
    return int(time.time())


class Queued(dict):
    """What a customer-side helper returns: the message (or callback query) as the bot
    will see it. `.update` is the whole Update carrying it, for deliver_webhook; None
    when Telegram would not deliver it (privacy mode, allowed_updates)."""

    update: dict | None = None


class Params:
    """The parameters of one call. aiogram sends multipart form fields: strings, objects
    as JSON strings, uploads as `<field>=attach://<part>` plus a file part. Other clients
    send urlencoded forms, JSON bodies or query strings; all end up here."""

    def __init__(self, values: dict[str, Any], files: dict[str, tuple[str, bytes]]):
        self.values, self.files = values, files

    @classmethod
    async def read(cls, request: web.Request) -> Params:
        values: dict[str, Any] = dict(request.query)
        files: dict[str, tuple[str, bytes]] = {}
        if request.content_type == "application/json":
            body = await request.json()
            values.update(body if isinstance(body, dict) else {})
        elif request.body_exists:
            for key, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    files[key] = (value.filename, value.file.read())
                else:
                    values[key] = value
        return cls(values, files)

    def get(self, name: str, default: Any = None) -> Any:
        value = self.values.get(name)
        return default if value in (None, "") else value

    def need(self, name: str) -> Any:
        value = self.get(name)
        if value is None:
            raise bad(f"{name} is empty")
        return value

    def int(self, name: str, default: int | None = None) -> int | None:
        value = self.get(name)
        try:
            return default if value is None else int(value)
        except ValueError:
            raise bad(f"invalid {name} specified") from None

    def flag(self, name: str) -> bool:
        return self.get(name) in (True, "true", "True", "1")

    def json(self, name: str) -> Any:
        value = self.get(name)
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            raise bad(f"can't parse {name} JSON object") from None

    def file(self, name: str) -> tuple[str, bytes] | str:
        """An upload as (filename, bytes), or the file_id / URL string that stands for one."""
        value = self.need(name) if name not in self.files else None
        if value is None:
            return self.files[name]
        if isinstance(value, str) and value.startswith("attach://"):
            if value[9:] not in self.files:
                raise bad("wrong file identifier/HTTP URL specified")
            return self.files[value[9:]]
        return value


def html_to_plain(text: str) -> str:
    """The text a customer sees for parse_mode=HTML; raises on markup Telegram refuses
    (every `<` must open or close a supported tag, and tags must nest). The error texts
    follow those of the real API."""
    out, stack, pos = [], [], 0
    for match in re.finditer("<", text):
        start = match.start()
        if start < pos:
            continue
        out.append(text[pos:start])
        tag = TAG.match(text, start)
        offset = len(text[:start].encode())
        if tag is None:
            raise bad(f"can't parse entities: Unexpected end of name token at byte offset "
                      f"{offset}")
        closing, name = tag.group(1), tag.group(2).lower()
        if name not in HTML_TAGS:
            raise bad(f'can\'t parse entities: Unsupported start tag "{name}" at byte offset '
                      f"{offset}")
        if not closing:
            stack.append(name)
        elif not stack or stack.pop() != name:
            raise bad(f"can't parse entities: Unexpected end tag at byte offset {offset}")
        pos = tag.end()
    if stack:
        raise bad(f'can\'t parse entities: Can\'t find end tag corresponding to start tag '
                  f'"{stack[-1]}"')
    return html.unescape("".join(out) + text[pos:])


class _Poll:
    """The one getUpdates call allowed to wait; a newer call or setWebhook ends it."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.terminated: str | None = None


class FakeTelegram:
    """The Bot API of one bot on 127.0.0.1 (port 0); see the module docstring."""

    def __init__(self, token: str = DEFAULT_TOKEN, *, username: str = "helpgate_bot",
                 first_name: str = "Helpgate") -> None:
        self.token = token
        self.tokens = {token}                 # remove one to see 401 Unauthorized
        self.bot = {"id": int(token.split(":")[0]), "is_bot": True,
                    "first_name": first_name, "username": username}
        self.privacy = True                   # group privacy mode, on for every new bot
        self.users: dict[int, dict] = {}
        self.chats: dict[int, dict] = {}
        self.members: dict[int, set[int]] = {}   # group id -> user ids in it
        self.owners: dict[int, dict] = {}        # group id -> its creator
        self.bot_rights: dict[int, dict | None] = {}  # group id -> admin rights, None: member
        self.messages: dict[tuple[int, int], dict] = {}
        self.topics: dict[tuple[int, int], dict] = {}
        self.files: dict[str, dict] = {}
        self.sent: list[dict] = []            # every message the bot sent or edited
        self.actions: list[dict] = []         # sendChatAction calls
        self.callback_answers: dict[str, dict] = {}
        self.commands: dict[tuple[str, str], list] = {}
        self.requests: Counter[str] = Counter()   # calls per method name
        self.webhook: dict | None = None
        self.blocked: set[int] = set()
        self._updates: list[dict] = []        # unconfirmed, oldest first
        self._update_id = 10000
        self._message_ids: Counter[int] = Counter()
        self._serial = 0
        self._allowed: set[str] | None = None
        self._open_queries: set[str] = set()
        self._faults: list[list] = []
        # A share of sendMessage calls that fail with 502 at random, nothing sent
        # (bench/outbox.py).
        self.transient_rate = 0.0
        self.random = random.Random(18)
        self._poll: _Poll | None = None
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._methods = {name[4:].lower(): name[4:] for name in dir(self)
                         if name.startswith("api_")}

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeTelegram:
        await self.come_up()
        return self

    async def __aexit__(self, *exc) -> None:
        self._closing = True
        if self._poll:                        # answer a waiting long poll now, not later
            self._poll.wake.set()
        await self.go_down()

    async def come_up(self) -> None:
        """Listen (again) on the same port; the first start picks a free one."""
        app = web.Application(client_max_size=MAX_UPLOAD["document"] + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        # A short shutdown timeout: going down cuts a waiting long poll as an outage would.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def go_down(self) -> None:
        """Stop listening and drop every connection; state is kept for come_up()."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- HTTP ------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] not in self.tokens:
            return web.json_response(TelegramError(401, "Unauthorized").body(), status=401)
        try:
            body = await self._call(request.match_info["method"], await Params.read(request))
        except TelegramError as error:
            return web.json_response(error.body(), status=error.status)
        return web.json_response(body)

    async def _handle_file(self, request: web.Request) -> web.Response:
        found = [f for f in self.files.values() if f["file_path"] == request.match_info["path"]]
        if request.match_info["token"] not in self.tokens:
            return web.json_response(TelegramError(401, "Unauthorized").body(), status=401)
        if not found:
            return web.json_response(TelegramError(404, "Not Found").body(), status=404)
        return web.Response(body=found[0]["data"], content_type="application/octet-stream")

    async def _call(self, name: str, params: Params) -> dict:
        method = self._methods.get(name.lower())   # method names are case-insensitive
        if method is None:
            raise TelegramError(404, "Not Found")
        self.requests[method] += 1
        self._take_fault(method)
        result = await getattr(self, "api_" + method)(params)
        # A few methods answer with a description beside the result.
        if isinstance(result, tuple):
            return {"ok": True, "result": result[0], "description": result[1]}
        return {"ok": True, "result": result}

    # ---- faults ----------------------------------------------------------------------

    def fail_next(self, method: str, status: int, description: str | None = None,
                  retry_after: int | None = None, times: int = 1) -> None:
        """The next `times` calls of `method` ("*": any) answer this error instead.
        429 without retry_after means retry after 1 s."""
        if status == 429:
            retry_after = 1 if retry_after is None else retry_after
            description = description or f"Too Many Requests: retry after {retry_after}"
        self._faults.append([method.lower(), status, description or DEFAULT_DESCRIPTION.get(
            status, "Internal Server Error"), retry_after, times])

    def _take_fault(self, method: str) -> None:
        if self.transient_rate and method == "sendMessage" and \
                self.random.random() < self.transient_rate:
            raise TelegramError(502, "Bad Gateway")
        for fault in self._faults:
            if fault[0] in ("*", method.lower()):
                fault[4] -= 1
                if fault[4] <= 0:
                    self._faults.remove(fault)
                raise TelegramError(fault[1], fault[2], fault[3])

    def block(self, chat_id: int) -> None:
        """The customer blocked the bot (or kicked it from the group): every send is 403."""
        self.blocked.add(chat_id)

    def unblock(self, chat_id: int) -> None:
        self.blocked.discard(chat_id)

    # ---- the customer side -----------------------------------------------------------

    def user(self, id: int, first_name: str, username: str | None = None, *,
             last_name: str | None = None, language_code: str | None = None) -> dict:
        """A Telegram user who has started the bot: the private chat exists."""
        user = {"id": id, "is_bot": False, "first_name": first_name, "last_name": last_name,
                "username": username, "language_code": language_code}
        user = self.users[id] = {k: v for k, v in user.items() if v is not None}
        self.chats[id] = {k: v for k, v in {"id": id, "type": "private", "first_name": first_name,
                          "last_name": last_name, "username": username}.items() if v}
        return user

    def group(self, title: str = "Support", *, forum: bool = False, supergroup: bool = True,
              admin: bool = True, rights: dict | None = None, members: tuple = (),
              chat_id: int | None = None) -> dict:
        """A group the bot is in, as administrator (ADMIN_RIGHTS updated with `rights`) or
        as a plain member; forums need a supergroup."""
        self._serial += 1
        chat_id = chat_id or (-1001000000000 - self._serial if supergroup else -self._serial)
        chat = {"id": chat_id, "type": "supergroup" if supergroup else "group", "title": title}
        if forum:
            chat["is_forum"] = True
        self.chats[chat_id] = chat
        owner = self.owners[chat_id] = {"id": 900000 + self._serial, "is_bot": False,
                                        "first_name": "Owner"}
        self.members[chat_id] = {owner["id"]} | {u["id"] for u in members}
        self.bot_rights[chat_id] = {**ADMIN_RIGHTS, **(rights or {})} if admin else None
        return chat

    def send_text(self, from_user: dict, text: str, chat: dict | int | None = None,
                  reply_to: dict | int | None = None, thread_id: int | None = None,
                  entities: list | None = None) -> Queued:
        return self._incoming(from_user, chat, reply_to, thread_id, text=text,
                              entities=entities)

    def send_photo(self, from_user: dict, data: bytes, caption: str | None = None,
                   chat: dict | int | None = None, thread_id: int | None = None,
                   width: int = 1280, height: int = 960) -> Queued:
        """A photo in two sizes, largest last as Telegram sends them. The thumbnail holds
        only a prefix of the bytes, so code that takes photo[0] gets the wrong file."""
        sizes = []
        for scale, chunk in ((4, data[:max(1, len(data) // 16)]), (1, data)):
            file = self._register_file("photos", "photo.jpg", chunk, "image/jpeg")
            sizes.append({**self._file_ref(file), "width": width // scale,
                          "height": height // scale})
        return self._incoming(from_user, chat, None, thread_id, photo=sizes, caption=caption)

    def send_document(self, from_user: dict, data: bytes, file_name: str,
                      mime_type: str = "application/octet-stream", size: int | None = None,
                      caption: str | None = None, chat: dict | int | None = None,
                      thread_id: int | None = None) -> Queued:
        """A document; `size` claims a file_size beyond the bytes, to test the 20 MB limit."""
        file = self._register_file("documents", file_name, data, mime_type, size)
        return self._incoming(from_user, chat, None, thread_id, caption=caption,
                              document={**self._file_ref(file), "file_name": file_name,
                                        "mime_type": mime_type})

    def share_contact(self, from_user: dict, phone: str, chat: dict | int | None = None) -> Queued:
        contact = {"phone_number": phone, "first_name": from_user["first_name"],
                   "last_name": from_user.get("last_name"), "user_id": from_user["id"]}
        return self._incoming(from_user, chat, None, None,
                              contact={k: v for k, v in contact.items() if v is not None})

    def edit_text(self, message: dict, new_text: str) -> Queued:
        """The customer edits a message: an edited_message update with edit_date."""
        stored = self.messages[(message["chat"]["id"], message["message_id"])]
        stored.update(text=new_text, edit_date=max(now(), stored["date"] + 1))
        return self._queue("edited_message", stored)

    def press_button(self, from_user: dict, message: dict, callback_data: str) -> Queued:
        """The customer presses an inline button of a bot message: a callback_query."""
        stored = self.messages.get((message["chat"]["id"], message["message_id"]), message)
        self._serial += 1
        query_id = f"{self.bot['id']}{self._serial:010d}"
        self._open_queries.add(query_id)
        return self._queue("callback_query", {
            "id": query_id, "from": from_user, "message": stored, "data": callback_data,
            "chat_instance": str(abs(hash((self.bot["id"], stored["chat"]["id"]))))})

    def delete_topic(self, chat_id: int, thread_id: int) -> None:
        """Someone deleted the topic in the app (no update tells the bot)."""
        self.topics[(chat_id, thread_id)]["deleted"] = True

    @property
    def pending(self) -> list[dict]:
        """The updates not yet confirmed by a getUpdates offset or a webhook answer."""
        return list(self._updates)

    @property
    def polling(self) -> bool:
        """Whether a getUpdates call is waiting right now."""
        return self._poll is not None

    def _chat_id(self, chat: dict | int | None, user: dict | None = None) -> int:
        return user["id"] if chat is None else chat if isinstance(chat, int) else chat["id"]

    def _incoming(self, from_user, chat, reply_to, thread_id, **content) -> Queued:
        chat_id = self._chat_id(chat, from_user)
        if isinstance(reply_to, int):
            reply_to = self.messages[(chat_id, reply_to)]
        if chat_id in self.members:
            self.members[chat_id].add(from_user["id"])
        thread = self._thread(chat_id, thread_id)
        message = self._new_message(chat_id, from_user, thread, reply_to, **content)
        if not self._bot_sees(message):
            return Queued(message)
        return self._queue("message", message)

    def _bot_sees(self, message: dict) -> bool:
        """Privacy mode: in a group where it is no admin, a bot gets only commands,
        mentions and replies to its own messages."""
        chat_id = message["chat"]["id"]
        if message["chat"]["type"] == "private" or not self.privacy or self.bot_rights.get(
                chat_id):
            return True
        text = message.get("text") or message.get("caption") or ""
        replied = message.get("reply_to_message", {}).get("from", {}).get("id")
        return (text.startswith("/") or f"@{self.bot['username']}" in text
                or replied == self.bot["id"])

    def _queue(self, kind: str, payload: dict) -> Queued:
        queued = Queued(payload)
        wanted = kind in self._allowed if self._allowed is not None else (
            kind not in OPT_IN_UPDATES)
        if wanted:
            self._update_id += 1
            # A snapshot: a later edit is a new update, it does not rewrite this one.
            queued.update = {"update_id": self._update_id, kind: copy.deepcopy(payload)}
            self._updates.append(queued.update)
            if self._poll:
                self._poll.wake.set()
        return queued

    # ---- messages, topics, files -----------------------------------------------------

    def _new_message(self, chat_id: int, sender: dict, thread: int | None = None,
                     reply_to: dict | None = None, **content) -> dict:
        self._message_ids[chat_id] += 1       # one counter per chat, both directions
        message = {"message_id": self._message_ids[chat_id], "from": sender,
                   "chat": dict(self.chats[chat_id]), "date": now()}
        if thread is not None:
            # Telegram's quirk: a message in a topic replies to the topic's first message.
            message.update(message_thread_id=thread, is_topic_message=True)
            reply_to = reply_to or self.messages.get((chat_id, thread))
        if reply_to:
            message["reply_to_message"] = {k: v for k, v in reply_to.items()
                                           if k != "reply_to_message"}
        message.update({k: v for k, v in content.items() if v is not None})
        self.messages[(chat_id, message["message_id"])] = message
        return message

    def _thread(self, chat_id: int, thread_id: int | None) -> int | None:
        if thread_id is None or not self.chats[chat_id].get("is_forum"):
            return None
        topic = self.topics.get((chat_id, thread_id))
        if topic is None or topic["deleted"]:
            raise bad("message thread not found")
        return thread_id

    def _create_topic(self, chat_id: int, sender: dict, name: str, icon_color: int = 7322096,
                      emoji: str | None = None) -> dict:
        created = {"name": name, "icon_color": icon_color, "icon_custom_emoji_id": emoji}
        message = self._new_message(chat_id, sender, forum_topic_created={
            k: v for k, v in created.items() if v is not None})
        thread = message["message_id"]        # a topic is named by its first message
        message.update(message_thread_id=thread, is_topic_message=True)
        self.topics[(chat_id, thread)] = {"message_thread_id": thread, **created,
                                          "closed": False, "deleted": False}
        return message

    def _register_file(self, folder: str, name: str, data: bytes, mime_type: str | None,
                       size: int | None = None) -> dict:
        self._serial += 1
        suffix = name.rsplit(".", 1)[-1] if "." in name else "bin"
        file = {"file_id": f"F{self._serial:05d}{secrets.token_urlsafe(12)}",
                "file_unique_id": f"U{self._serial:05d}", "data": data, "file_name": name,
                "mime_type": mime_type, "file_size": len(data) if size is None else size,
                "file_path": f"{folder}/file_{self._serial}.{suffix}"}
        self.files[file["file_id"]] = file
        return file

    @staticmethod
    def _file_ref(file: dict) -> dict:
        return {k: file[k] for k in ("file_id", "file_unique_id", "file_size")}

    # ---- webhook delivery ------------------------------------------------------------

    async def deliver_webhook(self, update: dict, url: str | None = None,
                              secret: str | None = None) -> int:
        """POST one update (an Update or what a helper returned) as Telegram does, with the
        registered secret header (`secret` overrides it; "" sends none); a 2xx answer
        confirms the update. Returns the HTTP status."""
        update = update.update if isinstance(update, Queued) else update
        if update is None:
            raise ValueError("Telegram would not deliver this update")
        hook = self.webhook or {}
        url = url or hook.get("url")
        if not url:
            raise RuntimeError("no webhook is set and no url given")
        secret = hook.get("secret_token") if secret is None else secret
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
        async with aiohttp.ClientSession() as session, session.post(
                url, json=update, headers=headers) as response:
            status, reason = response.status, response.reason
        if 200 <= status < 300:
            self._updates = [u for u in self._updates if u["update_id"] != update["update_id"]]
        elif self.webhook is not None:
            self.webhook.update(last_error_date=now(), last_error_message=(
                f"Wrong response from the webhook: {status} {reason}"))
        return status

    # ---- Bot API: bot and updates ----------------------------------------------------

    async def api_getMe(self, p: Params) -> dict:
        return {**self.bot, "can_join_groups": True,
                "can_read_all_group_messages": not self.privacy,
                "supports_inline_queries": False}

    async def api_getUpdates(self, p: Params) -> list[dict]:
        if self.webhook:
            raise TelegramError(409, "Conflict: can't use getUpdates method while webhook is "
                                     "active; use deleteWebhook to delete the webhook first")
        self._confirm(p.int("offset", 0))
        limit = min(max(p.int("limit", 100), 1), 100)
        if p.get("allowed_updates") is not None:
            self._allowed = set(p.json("allowed_updates")) or None
        if self._poll:                        # the newer call wins, the older gets 409
            self._poll.terminated = DEFAULT_DESCRIPTION[409]
            self._poll.wake.set()
        poll = self._poll = _Poll()
        deadline = asyncio.get_running_loop().time() + max(p.int("timeout", 0), 0)
        try:
            while True:
                if poll.terminated:
                    raise TelegramError(409, poll.terminated)
                left = deadline - asyncio.get_running_loop().time()
                if self._updates or left <= 0 or self._closing:
                    return self._updates[:limit]
                poll.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(poll.wake.wait(), left)
        finally:
            if self._poll is poll:
                self._poll = None

    def _confirm(self, offset: int) -> None:
        """offset confirms every update below it; a negative one keeps the last -offset."""
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]

    async def api_setWebhook(self, p: Params) -> tuple:
        url, secret = p.get("url"), p.get("secret_token")
        if not url:
            return await self.api_deleteWebhook(p)
        if secret is not None and not SECRET_TOKEN.fullmatch(secret):
            raise bad("secret token contains unallowed characters")
        # Unlike Telegram, plain http is accepted: the bot's webhook server is local.
        self.webhook = {"url": url, "secret_token": secret,
                        "max_connections": p.int("max_connections", 40)}
        if p.get("allowed_updates") is not None:
            self._allowed = set(p.json("allowed_updates")) or None
        if p.flag("drop_pending_updates"):
            self._updates.clear()
        if self._poll:
            self._poll.terminated = "Conflict: terminated by setWebhook request"
            self._poll.wake.set()
        return True, "Webhook was set"

    async def api_deleteWebhook(self, p: Params) -> tuple:
        if p.flag("drop_pending_updates"):
            self._updates.clear()
        was, self.webhook = self.webhook, None
        return True, "Webhook was deleted" if was else "Webhook is already deleted"

    async def api_getWebhookInfo(self, p: Params) -> dict:
        info = {"url": "", "has_custom_certificate": False,
                "pending_update_count": len(self._updates)}
        if self.webhook:
            info.update({k: v for k, v in self.webhook.items() if k != "secret_token"})
            if self._allowed is not None:
                info["allowed_updates"] = sorted(self._allowed)
        return info

    # ---- Bot API: sending ------------------------------------------------------------

    def _target(self, p: Params) -> int:
        raw = p.need("chat_id")
        if isinstance(raw, str) and raw.startswith("@"):
            ids = [c["id"] for c in self.chats.values() if c.get("username") == raw[1:]]
            raw = ids[0] if ids else 0
        try:
            chat_id = int(raw)
        except ValueError:
            raise bad("chat not found") from None
        if chat_id not in self.chats:
            raise bad("chat not found")
        return chat_id

    def _sending_to(self, p: Params, method: str) -> int:
        chat_id = self._target(p)
        if chat_id in self.blocked and method.lower().startswith(SENDING):
            kind = self.chats[chat_id]["type"]
            raise TelegramError(403, "Forbidden: bot was blocked by the user" if kind == "private"
                                else f"Forbidden: bot was kicked from the {kind} chat")
        return chat_id

    @staticmethod
    def _plain(p: Params, field: str = "text") -> str | None:
        """The text or caption as the customer sees it, checked against its limit."""
        text = p.get(field)
        if text is None:
            if field == "text":
                raise bad("message text is empty")
            return None
        plain = html_to_plain(text) if (p.get("parse_mode") or "").lower() == "html" else text
        if len(plain) > (MAX_TEXT if field == "text" else MAX_CAPTION):
            raise bad("message is too long" if field == "text" else "message caption is too long")
        return plain

    @staticmethod
    def _markup(p: Params) -> dict | None:
        markup = p.json("reply_markup")
        for row in (markup or {}).get("inline_keyboard", []):
            for button in row:
                if "callback_data" in button and not 1 <= len(
                        button["callback_data"].encode()) <= 64:
                    raise bad("BUTTON_DATA_INVALID")
        return markup

    def _send(self, p: Params, method: str, record: dict | None = None, **content) -> dict:
        """Checks shared by the send methods, then the message and its record in sent."""
        chat_id = self._sending_to(p, method)
        thread = self._thread(chat_id, p.int("message_thread_id"))
        if thread is not None and self.topics[(chat_id, thread)]["closed"] and not (
                self.bot_rights.get(chat_id) or {}).get("can_manage_topics"):
            raise bad("TOPIC_CLOSED")
        reply = p.json("reply_parameters") or {}
        reply_id = reply.get("message_id") or p.int("reply_to_message_id")
        reply_to = self.messages.get((chat_id, int(reply_id))) if reply_id else None
        if reply_id and reply_to is None and not (
                reply.get("allow_sending_without_reply") or p.flag("allow_sending_without_reply")):
            raise bad("message to be replied not found")
        markup = self._markup(p)
        message = self._new_message(chat_id, self.bot, thread, reply_to, **content)
        if markup and "inline_keyboard" in markup:   # only inline keyboards come back
            message["reply_markup"] = markup
        self._record(p, method, message, markup, **(record or {}))
        return message

    def _record(self, p: Params, method: str, message: dict, markup: dict | None,
                **extra) -> None:
        """An entry of `sent`: what the bot asked for (text with its markup as sent) and
        the message as the customer sees it."""
        asked = (p.json("reply_parameters") or {}).get("message_id") or p.int(
            "reply_to_message_id")
        self.sent.append({
            "method": method, "chat_id": message["chat"]["id"],
            "message_id": message["message_id"],
            "message_thread_id": message.get("message_thread_id"), "text": p.get("text"),
            "caption": p.get("caption"), "parse_mode": p.get("parse_mode"),
            "reply_markup": markup, "reply_to_message_id": asked and int(asked),
            **extra, "message": message})

    async def api_sendMessage(self, p: Params) -> dict:
        return self._send(p, "sendMessage", text=self._plain(p))

    async def _send_file(self, p: Params, kind: str, method: str) -> dict:
        caption = self._plain(p, "caption")
        upload = p.file(kind)
        if isinstance(upload, tuple):
            if len(upload[1]) > MAX_UPLOAD[kind]:
                raise TelegramError(413, "Request Entity Too Large")
            # Telegram guesses the MIME type from the name, as mimetypes does.
            mime_type = None if kind == "photo" else mimetypes.guess_type(upload[0])[0]
            file = self._register_file(kind + "s", upload[0], upload[1], mime_type)
            record = {"data": upload[1], "filename": upload[0]}
        elif upload in self.files:            # a file_id sends a known file again; a URL
            # (Telegram would fetch it) is refused below, as an unknown file_id is
            file = self.files[upload]
            record = {"data": file["data"], "filename": file["file_name"], "file_id": upload}
        else:
            raise bad("wrong file identifier/HTTP URL specified")
        if kind == "photo":
            content = {"photo": [{**self._file_ref(file), "width": 1280, "height": 960}]}
        else:
            content = {"document": {**self._file_ref(file), "file_name": file["file_name"],
                                    **({"mime_type": file["mime_type"]} if file["mime_type"]
                                       else {})}}
        return self._send(p, method, record, caption=caption, **content)

    async def api_sendPhoto(self, p: Params) -> dict:
        return await self._send_file(p, "photo", "sendPhoto")

    async def api_sendDocument(self, p: Params) -> dict:
        return await self._send_file(p, "document", "sendDocument")

    async def api_editMessageText(self, p: Params) -> dict:
        text = self._plain(p)
        chat_id = self._sending_to(p, "editMessageText")
        message = self.messages.get((chat_id, p.int("message_id", 0)))
        if message is None or message["from"]["id"] != self.bot["id"]:
            raise bad("message to edit not found" if message is None
                      else "message can't be edited")
        markup = self._markup(p)
        markup = markup if markup and "inline_keyboard" in markup else None
        if text == message.get("text") and markup == message.get("reply_markup"):
            raise bad(NOT_MODIFIED)
        message.update(text=text, edit_date=now())
        message.pop("reply_markup", None)
        if markup:
            message["reply_markup"] = markup
        self._record(p, "editMessageText", message, markup)
        return message

    async def api_answerCallbackQuery(self, p: Params) -> bool:
        query_id = str(p.need("callback_query_id"))
        if query_id not in self._open_queries:
            raise bad("query is too old and response timeout expired or query ID is invalid")
        self._open_queries.discard(query_id)
        self.callback_answers[query_id] = {"text": p.get("text"),
                                           "show_alert": p.flag("show_alert"),
                                           "url": p.get("url")}
        return True

    async def api_sendChatAction(self, p: Params) -> bool:
        chat_id = self._sending_to(p, "sendChatAction")
        self.actions.append({"chat_id": chat_id, "action": p.need("action"),
                             "message_thread_id": p.int("message_thread_id")})
        return True

    # ---- Bot API: files, chats, topics, commands -------------------------------------

    async def api_getFile(self, p: Params) -> dict:
        file = self.files.get(p.need("file_id"))
        if file is None:
            raise bad("invalid file_id")
        if file["file_size"] > MAX_DOWNLOAD:
            raise bad("file is too big")
        return {**self._file_ref(file), "file_path": file["file_path"]}

    async def api_getChat(self, p: Params) -> dict:
        chat = self.chats[self._target(p)]
        gifts = dict.fromkeys(("unlimited_gifts", "limited_gifts", "unique_gifts",
                               "premium_subscription", "gifts_from_channels"), False)
        return {**chat, "accent_color_id": 0, "max_reaction_count": 11,
                "accepted_gift_types": gifts}

    def _member(self, chat_id: int, user_id: int) -> dict:
        if user_id == self.bot["id"]:
            rights = self.bot_rights.get(chat_id)
            if rights:
                return {"status": "administrator", "user": self.bot, "can_be_edited": False,
                        **rights}
            return {"status": "member", "user": self.bot}
        owner = self.owners.get(chat_id)
        if owner and owner["id"] == user_id:
            return {"status": "creator", "user": owner, "is_anonymous": False}
        if user_id not in self.users:
            raise bad("user not found")
        inside = user_id == chat_id or user_id in self.members.get(chat_id, ())
        return {"status": "member" if inside else "left", "user": self.users[user_id]}

    async def api_getChatMember(self, p: Params) -> dict:
        return self._member(self._target(p), p.int("user_id", 0))

    async def api_getChatAdministrators(self, p: Params) -> list[dict]:
        chat_id = self._target(p)
        if chat_id not in self.owners:
            raise bad("there are no administrators in the private chat")
        admins = [self._member(chat_id, self.owners[chat_id]["id"])]
        if self.bot_rights.get(chat_id):
            admins.append(self._member(chat_id, self.bot["id"]))
        return admins

    def _topic_rights(self, p: Params) -> int:
        chat_id = self._target(p)
        if not self.chats[chat_id].get("is_forum"):
            raise bad("the chat is not a forum")
        if not (self.bot_rights.get(chat_id) or {}).get("can_manage_topics"):
            raise bad("not enough rights to manage topics")
        return chat_id

    def _existing_topic(self, p: Params) -> dict:
        topic = self.topics.get((self._topic_rights(p), p.int("message_thread_id", 0)))
        if topic is None or topic["deleted"]:
            raise bad("TOPIC_ID_INVALID")
        return topic

    async def api_createForumTopic(self, p: Params) -> dict:
        chat_id = self._topic_rights(p)
        message = self._create_topic(chat_id, self.bot, p.need("name"),
                                     p.int("icon_color", 7322096),
                                     p.get("icon_custom_emoji_id"))
        topic = self.topics[(chat_id, message["message_thread_id"])]
        return {k: v for k, v in topic.items() if k not in ("closed", "deleted") and v is not None}

    async def api_editForumTopic(self, p: Params) -> bool:
        topic = self._existing_topic(p)
        changes = {k: p.get(k) for k in ("name", "icon_custom_emoji_id") if p.get(k) is not None}
        if all(topic.get(k) == v for k, v in changes.items()):
            raise bad("TOPIC_NOT_MODIFIED")
        topic.update(changes)
        return True

    async def api_closeForumTopic(self, p: Params) -> bool:
        topic = self._existing_topic(p)
        if topic["closed"]:
            raise bad("TOPIC_NOT_MODIFIED")
        topic["closed"] = True
        return True

    async def api_deleteForumTopic(self, p: Params) -> bool:
        self._existing_topic(p)["deleted"] = True
        return True

    @staticmethod
    def _commands_key(p: Params) -> tuple[str, str]:
        scope = p.json("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), p.get("language_code", "")

    async def api_setMyCommands(self, p: Params) -> bool:
        commands = p.json("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise bad("commands must be a list of at most 100 commands")
        for command in commands:
            if not COMMAND.fullmatch(command.get("command", "")):
                raise bad("BOT_COMMAND_INVALID")
            if not 1 <= len(command.get("description", "")) <= 256:
                raise bad("BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._commands_key(p)] = commands
        return True

    async def api_getMyCommands(self, p: Params) -> list[dict]:
        return self.commands.get(self._commands_key(p), [])

    async def api_deleteMyCommands(self, p: Params) -> bool:
        self.commands.pop(self._commands_key(p), None)
        return True
