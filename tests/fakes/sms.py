"""Local fakes of the SMS gateways helpgate speaks to: SMSC.ru, SMS.ru and SMSAero v2.

Each is an aiohttp server on 127.0.0.1 (port 0) answering the documented request and
response shapes (PROTOCOLS.md, "SMS gateways"), and keeps what a test asserts on: every
SMS it took (`fake.sent`, one entry per SMS "delivered"), the calls per endpoint
(`fake.requests`), the balance.

    async with FakeSmsc(login="desk", password="pw") as smsc:
        smsc.fail_next("slow", 2.0)      # take the SMS, answer only after 2 s
        ...
        assert len(smsc.sent) == 1

Behaviour kept from the services, because product code must cope with it:
- parameters come by query string or form body alike (SMSC, SMS.ru); every answer is
  JSON; SMSC and SMS.ru say their errors with HTTP 200;
- credentials are checked on every call; a number the fake was told is not a subscriber's
  (`fake.bad_numbers`) or a malformed one is refused; an account whose balance does not
  cover a message is refused ("no money");
- SMSC keeps each message under the id the sender gave and answers status.php by
  phone and id (status -3: not found).

Faults (`fail_next(kind, value, times=1)`, the next calls of the send endpoint):
- "http", status: that HTTP status (500, 502, 503, 429 with Retry-After), nothing sent;
- "error", code: the provider's own error code in its envelope, nothing sent;
- "slow", seconds: the SMS is taken (sent) at once and the answer comes after `seconds`,
  longer than the client's timeout: a timeout after the request was written;
- "late", seconds: the answer is held back `seconds` and the SMS is taken only then (a
  request stuck in the provider's queue), so a status query in between finds nothing.

Approximations: SMSAero's failure messages (its documentation gives no exact strings),
SMS prices (one part costs `price`; parts counted as outbound/sms_text.py counts them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from helpgate.outbound.sms_text import encoding, parts, units


@dataclass
class Sms:
    """One SMS the gateway took."""
    phone: str
    text: str
    sender: str
    our_id: str | None
    provider_id: str
    parts: int


class Fault(Exception):
    """The fault that answers instead of the endpoint."""

    def __init__(self, kind: str, value: Any) -> None:
        super().__init__(kind)
        self.kind, self.value = kind, value


class FakeSmsGateway:
    """What the three fakes share: the server, the record of SMS, faults, the balance."""

    def __init__(self, balance: float = 100.0, price: float = 2.5) -> None:
        self.balance = balance
        self.price = price
        self.sent: list[Sms] = []
        self.taken = asyncio.Event()          # set when an SMS is taken
        self.requests: Counter[str] = Counter()
        self.bad_numbers: set[str] = set()
        self._faults: list[list] = []
        # A share of sends that fail with 503 at random, nothing sent (bench/outbox.py).
        self.transient_rate = 0.0
        self.random = random.Random(18)
        self._ids = itertools.count(1001)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self):
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def fail_next(self, kind: str, value: Any = None, times: int = 1) -> None:
        assert kind in ("http", "error", "slow", "late"), kind
        self._faults.append([kind, value, times])

    def _fault(self) -> Fault | None:
        if not self._faults:
            if self.transient_rate and self.random.random() < self.transient_rate:
                return Fault("http", 503)
            return None
        fault = self._faults[0]
        fault[2] -= 1
        if fault[2] <= 0:
            self._faults.pop(0)
        return Fault(fault[0], fault[1])

    @staticmethod
    def _http(fault: Fault) -> web.Response:
        headers = {"Retry-After": "3"} if fault.value == 429 else {}
        return web.Response(status=fault.value, text="<html>gateway trouble</html>",
                            headers=headers, content_type="text/html")

    async def _deliver(self, fault: Fault | None, take, answer) -> web.Response:
        """Run the send with `fault`: `take()` records the SMS and returns the body that
        `answer(body)` makes the response of."""
        if fault is not None and fault.kind == "slow":
            body = take()
            await asyncio.sleep(fault.value)
            return answer(body)
        if fault is not None and fault.kind == "late":
            await asyncio.sleep(fault.value)
            return answer(take())
        return answer(take())

    def _take(self, phone: str, text: str, sender: str, our_id: str | None) -> Sms:
        coding = encoding(text)
        sms = Sms(phone, text, sender, our_id, str(next(self._ids)),
                  parts(units(text, coding), coding))
        self.balance -= self.price * sms.parts
        self.sent.append(sms)
        self.taken.set()
        return sms

    def _affordable(self, text: str) -> bool:
        coding = encoding(text)
        return self.balance >= self.price * parts(units(text, coding), coding)

    @staticmethod
    def _valid(phone: str) -> bool:
        return phone.isdigit() and 11 <= len(phone) <= 15


async def _params(request: web.Request) -> dict[str, str]:
    """Query string and form body together, as PHP's $_REQUEST."""
    values = dict(request.query)
    if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        values.update({k: str(v) for k, v in (await request.post()).items()})
    return values


