"""VK delivery: a staff answer to a customer who wrote to the community (R-OUT-1).

One outbox row becomes messages.send calls to the customer's dialog (peer_id = the row's
recipient): the words alone (`Outgoing.content`), split at VK's 4096 characters, files
uploaded as documents and attached. Each call carries a random_id derived from the row id
and the part's index: VK drops a message whose random_id it has just seen, so a retry of
the same row after a lost answer sends nothing twice (R-OUT-6).

VK's answers map onto the outbox's outcomes: rate limits (6, 9), its internal error (10),
HTTP trouble and the network are worth another attempt; a refused token (5) parks the
row with the reason; a user who does not accept messages from the community (901, 902)
is unreachable there, and the message goes by their next channel (or is parked).

vk-api is synchronous: every call runs in a worker thread. vk-api retries error 6 forever
by itself; the client retries a couple of times and then the outbox's backoff takes over.
The way to VK (`[vk] api_base_url`, timeouts, error 6 bounded) is the channel's API
client, channels/vk/api.py, shared with the adapter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import requests
import vk_api

from helpgate.channels.vk.api import session
from helpgate.config.schema import Config, VkConfig
from helpgate.outbound.attachments import safe_filename
from helpgate.outbound.base import Outgoing, OutgoingFile
from helpgate.threading.message import ChatAction
from helpgate.ticketstore.outbox import DeliveryResult

MAX_LENGTH = 4096
# VK attaches at most 10 items to one message.
MAX_ATTACHMENTS = 10
TIMEOUT = (10.0, 60.0)
RETRY_CODES = {6: "too many requests per second", 9: "flood control",
               10: "VK internal error"}
REFUSED_CODES = {
    901: "the user has not allowed messages from the community (VK error 901)",
    902: "the user's privacy settings forbid messages from the community (VK error 902)",
}


def transport(config: Config) -> VkTransport | None:
    """The VK transport, when a community token is configured ([vk] token)."""
    return VkTransport(config.vk) if config.vk.token else None


def random_id(row_id: int, part: int) -> int:
    """A positive 31-bit id, the same for the same row and part every time (VK's dedupe
    key for messages.send)."""
    digest = hashlib.blake2b(f"helpgate:{row_id}:{part}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF or 1


def split(text: str, limit: int = MAX_LENGTH) -> list[str]:
    """`text` in parts of at most `limit` characters, cut at a line break or a space
    where there is one in the second half of a part."""
    parts: list[str] = []
    while len(text) > limit:
        # A break right after the part counts too (end is exclusive in rfind).
        cut = max(text.rfind("\n", limit // 2, limit + 1),
                  text.rfind(" ", limit // 2, limit + 1))
        cut = cut if cut > 0 else limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text.strip():
        parts.append(text)
    return parts


def keyboard(buttons) -> str:
    """Rows of (label, data) -> an inline keyboard of callback buttons (VK allows at
    most 6 rows of 5 in an inline keyboard; labels up to 40 characters)."""
    rows = [[(label, data) for label, data in row if ChatAction.from_data(data)]
            for row in buttons]
    return json.dumps({"inline": True, "buttons": [
        [{"action": {"type": "callback", "label": label[:40],
                     "payload": json.dumps({"a": data})}}
         for label, data in row[:5]] for row in rows[:6] if row]}, ensure_ascii=False)


class Refused(Exception):
    """VK will not take a file (its type, its size): the message goes without it."""


class VkTransport:
    channel = "vk"

    def __init__(self, config: VkConfig) -> None:
        self.config = config
        # Uploads take longer than calls: a longer read timeout.
        self.api = session(config, timeout=TIMEOUT)

    async def send(self, message: Outgoing) -> DeliveryResult:
        try:
            peer_id = int(message.recipient)
        except ValueError:
            return DeliveryResult.failed(f"{message.recipient!r} is not a VK peer id")
        try:
            await asyncio.to_thread(self._send, message, peer_id)
        except vk_api.ApiError as exc:
            return _by_code(exc)
        except (vk_api.ApiHttpError, requests.RequestException, OSError, ValueError) as exc:
            # ValueError: an answer that is not JSON (a proxy's error page).
            return DeliveryResult.retry(f"VK out of reach: {type(exc).__name__}: {exc}")
        except _Empty as exc:
            return DeliveryResult.failed(str(exc))
        return DeliveryResult.ok()

    def _send(self, message: Outgoing, peer_id: int) -> None:
        """In a worker thread: upload the files, then send the parts in order."""
        text = (message.content or message.text or "").strip()
        attached, notes = self._upload(message.attachments, peer_id)
        if notes:
            text = "\n\n".join(filter(None, [text, *notes]))
        parts = split(text)
        groups = [attached[i:i + MAX_ATTACHMENTS]
                  for i in range(0, len(attached), MAX_ATTACHMENTS)]
        if not parts and not groups:
            raise _Empty("nothing to send: the message has no text and no files")
        calls: list[dict] = [{"message": part} for part in parts] or [{}]
        if any(ChatAction.from_data(d) for row in message.buttons for _, d in row):
            # Under the last part, where the question is (callback buttons: a press
            # comes back as a message_event with the payload).
            calls[-1]["keyboard"] = keyboard(message.buttons)
        # The files go with the last part; more than one message's worth on their own.
        calls[-1]["attachment"] = ",".join(groups[0]) if groups else ""
        calls += [{"attachment": ",".join(group)} for group in groups[1:]]
        for index, values in enumerate(calls):
            values = {key: value for key, value in values.items() if value}
            self.api.method("messages.send", {"peer_id": peer_id,
                                              "random_id": random_id(message.id, index),
                                              **values})

    def _upload(self, files: tuple[OutgoingFile, ...], peer_id: int
                ) -> tuple[list[str], list[str]]:
        """("doc{owner}_{id}" per file VK took, a line of text per file it refused)."""
        attached, notes = [], []
        for item in files:
            name = safe_filename(item.filename) or "file"
            try:
                attached.append(self._upload_one(item, name, peer_id))
            except Refused as exc:
                notes.append(f"[Attachment \"{name}\" could not be sent by VK: {exc}]")
        return attached, notes

    def _upload_one(self, item: OutgoingFile, name: str, peer_id: int) -> str:
        server = self.api.method("docs.getMessagesUploadServer",
                                 {"peer_id": peer_id, "type": "doc"})
        response = self.api.http.post(server["upload_url"],
                                      files={"file": (name, item.data, item.content_type)})
        response.raise_for_status()
        uploaded = response.json()
        if "file" not in uploaded:
            raise Refused(str(uploaded.get("error") or uploaded)[:200])
        try:
            saved = self.api.method("docs.save", {"file": uploaded["file"], "title": name})
        except vk_api.ApiError as exc:
            if exc.code in RETRY_CODES or exc.code == 5:
                raise
            raise Refused(str(exc)) from None
        doc = saved.get("doc") or saved.get(saved.get("type", ""), {})
        return f"doc{doc['owner_id']}_{doc['id']}"

    async def close(self) -> None:
        self.api.http.close()


class _Empty(Exception):
    """Nothing to send (no words, no files)."""


def _by_code(exc: vk_api.ApiError) -> DeliveryResult:
    code = exc.code
    if code in RETRY_CODES:
        return DeliveryResult.retry(f"VK: {RETRY_CODES[code]} ({exc})")
    if code == 5:
        return DeliveryResult.failed(f"VK refused the token ({exc}): set [vk] token to a "
                                     "valid community access token")
    if code in REFUSED_CODES:
        # For good: the message goes by the customer's next channel (outbound/outbox.py).
        return DeliveryResult.unreachable_here(
            f"cannot write to this VK user: {REFUSED_CODES[code]}")
    return DeliveryResult.failed(f"VK refused the message: {exc}")
