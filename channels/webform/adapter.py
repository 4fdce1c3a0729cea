"""The web form's server (R-CH-5): an aiohttp app on [webform] host:port that serves the
form at `path` and takes its submissions there.

A submission is answered only once it is stored (services.ingest returned), like the
Telegram webhook: the thank-you page names the ticket; a failure to store answers 503
with the form and its values again, so the person loses nothing and may send again.

Before anything is stored, in this order:

1. Origin: a POST whose Origin header names a site other than helpgate's own (the page
   it served) and the sites in `allowed_origins` is refused, 403. The form is anonymous,
   so there is no session to forge, but another site must not post as if it were ours.
2. Size: a body over `max_body_size` is refused, 413 (aiohttp stops reading).
3. The fields: what is missing, too long or no address comes back, 422, the form again
   with a message next to each wrong field.
4. The rate per client address (`rate_limit` within `rate_window`, counted here in
   memory: an address is a client of this process only): over it, 429, the form again.
   The submitter's email is counted as any sender is, by the pipeline's throttle rule
   (threading.throttle_max): the excess is kept in quarantine, not lost.
5. The hidden trap field: filled means a bot. The page answers as on success, and the
   record is kept in quarantine with the reason (channels/webform/parse.py) — a person
   whose browser filled it loses nothing (rule spam_trap; a replay makes it a ticket).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import uuid
from collections import deque
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from aiohttp import web

from helpgate.channels.base import ChannelStartError, Services
from helpgate.channels.webform import form
from helpgate.channels.webform.parse import CHANNEL, clean, envelope
from helpgate.config.schema import WebformConfig, parse_window

log = logging.getLogger("helpgate.webform")
STOP_GRACE = 20.0
LANGUAGES = ("ru", "en")
# Addresses whose counts are kept at most; beyond it the stalest are forgotten (a flood
# from many addresses must not grow memory without end).
MAX_TRACKED = 50_000
BIND_FIXES = {
    errno.EADDRINUSE: "another program listens there: stop it, or set another "
                      "webform.port",
    errno.EACCES: "ports below 1024 need privileges: set webform.port to 1024 or above",
    errno.EADDRNOTAVAIL: "no interface has that address: check webform.host",
}


class RateLimit:
    """At most `limit` events per key within `window`, by the clock given (the gateway's,
    which tests move)."""

    def __init__(self, limit: int, window: timedelta, clock) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self.seen: dict[str, deque[datetime]] = {}

    def allow(self, key: str) -> bool:
        if self.limit <= 0:
            return True
        now = self.clock()
        times = self.seen.pop(key, None) or deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        allowed = len(times) < self.limit
        if allowed:
            times.append(now)
        # Re-inserted last: the dict's order is the order of use, the stalest first.
        self.seen[key] = times
        while len(self.seen) > MAX_TRACKED:
            self.seen.pop(next(iter(self.seen)))
        return allowed


class WebformAdapter:
    """The form's server from start() until stop(); see the module docstring."""

    def __init__(self, config: WebformConfig, services: Services, texts, language: str,
                 fallback_language: str) -> None:
        self.config = config
        self.services = services
        # language -> Texts (with the admin's overrides)
        self.texts = texts
        self.language = language
        self.fallback_language = fallback_language
        self.allowed = set(config.allowed_origins)
        self.rate = RateLimit(config.rate_limit, parse_window(config.rate_window),
                              services.clock)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._in_flight: set[asyncio.Task] = set()

    @property
    def name(self) -> str:
        return f"webform {self.config.host}:{self.config.port}{self.config.path}"

    async def start(self) -> None:
        config = self.config
        app = web.Application(client_max_size=config.request_limit())
        app.router.add_get(config.path, self._get)
        app.router.add_post(config.path, self._post)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_GRACE)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, config.host, config.port).start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            fix = BIND_FIXES.get(exc.errno, "check webform.host and webform.port")
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ChannelStartError(f"cannot listen on {config.host}:{config.port} (web form): "
                                    f"{reason}; {fix}") from None
        self.port = self._runner.addresses[0][1]
        log.info("%s listening on port %s", self.name, self.port)

    async def stop(self) -> None:
        """Stop taking submissions; those being stored are finished first."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._in_flight:
            await asyncio.wait(list(self._in_flight))

    # ------------------------------------------------------------------ requests
    def _lang(self, request: web.Request, posted: str | None = None) -> str:
        """The page's language: the form's own field or ?lang=, else the configured
        language, else the browser's (Accept-Language), else the fallback."""
        for choice in (posted, request.query.get("lang")):
            if choice in LANGUAGES:
                return choice
        if self.language in LANGUAGES:
            return self.language
        return accepted_language(request.headers.get("Accept-Language", "")) \
            or self.fallback_language

    def _action(self, lang: str) -> str:
        return f"{self.config.path}?lang={lang}"

    def _headers(self) -> dict[str, str]:
        # Framing only by the sites allowed to post it (and our own pages).
        ancestors = " ".join(["'self'", *sorted(self.allowed)])
        return {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                           f"form-action 'self'; frame-ancestors {ancestors}",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
                "Cache-Control": "no-store"}

    def _html(self, text: str, status: int = 200) -> web.Response:
        return web.Response(text=text, status=status, content_type="text/html",
                            charset="utf-8", headers=self._headers())

    def _form(self, lang: str, status: int = 200, **values) -> web.Response:
        return self._html(form.form_page(lang=lang, texts=self.texts(lang), config=self.config,
                                         action=self._action(lang), **values), status)

    async def _get(self, request: web.Request) -> web.Response:
        return self._form(self._lang(request))

    def _origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            # Not a browser's cross-site post (browsers send Origin with every POST); a
            # script can forge any header anyway, and the rate limit holds it.
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self.allowed:
            return True
        # Our own page: the origin's host is the one this request was sent to. The
        # scheme is not compared: behind a TLS proxy we are reached by plain http.
        return urlsplit(origin).netloc == (request.host or "").lower()

    def client(self, request: web.Request) -> str:
        header = self.config.client_ip_header
        if header:
            forwarded = request.headers.get(header, "")
            last = forwarded.split(",")[-1].strip()
            if last:
                return last
        return request.remote or "unknown"

    async def _post(self, request: web.Request) -> web.Response:
        if not self._origin_allowed(request):
            log.warning("webform: a post from origin %s refused (%s)",
                        request.headers.get("Origin"), self.client(request))
            return web.Response(status=403, text="this site may not post the form")
        try:
            posted = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="the form is too large")
        lang = self._lang(request, _first(posted, "lang"))
        texts = self.texts(lang)
        keys = form.keys(self.config)
        values = {key: clean(_first(posted, key) or "") for key in keys}
        errors = form.check(values, self.config, texts)
        files = _files(posted) if self.config.max_files else []
        if self.config.max_files and sum(len(v.encode()) for v in posted.values()
                                     if isinstance(v, str)) > self.config.max_body_size:
            # The room a request has for files is for files: the fields stay within
            # max_body_size as they do without any.
            return web.Response(status=413, text="the form is too large")
        refused = form.check_files([(name, len(data)) for name, _, data in files],
                                   self.config, texts)
        if refused:
            errors[form.FILES] = refused
        if errors:
            return self._form(lang, 422, values=values, errors=errors)
        client = self.client(request)
        if not self.rate.allow(client):
            log.info("webform: %s is over the rate limit; not stored", client)
            return self._form(lang, 429, values=values, notice=texts.webform_rate_limited)
        trap = clean(_first(posted, form.TRAP) or "")
        names = form.labels(texts, self.config, lang)
        fields = [{"key": key, "label": names[key], "value": values[key]} for key in keys]
        raw = envelope(uuid.uuid4().hex, fields, lang=lang, subject=texts.webform_subject,
                       client=client, trap=trap, files=files)
        task = asyncio.ensure_future(self._store(raw))
        # Tracked until done, not until this request ends: stopping waits for it.
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        try:
            result = await asyncio.shield(task)
        except Exception:
            log.exception("webform: a submission from %s could not be stored", client)
            return self._form(lang, 503, values=values, notice=texts.webform_failed)
        number = getattr(result, "ticket", None)
        if trap or str(getattr(result, "action", "")) not in ANSWERED:
            # Kept but not a ticket of its own (quarantine: the trap, the throttle).
            number = None
        return self._html(form.thanks_page(lang=lang, texts=texts, action=self._action(lang),
                                           number=number, email=values["email"]))

    async def _store(self, raw: bytes):
        messages = await self.services.parse_many(CHANNEL, [raw])
        results = await self.services.ingest(messages, self.config.ticket_type)
        return results[0]


# The pipeline's actions after which the submission is on a ticket the person may name.
ANSWERED = ("new_ticket", "comment", "reopened", "new_ticket_after_window")


def _first(posted, key: str) -> str | None:
    value = posted.get(key)
    return value if isinstance(value, str) else None


def _files(posted) -> list[tuple[str, str, bytes]]:
    """The files chosen, (filename, content type, bytes) each; the empty part a browser
    sends when none was chosen is no file."""
    chosen = []
    for part in posted.getall(form.FILES, []):
        if not isinstance(part, web.FileField):
            continue
        data = part.file.read()
        name = clean(part.filename or "")
        if not name and not data:
            continue
        chosen.append((name or "file", part.content_type or "application/octet-stream",
                       data))
    return chosen


def accepted_language(header: str) -> str | None:
    """The first of ru/en in an Accept-Language header by its q weights."""
    ranked = []
    for index, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and weight > 0:
            ranked.append((-weight, index, primary))
    return min(ranked)[2] if ranked else None