class FakeSmsc(FakeSmsGateway):
    """SMSC.ru: /sys/send.php, /sys/balance.php, /sys/status.php with fmt=3."""

    ERRORS = {1: "parameters error", 2: "authorise error", 3: "no money",
              4: "IP is blocked", 6: "message is denied", 7: "invalid number",
              8: "can't deliver", 9: "duplicate request, wait a minute"}

    def __init__(self, login: str = "desk", password: str = "secret",
                 api_key: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.login, self.password, self.api_key = login, password, api_key
        self.by_id: dict[tuple[str, str], Sms] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/sys/send.php", self._send)
        app.router.add_route("*", "/sys/balance.php", self._balance)
        app.router.add_route("*", "/sys/status.php", self._status)

    def _error(self, code: int) -> web.Response:
        return web.json_response({"error": self.ERRORS.get(code, "error"),
                                  "error_code": code})

    def _authorised(self, params: dict) -> bool:
        if params.get("apikey"):
            return bool(self.api_key) and params["apikey"] == self.api_key
        return (params.get("login"), params.get("psw")) == (self.login, self.password)

    async def _send(self, request: web.Request) -> web.Response:
        self.requests["send"] += 1
        params = await _params(request)
        fault = self._fault()
        if fault is not None and fault.kind == "http":
            return self._http(fault)
        if fault is not None and fault.kind == "error":
            return self._error(fault.value)
        if not self._authorised(params):
            return self._error(2)
        phone, text = params.get("phones", ""), params.get("mes", "")
        if not phone or not text or params.get("fmt") != "3":
            return self._error(1)
        if not self._valid(phone) or phone in self.bad_numbers:
            return self._error(7)
        if not self._affordable(text):
            return self._error(3)
        our_id = params.get("id")

        def take() -> dict:
            sms = self._take(phone, text, params.get("sender", ""), our_id)
            if our_id:
                self.by_id[(phone, our_id)] = sms
            return {"id": int(our_id) if our_id else int(sms.provider_id), "cnt": sms.parts}

        return await self._deliver(fault, take, web.json_response)

    async def _balance(self, request: web.Request) -> web.Response:
        self.requests["balance"] += 1
        params = await _params(request)
        if not self._authorised(params):
            return self._error(2)
        body = {"balance": f"{self.balance:.2f}"}
        if params.get("cur") == "1":
            body["currency"] = "RUR"
        return web.json_response(body)

    async def _status(self, request: web.Request) -> web.Response:
        self.requests["status"] += 1
        params = await _params(request)
        if not self._authorised(params):
            return self._error(2)
        sms = self.by_id.get((params.get("phone", ""), params.get("id", "")))
        if sms is None:
            return web.json_response({"status": -3, "last_date": "", "last_timestamp": 0,
                                      "err": 0})
        return web.json_response({"status": 1, "last_date": "23.11.2026 09:00:00",
                                  "last_timestamp": 1795338000, "err": 0})


class FakeSmsRu(FakeSmsGateway):
    """SMS.ru: /sms/send and /my/balance with json=1."""

    TEXTS = {200: "Неправильный api_id", 201: "Не хватает средств на лицевом счету",
             202: "Неправильно указан номер телефона получателя",
             207: "На этот номер нельзя отправлять сообщения",
             220: "Сервис временно недоступен, попробуйте чуть позже",
             301: "Неправильный пароль"}

    def __init__(self, api_id: str = "api-id-1", **kwargs) -> None:
        super().__init__(**kwargs)
        self.api_id = api_id

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/sms/send", self._send)
        app.router.add_route("*", "/my/balance", self._balance)

    def _status(self, code: int) -> dict:
        return {"status": "ERROR", "status_code": code,
                "status_text": self.TEXTS.get(code, "Ошибка")}

    async def _send(self, request: web.Request) -> web.Response:
        self.requests["send"] += 1
        params = await _params(request)
        fault = self._fault()
        if fault is not None and fault.kind == "http":
            return self._http(fault)
        if fault is not None and fault.kind == "error":
            return web.json_response(self._status(fault.value))
        if params.get("api_id") != self.api_id:
            return web.json_response(self._status(200))
        phone, text = params.get("to", ""), params.get("msg", "")
        if not self._affordable(text):
            return web.json_response(self._status(201))
        if not self._valid(phone):
            return web.json_response({"status": "OK", "status_code": 100, "sms": {
                phone: self._status(202)}, "balance": self.balance})
        if phone in self.bad_numbers:
            return web.json_response({"status": "OK", "status_code": 100, "sms": {
                phone: self._status(207)}, "balance": self.balance})

        def take() -> dict:
            sms = self._take(phone, text, params.get("from", ""), None)
            return {"status": "OK", "status_code": 100, "sms": {phone: {
                "status": "OK", "status_code": 100, "sms_id": f"000000-{sms.provider_id}"}},
                "balance": round(self.balance, 2)}

        return await self._deliver(fault, take, web.json_response)

    async def _balance(self, request: web.Request) -> web.Response:
        self.requests["balance"] += 1
        params = await _params(request)
        if params.get("api_id") != self.api_id:
            return web.json_response(self._status(200))
        return web.json_response({"status": "OK", "status_code": 100,
                                  "balance": round(self.balance, 2)})


class FakeSmsAero(FakeSmsGateway):
    """SMSAero v2: HTTP Basic (email:api_key); /v2/sms/send, /v2/auth, /v2/balance."""

    def __init__(self, email: str = "desk@example.com", api_key: str = "aero-key",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.email, self.api_key = email, api_key

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/sms/send", self._send)
        app.router.add_route("*", "/v2/auth", self._auth)
        app.router.add_route("*", "/v2/balance", self._balance)

    @staticmethod
    def _failure(message: str, status: int = 400) -> web.Response:
        return web.json_response({"success": False, "data": None, "message": message},
                                 status=status)

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        with contextlib.suppress(ValueError):
            user, _, key = base64.b64decode(header[6:]).decode().partition(":")
            return (user, key) == (self.email, self.api_key)
        return False

    def _unauthorised(self) -> web.Response:
        return self._failure("Your request was made with invalid credentials.", 401)

    async def _send(self, request: web.Request) -> web.Response:
        self.requests["send"] += 1
        fault = self._fault()
        if fault is not None and fault.kind == "http":
            return self._http(fault)
        if fault is not None and fault.kind == "error":
            return self._failure(str(fault.value))
        if not self._authorised(request):
            return self._unauthorised()
        try:
            payload = json.loads(await request.text())
        except ValueError:
            return self._failure("Validation error: the body is not JSON")
        phone, text = str(payload.get("number", "")), str(payload.get("text", ""))
        if not self._valid(phone) or phone in self.bad_numbers:
            return self._failure("Validation error: the number is invalid")
        if not self._affordable(text):
            return self._failure("Insufficient balance")

        def take() -> dict:
            sms = self._take(phone, text, str(payload.get("sign", "")), None)
            return {"success": True, "data": {
                "id": int(sms.provider_id), "from": sms.sender, "number": phone,
                "text": text, "status": 0, "extendStatus": "queue", "channel": "INFO",
                "cost": self.price * sms.parts, "dateCreate": 1795338000,
                "dateSend": 1795338000}, "message": None}

        return await self._deliver(fault, take, web.json_response)

    async def _auth(self, request: web.Request) -> web.Response:
        self.requests["auth"] += 1
        if not self._authorised(request):
            return self._unauthorised()
        return web.json_response({"success": True, "data": None,
                                  "message": "Successful authorization."})

    async def _balance(self, request: web.Request) -> web.Response:
        self.requests["balance"] += 1
        if not self._authorised(request):
            return self._unauthorised()
        return web.json_response({"success": True, "data": {"balance": round(self.balance, 2)},
                                  "message": None})


FAKES = {"smsc": FakeSmsc, "smsru": FakeSmsRu, "smsaero": FakeSmsAero}


def settings_for(fake: FakeSmsGateway, timeout: float = 2.0, **extra: Any) -> dict:
    """The `[sms]` section that points helpgate at `fake` with its credentials."""
    if isinstance(fake, FakeSmsc):
        values = {"provider": "smsc", "login": fake.login, "password": fake.password}
    elif isinstance(fake, FakeSmsRu):
        values = {"provider": "smsru", "api_key": fake.api_id}
    else:
        values = {"provider": "smsaero", "login": fake.email, "api_key": fake.api_key}
    return {**values, "base_url": fake.base_url, "timeout": timeout, **extra}
