"""SMS.ru: send and balance with the account's api_id.

`/sms/send` answers (with `json=1`) a top-level status and one per number:
`{"status": "OK", "status_code": 100, "sms": {"7925…": {"status": "OK", "status_code":
100, "sms_id": "…"}}, "balance": …}`; an error is `"status": "ERROR"` with its code at
either level. SMS.ru takes no id of ours: a send whose answer is lost cannot be looked
up, and the outbox keeps it as "uncertain" for a person.
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

BASE_URL = "https://sms.ru"
OK = 100
REFUSED = {
    200: "the api_id is wrong (sms.api_key)",
    201: "the account has no money left: top it up at SMS.ru",
    202: "the recipient's number is wrong",
    203: "the message has no text",
    204: "the sender name (sms.sender) is not approved for this account",
    205: "the message is too long",
    207: "SMS.ru cannot send to this number",
    209: "the number is on the account's stop list",
    300: "the token is wrong or expired",
    301: "the api_id or password is wrong (sms.api_key)",
    302: "the account is not confirmed yet",
}
WHAT = {200: "credentials", 300: "credentials", 301: "credentials", 201: "money",
        202: "number", 207: "number", 209: "number"}
RETRYABLE = {
    206: "the account's daily limit is reached",
    220: "the service is unavailable for a while",
    230: "the daily limit of messages to this number is reached",
    231: "the limit of identical messages to this number per minute is reached",
    232: "the limit of identical messages to this number per day is reached",
    233: "the limit of messages to this number is reached",
    500: "SMS.ru's server failed",
}


class SmsRuGateway:
    title = "SMS.ru"
    tracks_our_id = False

    def __init__(self, settings: SmsConfig) -> None:
        require(settings, self.title, "api_key")
        self.settings = settings
        self.base_url = settings.base_url or BASE_URL
        self.http = Http(self.title, self.base_url, settings.timeout)

    async def _call(self, path: str, values: dict[str, Any]) -> dict:
        answer = await self.http.request("POST", path, form={
            "api_id": self.settings.api_key, **values, "json": "1"})
        body = answer.json(self.title)
        if not isinstance(body, dict) or "status" not in body:
            raise NoAnswer(f"{self.title} answered something unexpected: {str(body)[:120]}")
        check(body, self.title)
        return body

    async def send(self, phone: str, text: str, our_id: int) -> Sent:
        number = digits(phone)
        values = {"to": number, "msg": text}
        if self.settings.sender:
            values["from"] = self.settings.sender
        body = await self._call("/sms/send", values)
        result = (body.get("sms") or {}).get(number)
        if not isinstance(result, dict):
            raise NoAnswer(f"{self.title} answered without the number's result: "
                           f"{str(body)[:120]}")
        check(result, self.title)
        return Sent(str(result.get("sms_id", "")))

    async def balance(self) -> Balance:
        body = await self._call("/my/balance", {})
        return Balance(str(body.get("balance", "?")), "RUB")

    async def was_sent(self, phone: str, our_id: int) -> bool:
        raise NotImplementedError("SMS.ru cannot look a message up by our id")

    async def close(self) -> None:
        await self.http.close()


def check(body: dict, title: str) -> None:
    """Raise what an ERROR status means, at the top level or for one number."""
    if body.get("status") == "OK":
        return
    try:
        code = int(body.get("status_code"))
    except (TypeError, ValueError):
        code = None
    words = body.get("status_text") or "no description"
    if code in RETRYABLE:
        raise Unavailable(f"{title} error {code}: {RETRYABLE[code]} ({words})")
    if code == OK:  # "status" said otherwise; the code is what counts
        return
    raise Refused(f"{title} error {code}: {REFUSED.get(code, 'refused')} ({words})",
                  what=WHAT.get(code, ""))
