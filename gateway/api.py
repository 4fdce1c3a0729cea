"""The staff HTTP API (issue 18 part 3): what an employee's tools do with tickets, over HTTP.

It exists so a help-desk UI or a script can work the queue without a shell on the
gateway's machine. Every request but /health and /openapi.json carries an employee's
token (`Authorization: Bearer …`, `helpgate api-token issue`), and acts as that employee.

One way of doing each thing: a reply is `gateway/replies.py` `staff_reply`, as `helpgate
reply` (so the relay to the customer is queued the same way); a status change goes
through the StatusService the gateway assembles (`gateway/status_service.py`), so its
notifications fire; lists and details are the read models of `ticketstore/queries.py`,
the shapes of the CLI's `--json`. Every change runs in one transaction, after the input
was checked: bad input answers 4xx and changes nothing.

The route table below is also the OpenAPI document (/openapi.json): each route names its
parameters and body as JSON Schema, and requests are checked against the same schemas,
so the document cannot drift from what the server accepts. Errors are JSON:
`{"error": {"status": 404, "message": "no ticket 7"}}`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from helpgate.channels.base import ChannelStartError
from helpgate.config.schema import Config
from helpgate.gateway.channels import CHANNELS
from helpgate.gateway.replies import ReplyError, ReplyFile, staff_reply
from helpgate.gateway.status_service import status_service
from helpgate.ticketstore import api_tokens
from helpgate.ticketstore.queries import (
    attachment_content,
    directory_list,
    outbox_backlog,
    outbox_list,
    quarantine_list,
    ticket_detail,
    ticket_list,
    ticket_page,
    ticket_summary,
)
from helpgate.ticketstore.repository import Store, ticket_by_number
from helpgate.ticketstore.statuses import StatusError, closing_state

log = logging.getLogger("helpgate.api")

# The largest number the store can hold (64-bit signed): anything above names nothing.
MAX_NUMBER = 2**63 - 1
PAGE_DEFAULT, PAGE_MAX = 50, 200
MAX_TEXT = 100_000
MAX_BASE64 = 64 * 1024 * 1024
API_VERSION = "1"

Handler = Callable[["Call"], Awaitable[web.StreamResponse]]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ApiError(Exception):
    """A request refused with a status and one clear message."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"status": status, "message": message}},
                             status=status, headers=headers)


# ------------------------------------------------------------------ schemas and checking
DIGITS, NOT_BLANK = "^[0-9]+$", "\\S"
_PATTERN_TEXT = {DIGITS: "must be digits", NOT_BLANK: "must not be empty"}


def _string(**extra) -> dict:
    return {"type": "string", **extra}


NUMBER = {"type": "integer", "minimum": 1, "maximum": MAX_NUMBER}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["status", "message"],
    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}}}}}
OBJECT = {"type": "object"}


def check(schema: dict, value: Any, where: str) -> Any:
    """`value` checked against the subset of JSON Schema the route table uses; returns it
    (defaults filled in for an object's missing properties), or raises ApiError 400."""
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            raise ApiError(400, f"{where} must be a JSON object")
        properties = schema.get("properties", {})
        unknown = sorted(set(value) - set(properties))
        if unknown and schema.get("additionalProperties") is False:
            raise ApiError(400, f"{where}: unknown field {unknown[0]!r}; known: "
                                f"{', '.join(properties)}")
        for name in schema.get("required", []):
            if name not in value:
                raise ApiError(400, f"{where}: {name} is required")
        out = {}
        for name, sub in properties.items():
            if name in value:
                out[name] = check(sub, value[name], f"{where}.{name}" if where != "body"
                                  else name)
            elif "default" in sub:
                out[name] = sub["default"]
        return out
    if kind == "string":
        if not isinstance(value, str):
            raise ApiError(400, f"{where} must be a string")
        if len(value) < schema.get("minLength", 0):
            raise ApiError(400, f"{where} must not be empty")
        if len(value) > schema.get("maxLength", MAX_TEXT):
            raise ApiError(400, f"{where} is longer than {schema.get('maxLength', MAX_TEXT)} "
                                "characters")
        if "enum" in schema and value not in schema["enum"]:
            raise ApiError(400, f"{where}: {value!r} is not one of "
                                f"{', '.join(schema['enum'])}")
        pattern = schema.get("pattern")
        if pattern is not None and (not re.search(pattern, value) or (
                pattern == DIGITS and not value.isascii())):
            raise ApiError(400, f"{where} {_PATTERN_TEXT.get(pattern, 'is not valid')}")
        if schema.get("format") == "date-time":
            return parse_time(value, where)
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise ApiError(400, f"{where} must be a list")
        if len(value) > schema.get("maxItems", 1000):
            raise ApiError(400, f"{where} has more than {schema.get('maxItems', 1000)} items")
        return [check(schema.get("items", {}), item, f"{where}[{i}]")
                for i, item in enumerate(value)]
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ApiError(400, f"{where} must be true or false")
        return value
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(400, f"{where} must be an integer")
        if not schema.get("minimum", value) <= value <= schema.get("maximum", value):
            raise ApiError(400, f"{where} must be from {schema.get('minimum')} to "
                                f"{schema.get('maximum')}")
        return value
    return value


