"""SMSAero (API v2): send, the connection check and balance, with HTTP Basic auth (the
account's email and API key).

`POST /v2/sms/send` takes JSON `{"number", "text", "sign"}` and answers `{"success":
true, "data": {"id": …, "status": 0, …}, "message": null}`; a failure is `{"success":
false, "data": null, "message": "…"}`. SMSAero's exact failure strings are not
documented, so they are sorted by the HTTP status first (401/403: credentials), then
by words in the message (number, money); anything else it refuses is final. There is no
id of ours: a send whose answer is lost stays "uncertain" for a person.
"""

from __future__ import annotations

import base64

from helpgate.channels.sms.api import (
    Balance,
    Http,
    NoAnswer,
    Refused,
    Sent,
    digits,
    require,
)
from helpgate.config.schema import SmsConfig

BASE_URL = "https://gate.smsaero.ru"
# The sender name every SMSAero account may use.
DEFAULT_SIGN = "SMS Aero"
_NUMBER_WORDS = ("number", "phone", "номер")
_MONEY_WORDS = ("balance", "money", "funds", "баланс", "средств", "денег")


class SmsAeroGateway:
    title = "SMSAero"
    tracks_our_id = False

    def __init__(self, settings: SmsConfig) -> None:
        require(settings, self.title, "login", "api_key")
        self.settings = settings
        self.base_url = settings.base_url or BASE_URL
        self.http = Http(self.title, self.base_url, settings.timeout)
        # HTTP Basic, written out: aiohttp's BasicAuth is deprecated and Latin-1 only.
        token = base64.b64encode(f"{settings.login}:{settings.api_key}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}

    async def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        answer = await self.http.request(method, path, json=payload,
                                         headers=self._headers)
        body = answer.json(self.title)
        if not isinstance(body, dict) or "success" not in body:
            raise NoAnswer(f"{self.title} answered something unexpected: {str(body)[:120]}")
        if body["success"] is True:
            return body
        message = str(body.get("message") or body.get("data") or "no description")
        lowered = message.lower()
        if answer.status in (401, 403):
            what, meaning = "credentials", "the login or API key is wrong (sms.login, " \
                "sms.api_key)"
        elif any(word in lowered for word in _MONEY_WORDS):
            what, meaning = "money", "the account has no money left: top it up at SMSAero"
        elif any(word in lowered for word in _NUMBER_WORDS):
            what, meaning = "number", "the phone number is wrong"
        else:
            what, meaning = "", "refused"
        raise Refused(f"{self.title}: {meaning} ({message})", what=what)

    async def send(self, phone: str, text: str, our_id: int) -> Sent:
        body = await self._call("POST", "/v2/sms/send", {
            "number": digits(phone), "text": text,
            "sign": self.settings.sender or DEFAULT_SIGN})
        data = body.get("data") or {}
        if not isinstance(data, dict) or "id" not in data:
            raise NoAnswer(f"{self.title} answered without a message id: {str(body)[:120]}")
        return Sent(str(data["id"]))

    async def balance(self) -> Balance:
        await self._call("GET", "/v2/auth")
        body = await self._call("GET", "/v2/balance")
        return Balance(str((body.get("data") or {}).get("balance", "?")), "RUB")

    async def was_sent(self, phone: str, our_id: int) -> bool:
        raise NotImplementedError("SMSAero cannot look a message up by our id")

    async def close(self) -> None:
        await self.http.close()
