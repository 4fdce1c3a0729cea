"""SMSC.ru: send, balance, and a message looked up by our own id.

SMSC takes an id of the sender's choosing with each message (`id`, 1..2147483647) and
answers `/sys/status.php` by phone and that id; helpgate gives the outbox row's id, so
after a timeout it can ask whether the message arrived instead of guessing. Answers are
JSON with `fmt=3`: `{"id": 1, "cnt": 1}`, or `{"error": "…", "error_code": N}` (with HTTP
200). Login and password, or an API key alone, authenticate every call.
"""

from __future__ import annotations

from typing import Any

from helpgate.channels.sms.api import (
    Balance,
    Http,
    NoAnswer,
    Refused,
    Sent,
    Unavailable,
    digits,
    require,
)
from helpgate.config.schema import SmsConfig

BASE_URL = "https://smsc.ru"
MAX_ID = 2_147_483_647
# error_code -> what it means; the retryable ones may pass (a temporary block, a burst).
REFUSED = {
    1: "a parameter is wrong",
    2: "the login or password is wrong (set sms.login and sms.password, or sms.api_key)",
    3: "the account has no money left: top it up at SMSC.ru",
    5: "a date is wrong",
    6: "the message is forbidden (its text or the sender name sms.sender)",
    7: "the phone number is wrong",
    8: "the message cannot be delivered to this number",
}
RETRYABLE = {
    4: "this IP address is blocked for a while (too many wrong requests)",
    9: "too many requests at once, or the same message to the same number within a minute",
}
WHAT = {2: "credentials", 3: "money", 7: "number", 8: "number"}
# status.php: the message is not known to SMSC.
NOT_FOUND = -3


class SmscGateway:
    title = "SMSC.ru"
    tracks_our_id = True

    def __init__(self, settings: SmsConfig) -> None:
        if not settings.api_key:
            require(settings, self.title, "login", "password")
        self.settings = settings
        self.base_url = settings.base_url or BASE_URL
        self.http = Http(self.title, self.base_url, settings.timeout)

    def _auth(self) -> dict[str, str]:
        if self.settings.api_key:
            return {"apikey": self.settings.api_key}
        return {"login": self.settings.login, "psw": self.settings.password}

    async def _call(self, path: str, values: dict[str, Any]) -> dict:
        answer = await self.http.request("POST", path, form={
            **self._auth(), **values, "charset": "utf-8", "fmt": "3"})
        body = answer.json(self.title)
        if not isinstance(body, dict):
            raise NoAnswer(f"{self.title} answered something unexpected: {str(body)[:120]}")
        if "error_code" in body or "error" in body:
            code = _int(body.get("error_code"))
            words = body.get("error") or "no description"
            if code in RETRYABLE:
                raise Unavailable(f"{self.title} error {code}: {RETRYABLE[code]} ({words})")
            meaning = REFUSED.get(code, "refused")
            raise Refused(f"{self.title} error {code}: {meaning} ({words})",
                          what=WHAT.get(code, ""))
        return body

    async def send(self, phone: str, text: str, our_id: int) -> Sent:
        values = {"phones": digits(phone), "mes": text, "id": str(smsc_id(our_id))}
        if self.settings.sender:
            values["sender"] = self.settings.sender
        body = await self._call("/sys/send.php", values)
        if "id" not in body:
            raise NoAnswer(f"{self.title} answered without a message id: {str(body)[:120]}")
        return Sent(str(body["id"]), _int(body.get("cnt")))

    async def balance(self) -> Balance:
        body = await self._call("/sys/balance.php", {"cur": "1"})
        return Balance(str(body.get("balance", "?")), str(body.get("currency", "")))

    async def was_sent(self, phone: str, our_id: int) -> bool:
        body = await self._call("/sys/status.php", {"phone": digits(phone),
                                                    "id": str(smsc_id(our_id))})
        if "status" not in body:
            raise NoAnswer(f"{self.title} answered a status query without a status: "
                           f"{str(body)[:120]}")
        return _int(body["status"]) != NOT_FOUND

    async def close(self) -> None:
        await self.http.close()


def smsc_id(our_id: int) -> int:
    """The outbox row's id within SMSC's range for ids."""
    return our_id if 0 < our_id <= MAX_ID else our_id % MAX_ID or 1


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