def parse_time(value: str, where: str) -> datetime:
    """An ISO 8601 time with its offset: an API client's "10:00" means nothing without
    it (the CLI may take the operator's local time; a remote client has none)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{where}: {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise ApiError(400, f"{where}: {value!r} has no UTC offset (add Z or +03:00)")
    return parsed.astimezone(timezone.utc)


@dataclass
class Param:
    name: str
    where: str  # "path" | "query"
    schema: dict
    description: str = ""
    required: bool = False


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    auth: bool = True
    params: list[Param] = field(default_factory=list)
    body: dict | None = None
    response: dict = field(default_factory=lambda: OBJECT)
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"


@dataclass
class Call:
    """One checked request: its parameters, its body, the employee it acts as."""
    request: web.Request
    api: Api
    params: dict
    body: dict
    auth: dict | None

    @property
    def employee(self) -> dict:
        assert self.auth is not None
        return self.auth["employee"]


# --------------------------------------------------------------------------- the server
class RateLimiter:
    """A token bucket per API token: `per_minute` requests a minute, as a burst at most.
    In memory, per gateway process: it protects the gateway from a runaway script."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.buckets: dict[int, tuple[float, float]] = {}

    def take(self, key: int) -> float:
        """0 when the request may go; else the seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        rate = self.per_minute / 60.0
        tokens, then = self.buckets.get(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - then) * rate)
        if tokens < 1.0:
            self.buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate
        self.buckets[key] = (tokens - 1.0, now)
        return 0.0


class Api:
    """The application and what its handlers need: config, store, clock, and the hooks
    of the running gateway (wake the outbox worker after a commit that queued mail; the
    names of the channels in use for /health)."""

    def __init__(self, config: Config, store: Store, clock: Callable[[], datetime] = utcnow,
                 on_commit: Callable[[], object] | None = None,
                 channels: Callable[[], dict] | None = None, pipeline=None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.on_commit = on_commit
        self.channels = channels or (lambda: {})
        self._pipeline = pipeline
        self.statuses = status_service(config)
        self.limiter = RateLimiter(config.api.rate_limit)
        self.routes = routes(config)
        self._document: dict | None = None
        # Requests answered, by route and status: /metrics.
        self.requests: dict[tuple[str, int], int] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.api.max_body_size,
                              middlewares=[self._errors])
        for route in self.routes:
            app.router.add_route(route.method, route.path, self._bind(route))
        return app

    def document(self) -> dict:
        if self._document is None:
            self._document = openapi(self.routes, self.config)
        return self._document

    def pipeline(self):
        """The gateway's pipeline (a replay decides like any message), else one of our own."""
        if self._pipeline is None:
            from helpgate.gateway.pipeline import Pipeline
            self._pipeline = Pipeline(self.config, self.store, self.clock)
        return self._pipeline

    def committed(self) -> None:
        if self.on_commit is not None:
            self.on_commit()

    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        response = await self._answer(request, handler)
        route = request.match_info.route.resource
        key = (route.canonical if route is not None else "unmatched", response.status)
        self.requests[key] = self.requests.get(key, 0) + 1
        return response

    async def _answer(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.headers)
        except web.HTTPException as exc:  # no such route, wrong method, body too large
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return error_response(exc.status, _http_message(exc, request), headers)
        except Exception:
            log.exception("API request %s %s failed", request.method, request.path)
            return error_response(500, "internal error; the gateway's log has the details")

    def _bind(self, route: Route):
        async def handle(request: web.Request) -> web.StreamResponse:
            auth = await self._authenticate(request) if route.auth else None
            params = _params(route, request)
            body: dict = {}
            if route.body is not None:
                body = check(route.body, await _json_body(request), "body")
            elif request.can_read_body and route.method in ("POST", "PUT", "PATCH"):
                await request.read()
            return await route.handler(Call(request, self, params, body, auth))
        return handle

    async def _authenticate(self, request: web.Request) -> dict:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="helpgate"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "an API token is required: Authorization: Bearer <token> "
                                "(helpgate api-token issue)", challenge)
        auth = await self.store.run(api_tokens.authenticate, token.strip(), self.clock())
        if auth is None:
            raise ApiError(401, "the API token is not valid (unknown or revoked)", challenge)
        wait = self.limiter.take(auth["token_id"])
        if wait > 0:
            raise ApiError(429, f"rate limit of {self.config.api.rate_limit} requests a "
                                "minute for this token reached; retry later",
                           {"Retry-After": str(max(1, int(wait + 0.999)))})
        return auth


def _http_message(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.path} (see /openapi.json)"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return "the request body is too large (api.max_body_size)"
    return exc.reason


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():  # the document says the body is required
        raise ApiError(400, "a JSON body is required")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None


def _params(route: Route, request: web.Request) -> dict:
    out: dict = {}
    known = {p.name for p in route.params if p.where == "query"}
    for name in request.query:
        if name not in known:
            raise ApiError(400, f"unknown query parameter {name!r}"
                                + (f"; known: {', '.join(sorted(known))}" if known else ""))
    for param in route.params:
        source = request.match_info if param.where == "path" else request.query
        if param.where == "query" and len(request.query.getall(param.name, [])) > 1:
            raise ApiError(400, f"query parameter {param.name} is given more than once")
        raw = source.get(param.name)
        if raw is None:
            if param.required:
                raise ApiError(400, f"query parameter {param.name} is required")
            out[param.name] = param.schema.get("default")
            continue
        if param.schema.get("type") == "integer":
            if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_NUMBER:
                if param.where == "path":
                    raise ApiError(404, f"no {param.description or param.name} {raw}")
                raise ApiError(400, f"{param.name} must be a whole number")
            value: Any = int(raw)
            if param.where == "path" and value < 1:
                raise ApiError(404, f"no {param.description or param.name} {raw}")
        else:
            value = raw
        out[param.name] = check(param.schema, value, param.name)
    return out


class ApiServer:
    """The API on its own port within `helpgate run` (start/stop like a channel)."""

    name = "api"

    def __init__(self, api: Api, host: str, port: int) -> None:
        self.api = api
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.api.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:  # a port in use: one line naming the key that fixes it
            await self.stop()
            raise ChannelStartError(
                f"the staff API cannot listen on {self.host}:{self.port}: "
                f"{exc.strerror or exc}; choose another [api] port") from None
        # Port 0 asks for any free port: the one taken is what to tell clients.
        server = site._server
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# ------------------------------------------------------------------------------ handlers
async def get_health(call: Call) -> web.Response:
    now = call.api.clock()
    try:
        backlog = await call.api.store.run(outbox_backlog, now)
        database = {"ok": True}
    except Exception as exc:  # the database away: say so, with a 503 for monitors
        log.warning("health: the database is not answering: %s", exc)
        backlog, database = None, {"ok": False, "error": type(exc).__name__}
    body = {"status": "ok" if database["ok"] else "unavailable", "database": database,
            "channels": call.api.channels(), "outbox": backlog}
    return web.json_response(body, status=200 if database["ok"] else 503)


async def get_metrics(call: Call) -> web.Response:
    """Prometheus text format: the store's figures (messages in by channel and state, the
    outbox by channel and state, the oldest waiting row's age, parked and uncertain rows
    as delivery failures) and this process's API requests by route and status."""
    from helpgate.ticketstore.queries import metrics_snapshot
    snap = await call.api.store.run(metrics_snapshot, call.api.clock())
    lines = ["# HELP helpgate_messages_in Inbound messages kept, by channel and state.",
             "# TYPE helpgate_messages_in gauge"]
    lines += [f'helpgate_messages_in{{channel="{_label(c)}",state="{_label(s)}"}} {n}'
              for c, s, n in snap["inbound"]]
    lines += ["# HELP helpgate_outbox_messages Outbox rows by channel and state.",
              "# TYPE helpgate_outbox_messages gauge"]
    lines += [f'helpgate_outbox_messages{{channel="{_label(c)}",state="{_label(s)}"}} {n}'
              for c, s, n in snap["outbox"]]
    lines += ["# HELP helpgate_outbox_oldest_waiting_seconds Age of the oldest row still "
              "to be sent, by channel.", "# TYPE helpgate_outbox_oldest_waiting_seconds gauge"]
    lines += [f'helpgate_outbox_oldest_waiting_seconds{{channel="{_label(c)}"}} {age:.3f}'
              for c, age in sorted(snap["oldest_waiting"].items())]
    lines += ["# HELP helpgate_messages_by_action Inbound messages kept, by channel and "
              "the action decided (a message not decided yet: its state); from the "
              "database, the same on every instance.",
              "# TYPE helpgate_messages_by_action gauge"]
    lines += [f'helpgate_messages_by_action{{channel="{_label(c)}",action="{_label(a)}"}} {n}'
              for c, a, n in snap["by_action"]]
    lines += _latency_histogram(snap["latency"])
    failed: dict[str, int] = {}
    for channel, state, count in snap["outbox"]:
        if state in ("parked", "uncertain"):
            failed[channel] = failed.get(channel, 0) + count
    lines += ["# HELP helpgate_delivery_failures Outbox rows parked or uncertain, by "
              "channel.", "# TYPE helpgate_delivery_failures gauge"]
    lines += [f'helpgate_delivery_failures{{channel="{_label(c)}"}} {n}'
              for c, n in sorted(failed.items())]
    lines += ["# HELP helpgate_api_requests_total Staff API requests answered by this "
              "process, by route and status.", "# TYPE helpgate_api_requests_total counter"]
    lines += [f'helpgate_api_requests_total{{route="{_label(r)}",status="{st}"}} {n}'
              for (r, st), n in sorted(call.api.requests.items())]
    return web.Response(text="\n".join(lines) + "\n",
                        content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


def _latency_histogram(latency: dict[str, dict]) -> list[str]:
    """The decision latency as a Prometheus histogram per channel (cumulative buckets,
    +Inf, sum, count), read from the kept messages' receipt and decision times."""
    from helpgate.ticketstore.queries import DECISION_BUCKETS
    name = "helpgate_decision_latency_seconds"
    lines = [f"# HELP {name} Seconds from a message's receipt to its decision, by channel; "
             "from the database (every message kept), the same on every instance.",
             f"# TYPE {name} histogram"]
    for channel, figures in sorted(latency.items()):
        label = f'channel="{_label(channel)}"'
        lines += [f'{name}_bucket{{{label},le="{float(bound)!r}"}} {count}'
                  for bound, count in zip(DECISION_BUCKETS, figures["buckets"], strict=True)]
        lines += [f'{name}_bucket{{{label},le="+Inf"}} {figures["count"]}',
                  f'{name}_sum{{{label}}} {figures["sum"]:.6f}',
                  f'{name}_count{{{label}}} {figures["count"]}']
    return lines


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def get_openapi(call: Call) -> web.Response:
    return web.json_response(call.api.document())


async def get_me(call: Call) -> web.Response:
    return web.json_response(call.employee)


async def get_tickets(call: Call) -> web.Response:
    p = call.params
    before = int(p["cursor"]) if p["cursor"] is not None else None
    if before is not None and before > MAX_NUMBER:
        raise ApiError(400, "cursor is not one this API gave")
    rows, last = await call.api.store.run(
        ticket_page, call.api.config, p["status"], p["contact"], p["company"], before,
        p["limit"])
    return web.json_response({"tickets": rows,
                              "next_cursor": str(last) if last is not None else None})


async def get_ticket(call: Call) -> web.Response:
    number = call.params["number"]
    config, now = call.api.config, call.api.clock()

    def read(session):
        ticket = ticket_by_number(session, number)
        if ticket is None:
            raise ApiError(404, f"no ticket {number}")
        return ticket_detail(session, config, ticket, now)

    return web.json_response(await call.api.store.run(read))


def _resolve_target(config: Config, status: str) -> str | None:
    """Where "send and resolve" takes a ticket: `resolved` when the model allows it next
    (the customer may still answer and reopen), else the closing state staff's /close
    takes (statuses.closing_state). A ticket already resolved or closed stays as it is:
    the answer goes, the status needs no change ("" says so)."""
    states = config.statuses.states_by_id()
    if status in states and states[status].closed:
        return ""
    allowed = states[status].next if status in states else []
    if "resolved" in allowed and states["resolved"].closed:
        return "resolved"
    return closing_state(config.statuses, status)


async def post_reply(call: Call) -> web.Response:
    return await _comment(call, public=True)


async def post_note(call: Call) -> web.Response:
    return await _comment(call, public=False)


async def _comment(call: Call, public: bool) -> web.Response:
    number, body, api = call.params["number"], call.body, call.api
    email = call.employee["email"]
    if not email:
        raise ApiError(403, "the token's employee has no email address to sign with")
    text = body.get("text")
    canned_id = body.get("canned")
    if text is None and canned_id is None:
        raise ApiError(400, "text is required" + (" (or canned: a canned answer's id)"
                                                  if public else ""))
    if text is not None and not text.strip():
        raise ApiError(400, "text must not be empty")
    files = _uploads(api.config, body.get("attachments") or [])
    now = api.clock()

    def work(session):
        ticket = ticket_by_number(session, number, lock=True)
        if ticket is None:
            raise ApiError(404, f"no ticket {number}")
        target = None
        if body.get("resolve"):
            target = _resolve_target(api.config, ticket.status)
            if target is None:
                raise ApiError(409, f"ticket {number} cannot be resolved from "
                                    f"{ticket.status}")
        try:
            result = staff_reply(session, api.config, number, text or "", public, email,
                                 "api", now, body.get("via"), files, canned_id)
            if target:
                api.statuses.request(session, ticket, target, now,
                                     "resolved with a reply (API)")
        except ReplyError as exc:
            raise ApiError(400, str(exc)) from None
        except StatusError as exc:  # rolled back with the reply: nothing changes
            raise ApiError(409, str(exc)) from None
        result["status"] = ticket.status
        return result

    result = await api.store.run(work)
    api.committed()
    return web.json_response(result, status=201)


async def post_status(call: Call) -> web.Response:
    number, api = call.params["number"], call.api
    target, until = call.body["status"], call.body.get("until")
    now = api.clock()

    def work(session):
        ticket = ticket_by_number(session, number, lock=True)
        if ticket is None:
            raise ApiError(404, f"no ticket {number}")
        try:
            api.statuses.request(session, ticket, target, now,
                                 f"changed by {call.employee['email'] or 'an employee'} "
                                 "(API)", until)
        except StatusError as exc:
            raise ApiError(_status_refusal(api.config, ticket.status, target),
                           str(exc).replace("(--until ISO8601)", "(until)")) from None
        return ticket_summary(session, api.config, ticket)

    result = await api.store.run(work)
    api.committed()
    return web.json_response(result)


async def post_assign(call: Call) -> web.Response:
    """Give the ticket to an employee (`employee`: id or email), or to nobody (null)."""
    from helpgate.gateway.status_service import assignment_service
    from helpgate.ticketstore.assignments import AssignmentError, find_employee
    number, api, ref = call.params["number"], call.api, call.body["employee"]
    if ref is not None and (isinstance(ref, bool) or not isinstance(ref, (int, str))
                            or (isinstance(ref, str) and not ref.strip())):
        raise ApiError(400, "employee must be an employee's id, email, or null")
    now, by = api.clock(), call.employee

    def work(session):
        ticket = ticket_by_number(session, number, lock=True)
        if ticket is None:
            raise ApiError(404, f"no ticket {number}")
        try:
            employee = find_employee(session, ref) if ref is not None else None
        except AssignmentError as exc:
            raise ApiError(422, str(exc)) from None
        who = by["email"] or "an employee"
        assignment_service(api.config).assign(
            session, ticket, employee, now,
            f"{'assigned' if employee else 'unassigned'} by {who} (API)", by["id"])
        return ticket_summary(session, api.config, ticket)

    result = await api.store.run(work)
    api.committed()
    return web.json_response(result)


def _uploads(config: Config, items: list[dict]) -> list[ReplyFile]:
    """The files of a reply or a note, decoded; one over mail.max_attachment_size is refused (the
    relay could not carry it, and an upload is not a mail to keep whatever it holds)."""
    import base64
    import binascii
    files = []
    for n, item in enumerate(items):
        try:
            data = base64.b64decode(item["content_base64"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"attachments[{n}].content_base64 is not base64") from None
        if len(data) > config.mail.max_attachment_size:
            raise ApiError(400, f"attachments[{n}] ({item['filename']}) is larger than "
                                f"mail.max_attachment_size ({config.mail.max_attachment_size} "
                                "bytes)")
        files.append(ReplyFile(item["filename"], item.get("content_type")
                               or "application/octet-stream", data))
    return files


def _status_refusal(config: Config, current: str, target: str) -> int:
    """409 when the ticket's state refuses the change (already there, no such
    transition); 422 when the request itself does not fit the status (`until` missing,
    past, or given to a status that takes none)."""
    state = config.statuses.states_by_id().get(current)
    if target == current or (state is not None and target not in state.next):
        return 409
    return 422


async def get_history(call: Call) -> web.Response:
    email, phone = call.params["email"], call.params["phone"]
    if not (email or "").strip() and not (phone or "").strip():
        raise ApiError(400, "give the customer's email or phone")
    rows = await call.api.store.run(ticket_list, call.api.config, None,
                                    (email or "").strip() or None,
                                    (phone or "").strip() or None)
    return web.json_response({"tickets": rows})


async def get_attachment(call: Call) -> web.StreamResponse:
    attachment_id = call.params["id"]
    found = await call.api.store.run(attachment_content, attachment_id)
    if found is None:
        raise ApiError(404, f"no attachment {attachment_id}")
    filename, data = found
    if data is None:
        raise ApiError(410, f"attachment {attachment_id} was not stored: it was larger "
                            "than mail.max_attachment_size")
    from helpgate.outbound.attachments import safe_filename
    name = safe_filename(filename, f"attachment-{attachment_id}")
    return web.Response(body=data, content_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


async def get_outbox(call: Call) -> web.Response:
    return web.json_response({"messages": await call.api.store.run(outbox_list)})


async def post_outbox_retry(call: Call) -> web.Response:
    from helpgate.ticketstore import outbox
    outbox_id = call.params["id"]
    try:
        await call.api.store.run(outbox.retry, outbox_id, call.api.clock())
    except outbox.RetryError as exc:
        raise ApiError(404 if str(exc).startswith("no ") else 409, str(exc)) from None
    call.api.committed()
    return web.json_response({"retry": outbox_id, "state": "queued"})


async def get_quarantine(call: Call) -> web.Response:
    now = call.api.clock()
    return web.json_response({"messages": await call.api.store.run(quarantine_list, now)})


async def post_quarantine_drop(call: Call) -> web.Response:
    from helpgate.ticketstore import quarantine
    reason = call.body["reason"].strip()
    if not reason:
        raise ApiError(400, "reason must not be empty")
    try:
        data = await call.api.store.run(quarantine.drop, call.params["id"], reason,
                                        call.api.clock())
    except quarantine.QuarantineError as exc:
        raise ApiError(404 if str(exc).startswith("no ") else 409, str(exc)) from None
    return web.json_response(data)


async def get_directory(call: Call) -> web.Response:
    return web.json_response(await call.api.store.run(directory_list))


async def post_company(call: Call) -> web.Response:
    return await _directory_entry(call, "company")


async def post_contact(call: Call) -> web.Response:
    return await _directory_entry(call, "contact")


async def post_employee(call: Call) -> web.Response:
    return await _directory_entry(call, "employee")


async def _directory_entry(call: Call, kind: str) -> web.Response:
    """Add or update one entry, as `helpgate directory add` (an administrator's token
    only: an employee entry decides who may sign staff answers)."""
    from pydantic import ValidationError

    from helpgate.ticketstore import people
    if call.employee["role"] != "admin":
        raise ApiError(403, "changing the directory needs an administrator's token")
    model = {"company": people.CompanyEntry, "contact": people.ContactEntry,
             "employee": people.EmployeeEntry}[kind]
    upsert = {"company": people.upsert_company, "contact": people.upsert_contact,
              "employee": people.upsert_employee}[kind]
    try:
        entry = model(**{k: v for k, v in call.body.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or kind
        raise ApiError(400, f"{kind} {where}: "
                            f"{error['msg'].removeprefix('Value error, ')}") from None
    now = call.api.clock()

    def work(session):
        try:
            upsert(session, entry, now)
        except people.DirectoryError as exc:
            raise ApiError(400, str(exc)) from None

    await call.api.store.run(work)
    return web.json_response({"added": kind, "name": entry.name, "email": entry.email},
                             status=201)


async def delete_company(call: Call) -> web.Response:
    return await _directory_delete(call, "company")


async def delete_contact(call: Call) -> web.Response:
    return await _directory_delete(call, "contact")


async def delete_employee(call: Call) -> web.Response:
    return await _directory_delete(call, "employee")


async def _directory_delete(call: Call, kind: str) -> web.Response:
    """Delete one entry that no history points at, as `helpgate directory remove`
    (an administrator's token only); 409 with the reason when something does."""
    from helpgate.ticketstore import people
    if call.employee["role"] != "admin":
        raise ApiError(403, "changing the directory needs an administrator's token")
    try:
        gone = await call.api.store.run(people.delete_entry, kind, call.params["id"])
    except people.EntryNotFound as exc:
        raise ApiError(404, str(exc)) from None
    except people.EntryInUse as exc:
        raise ApiError(409, str(exc)) from None
    return web.json_response(gone)


async def get_canned(call: Call) -> web.Response:
    """The answers (of one case with `?case=`), and the same grouped by case."""
    from helpgate.ticketstore.canned import canned_list, cases
    rows = await call.api.store.run(canned_list, call.params["case"])
    return web.json_response({"canned": rows, "cases": cases(rows)})


async def post_canned(call: Call) -> web.Response:
    from helpgate.ticketstore import canned
    try:
        row = await call.api.store.run(canned.create, call.body["title"], call.body["text"],
                                       call.api.clock(), call.body.get("case"))
    except canned.CannedError as exc:
        raise ApiError(409, str(exc)) from None
    return web.json_response(row, status=201)


async def put_canned(call: Call) -> web.Response:
    from helpgate.ticketstore import canned
    try:
        row = await call.api.store.run(canned.update, call.params["id"],
                                       call.body.get("title"), call.body.get("text"),
                                       call.api.clock(), call.body.get("case", canned.UNSET))
    except canned.CannedError as exc:
        raise ApiError(404 if str(exc).startswith("no ") else 409, str(exc)) from None
    return web.json_response(row)


async def delete_canned(call: Call) -> web.Response:
    from helpgate.ticketstore import canned
    try:
        await call.api.store.run(canned.delete, call.params["id"])
    except canned.CannedError as exc:
        raise ApiError(404, str(exc)) from None
    return web.json_response({"deleted": call.params["id"]})


async def post_quarantine_replay(call: Call) -> web.Response:
    from helpgate.gateway.pipeline import ReplayError
    try:
        result = await call.api.pipeline().replay(call.params["id"])
    except ReplayError as exc:
        raise ApiError(404 if str(exc).startswith("no ") else 409, str(exc)) from None
    call.api.committed()
    return web.json_response(result.as_dict())


# --------------------------------------------------------------------------- the table
def routes(config: Config) -> list[Route]:
    statuses = [s.id for s in config.statuses.states]
    number = Param("number", "path", NUMBER, "ticket", required=True)
    text = _string(minLength=1, maxLength=MAX_TEXT, pattern=NOT_BLANK)

    name = _string(minLength=1, maxLength=255, pattern=NOT_BLANK)
    email = _string(minLength=3, maxLength=320)
    phone = _string(minLength=1, maxLength=40)

    def canned(required: list[str]) -> dict:
        return {"type": "object", "additionalProperties": False, "required": required,
                "properties": {"title": _string(minLength=1, maxLength=200,
                                                pattern=NOT_BLANK), "text": text,
                               "case": _string(maxLength=100, description="the case it "
                                               "is filed under; \"\" for none")}}

    # The files of a reply or a note, each decoded and checked by _uploads.
    attachments = {"type": "array", "maxItems": 20, "items": {
        "type": "object", "additionalProperties": False,
        "required": ["filename", "content_base64"], "properties": {
            "filename": _string(minLength=1, maxLength=500, pattern=NOT_BLANK),
            "content_type": _string(maxLength=200, pattern="^[A-Za-z0-9!#$&^_.+-]+/"
                                                           "[A-Za-z0-9!#$&^_.+-]+$"),
            "content_base64": _string(maxLength=MAX_BASE64)}}}

    def ident(what: str) -> Param:
        return Param("id", "path", NUMBER, what, required=True)

    return [
        Route("GET", "/health", get_health, "The database, the channels in use and the "
              "outbox backlog; 503 when the database does not answer", auth=False,
              errors=(503,)),
        Route("GET", "/openapi.json", get_openapi, "This document", auth=False),
        Route("GET", "/metrics", get_metrics, "Prometheus metrics (text format)",
              content_type="text/plain"),
        Route("GET", "/me", get_me, "The employee the token acts as"),
        Route("GET", "/tickets", get_tickets, "Tickets, newest first, a page at a time",
              params=[
                  Param("status", "query", _string(enum=statuses), "only this status"),
                  Param("contact", "query", _string(minLength=1, maxLength=320),
                        "only this contact's tickets (email)"),
                  Param("company", "query", _string(minLength=1, maxLength=255),
                        "only this company's tickets (name)"),
                  Param("cursor", "query", _string(pattern=DIGITS, maxLength=19),
                        "next_cursor of the previous page"),
                  Param("limit", "query", {"type": "integer", "minimum": 1,
                                           "maximum": PAGE_MAX, "default": PAGE_DEFAULT},
                        "tickets per page")],
              errors=(400,)),
        Route("GET", "/tickets/{number}", get_ticket, "A ticket with its comments and "
              "status history", params=[number], errors=(404,)),
        Route("POST", "/tickets/{number}/reply", post_reply, "A public answer, relayed to "
              "the customer (on `via`, else where the ticket came from); `resolve`: send "
              "and resolve in one step", params=[number], body={
                  "type": "object", "additionalProperties": False,
                  "properties": {
                      "text": text,
                      "canned": {**NUMBER, "description": "a canned answer's id: its "
                                 "text goes first, then `text` if given"},
                      "via": _string(enum=list(CHANNELS)),
                      "attachments": attachments,
                      "resolve": {"type": "boolean", "default": False}}},
              errors=(400, 403, 404, 409)),
        Route("POST", "/tickets/{number}/note", post_note, "A private note, with files if "
              "given: stored, sent to no customer", params=[number], body={
                  "type": "object", "additionalProperties": False, "required": ["text"],
                  "properties": {"text": text, "attachments": attachments}},
              errors=(400, 403, 404)),
        Route("POST", "/tickets/{number}/status", post_status, "Change the status (the "
              "status model's transitions; a pending-like status needs `until`)",
              params=[number], body={
                  "type": "object", "additionalProperties": False, "required": ["status"],
                  "properties": {"status": _string(enum=statuses),
                                 "until": _string(format="date-time", maxLength=64)}},
              errors=(400, 404, 409, 422)),
        Route("POST", "/tickets/{number}/assign", post_assign, "Give the ticket to an "
              "employee (id or email), or to nobody (null); the assignee is told "
              "(notifications.employee_events)", params=[number], body={
                  "type": "object", "additionalProperties": False, "required": ["employee"],
                  "properties": {"employee": {
                      "nullable": True, "description": "an employee's id or email; null "
                      "unassigns", "anyOf": [NUMBER, _string(minLength=1, maxLength=320)]}}},
              errors=(400, 404, 422)),
        Route("GET", "/customers/history", get_history, "A customer's tickets across "
              "channels, by email or phone (R-TH-10)", params=[
                  Param("email", "query", _string(minLength=1, maxLength=320)),
                  Param("phone", "query", _string(minLength=1, maxLength=40))],
              errors=(400,)),
        Route("GET", "/attachments/{id}", get_attachment, "A stored attachment's content",
              params=[ident("attachment")], errors=(404, 410),
              content_type="application/octet-stream"),
        Route("GET", "/outbox", get_outbox, "Outbound messages, queued and sent"),
        Route("POST", "/outbox/{id}/retry", post_outbox_retry, "Send a parked or "
              "uncertain message again", params=[ident("outbox message")],
              errors=(404, 409)),
        Route("GET", "/quarantine", get_quarantine, "Messages that could not be decided"),
        Route("POST", "/quarantine/{id}/drop", post_quarantine_drop, "Give up on a "
              "quarantined message (kept, with the reason)",
              params=[ident("quarantined message")], body={
                  "type": "object", "additionalProperties": False, "required": ["reason"],
                  "properties": {"reason": _string(minLength=1, maxLength=1000,
                                                  pattern=NOT_BLANK)}},
              errors=(400, 404, 409)),
        Route("POST", "/quarantine/{id}/replay", post_quarantine_replay, "Run a "
              "quarantined message through the pipeline again (after a fix)",
              params=[ident("quarantined message")], errors=(404, 409)),
        Route("GET", "/canned", get_canned, "Canned answers, and the same grouped by "
              "case", params=[Param("case", "query", _string(minLength=1, maxLength=100),
                                    "only the answers filed under this case")],
              errors=(400,)),
        Route("POST", "/canned", post_canned, "A new canned answer", body=canned(
              ["title", "text"]), errors=(400, 409)),
        Route("PUT", "/canned/{id}", put_canned, "Change a canned answer's title, text or "
              "case",
              params=[ident("canned answer")], body=canned([]), errors=(400, 404, 409)),
        Route("DELETE", "/canned/{id}", delete_canned, "Delete a canned answer",
              params=[ident("canned answer")], errors=(404,)),
        Route("GET", "/directory", get_directory, "Companies, contacts and employees"),
        Route("POST", "/directory/companies", post_company, "Add or update a company "
              "(by name; an administrator's token)", body=_entry({
                  "name": name, "email": email, "phone": phone,
                  "domains": {"type": "array", "maxItems": 100,
                              "items": _string(minLength=1, maxLength=255)}}, "name"),
              errors=(400, 403)),
        Route("POST", "/directory/contacts", post_contact, "Add or update a contact (by "
              "email; an administrator's token)", body=_entry({
                  "name": name, "email": email, "phone": phone,
                  "company": _string(minLength=1, maxLength=255)}), errors=(400, 403)),
        Route("POST", "/directory/employees", post_employee, "Add or update an employee "
              "(by email; an administrator's token)", body=_entry({
                  "name": name, "email": email, "phone": phone,
                  "role": _string(enum=["admin", "agent"], default="agent")}, "name"),
              errors=(400, 403)),
        Route("DELETE", "/directory/companies/{id}", delete_company, "Delete a company "
              "without tickets or contacts (an administrator's token)",
              params=[ident("company")], errors=(403, 404, 409)),
        Route("DELETE", "/directory/contacts/{id}", delete_contact, "Delete a contact "
              "without tickets or comments (an administrator's token)",
              params=[ident("contact")], errors=(403, 404, 409)),
        Route("DELETE", "/directory/employees/{id}", delete_employee, "Delete an employee "
              "who wrote no comment, with their API tokens (an administrator's token; "
              "never the last administrator)", params=[ident("employee")],
              errors=(403, 404, 409)),
    ]


def _entry(properties: dict, *required: str) -> dict:
    return {"type": "object", "additionalProperties": False, "required": list(required),
            "properties": properties}


def openapi(table: list[Route], config: Config) -> dict:
    """The OpenAPI 3.0 document of the route table."""
    paths: dict = {}
    for route in table:
        responses: dict = {"200" if route.method != "POST" or route.path.endswith(
            ("/status", "/retry", "/drop", "/replay", "/assign")) else "201": {
            "description": "done", "content": {route.content_type: {"schema": (
                route.response if route.content_type == "application/json"
                else {"type": "string"} if route.content_type.startswith("text/")
                else {"type": "string", "format": "binary"})}}}}
        errors = set(route.errors)
        if route.auth:
            errors |= {401, 429}
        for status in sorted(errors):
            responses[str(status)] = {"description": _ERROR_TEXT[status], "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        operation: dict = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": responses,
        }
        if not route.auth:
            operation["security"] = []
        if route.params:
            operation["parameters"] = [{
                "name": p.name, "in": p.where, "required": p.where == "path" or p.required,
                "description": p.description, "schema": p.schema} for p in route.params]
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": route.body}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "helpgate staff API", "version": API_VERSION,
                 "description": "Tickets, replies, notes and status changes for staff; "
                                "every error is JSON {error: {status, message}}."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR},
        },
        "security": [{"token": []}],
    }


_ERROR_TEXT = {400: "bad input; nothing changed", 401: "no valid API token",
               403: "not allowed for this token's employee", 404: "not found",
               409: "not allowed in the current state; nothing changed",
               410: "gone: never stored",
               422: "the request does not fit (a status's until time); nothing changed",
               429: "rate limit reached (Retry-After)",
               503: "the database does not answer"}
