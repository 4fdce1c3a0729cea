"""OAuth2 access tokens for mailboxes and relays, and `helpgate oauth login`.

`TokenBroker` is what the IMAP reader (through `Services.tokens`) and the SMTP transport
ask for an access token. It hands out the kept one while it is good and refreshes it a
little before it expires, following ticketstore/oauth.py: one process refreshes at a
time (a lease on the row), and a rotated refresh token is committed before the access
token of the same answer leaves this module. A token a server refused is refreshed once;
when the provider then refuses the grant (`invalid_grant`: revoked, expired, password
changed) or a server refuses even the fresh token, the grant is marked as needing a
login, staff are told once, and every user of it stops retrying the provider until
`helpgate oauth login` stores a new one.

The login itself is the device-code flow where the provider offers it (RFC 8628:
a code to type on another device) and the authorisation-code flow with PKCE and a
redirect to a local port otherwise (RFC 8252: a browser on this or a forwarded machine).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from helpgate.config.oauth import (
    DEVICE_GRANT,
    Endpoints,
    GrantNeedsLogin,
    TokenUnavailable,
    endpoints,
)
from helpgate.config.schema import Config
from helpgate.ticketstore import oauth as grants
from helpgate.ticketstore.repository import Store

log = logging.getLogger("helpgate.oauth")
# Error codes with which a token endpoint refuses the grant itself (RFC 6749 §5.2): no
# retry helps, a person must log in again (or fix the app's registration).
REFUSALS = {"invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope"}
DEFAULT_LIFETIME = 3600
# An access token is refreshed this long before it expires (a quarter of a short one).
EARLY = 300


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class GrantUse:
    """One grant as the config uses it: its endpoints (scopes of every user merged)
    and who uses it ("imap support@example.com/INBOX", "smtp relay")."""

    name: str
    endpoints: Endpoints
    users: tuple[str, ...]


def configured_grants(config: Config) -> dict[str, GrantUse]:
    """Every grant the config's mailboxes and relay name, by name. The first user's
    table gives the endpoints; the scopes are everyone's."""
    uses: list[tuple[str, Any, str, str]] = [
        (mailbox.grant_name, mailbox.oauth2, "imap", f"imap {mailbox.name}")
        for mailbox in config.mail.imap if mailbox.auth == "oauth2"]
    relay = config.mail.smtp
    if relay.host and relay.auth == "oauth2":
        uses.append((relay.grant_name, relay.oauth2, "smtp",
                     f"smtp {relay.username}@{relay.host}"))
    by_name: dict[str, list[tuple[Any, str, str]]] = {}
    for name, oauth, use, who in uses:
        by_name.setdefault(name, []).append((oauth, use, who))
    result = {}
    for name, users in by_name.items():
        scopes = tuple(scope for oauth, use, _ in users for scope in endpoints(oauth, use).scopes)
        oauth, use, _ = users[0]
        result[name] = GrantUse(name, endpoints(oauth, use, scopes),
                                tuple(who for _, _, who in users))
    return result


@dataclass(frozen=True, slots=True)
class Tokens:
    """A token endpoint's answer."""

    access: str
    refresh: str | None
    expires_at: datetime
    refresh_at: datetime

    @classmethod
    def from_answer(cls, answer: dict, now: datetime) -> Tokens:
        access = answer.get("access_token")
        if not isinstance(access, str) or not access:
            raise TokenUnavailable("the token endpoint answered without an access_token")
        try:
            lifetime = max(1, int(answer.get("expires_in") or DEFAULT_LIFETIME))
        except (TypeError, ValueError):
            lifetime = DEFAULT_LIFETIME
        refresh = answer.get("refresh_token")
        return cls(access, refresh if isinstance(refresh, str) and refresh else None,
                   now + timedelta(seconds=lifetime),
                   now + timedelta(seconds=lifetime - min(EARLY, lifetime / 4)))


class Refused(Exception):
    """The token endpoint refused the grant (REFUSALS): `error` and its description."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


async def token_request(url: str, form: dict[str, str], seconds: float) -> dict:
    """POST to a token (or device-authorisation) endpoint; the JSON answer. Refused for a
    refusal of the grant (and a device login's "authorization_pending", which the caller
    tells apart by `error`), TokenUnavailable for anything that may pass (network, 5xx,
    429). At most `seconds` in all."""
    import aiohttp  # here: a fifth of a second at start that only OAuth2 mailboxes need
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as http, \
                http.post(url, data=form, headers={"Accept": "application/json"}) as response:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
            if response.status == 200 and isinstance(answer, dict):
                return answer
            if isinstance(answer, dict) and isinstance(answer.get("error"), str) \
                    and response.status < 500 and response.status != 429:
                raise Refused(answer["error"], str(answer.get("error_description") or ""))
            raise TokenUnavailable(f"{url} answered HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TokenUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None


def client_form(ends: Endpoints, **fields: str) -> dict[str, str]:
    form = {**fields, "client_id": ends.client_id}
    if ends.client_secret:
        form["client_secret"] = ends.client_secret
    return form


class TokenBroker:
    """Access tokens by grant name; see the module docstring. One per process."""

    def __init__(self, store: Store, config: Config,
                 notify: Callable | None = None, clock: Callable[[], datetime] = utcnow,
                 box: grants.SecretBox | None = None) -> None:
        self.store = store
        self.grants = configured_grants(config)
        self.box = box or grants.secret_box()
        self.notify = notify
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        # The stored (sealed) form of each access token handed out, to name a refused one.
        self._sealed: dict[str, tuple[str, str]] = {}

    def _ends(self, name: str) -> Endpoints:
        use = self.grants.get(name)
        if use is None:
            raise GrantNeedsLogin(name, f"grant {name!r} is not in the configuration")
        return use.endpoints

    async def token(self, name: str, rejected: str | None = None) -> str:
        """A good access token of grant `name`. `rejected`: one a server just refused,
        which is then not given out again. Raises GrantNeedsLogin or TokenUnavailable."""
        ends = self._ends(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            refused = None
            if rejected is not None:
                sealed, plain = self._sealed.get(name, (None, None))
                refused = sealed if plain == rejected else "(unknown)"
            lease = timedelta(seconds=ends.timeout + 10)
            deadline = self.clock() + lease * 2
            while True:
                step = await self.store.run(grants.begin_refresh, name, self.clock(), lease,
                                            refused)
                if step.kind == "fresh":
                    return self._hand_out(name, step.access)
                if step.kind == "missing":
                    raise GrantNeedsLogin(name, "no login stored yet")
                if step.kind == "needs_login":
                    raise GrantNeedsLogin(name, step.detail or "the provider refused the grant")
                if step.kind == "refresh":
                    return await self._refresh(name, ends, step)
                if self.clock() > deadline:
                    raise TokenUnavailable(f"grant {name}: another process is refreshing it "
                                           "and has not finished")
                await asyncio.sleep(0.2)  # another process refreshes: use its outcome

    def _hand_out(self, name: str, sealed: str) -> str:
        plain = self.box.open(sealed)
        self._sealed[name] = (sealed, plain)
        return plain

    async def _refresh(self, name: str, ends: Endpoints, step: grants.Step) -> str:
        now = self.clock()
        try:
            refresh = self.box.open(step.refresh)
            form = client_form(ends, grant_type="refresh_token", refresh_token=refresh)
            if ends.provider in ("microsoft", "generic") and ends.scopes:
                form["scope"] = " ".join(ends.scopes)  # Microsoft requires it here
            answer = await token_request(ends.token_url, form, ends.timeout)
            tokens = Tokens.from_answer(answer, now)
        except Refused as exc:
            await self.refused(name, f"the token endpoint refused the refresh: {exc}")
            raise GrantNeedsLogin(name, str(exc)) from None
        except BaseException:
            await self.store.run(grants.release, name, self.clock())
            raise
        sealed_access = self.box.seal(tokens.access)
        rotated = None
        if tokens.refresh is not None and tokens.refresh != refresh:
            rotated = self.box.seal(tokens.refresh)
        # Committed before the access token is used: see ticketstore/oauth.py.
        await self.store.run(grants.finish_refresh, name, rotated, sealed_access,
                             tokens.expires_at, tokens.refresh_at, self.clock())
        log.info("grant %s: access token refreshed%s, good until %s", name,
                 " (refresh token rotated and stored)" if rotated else "",
                 tokens.expires_at.isoformat(timespec="seconds"))
        self._sealed[name] = (sealed_access, tokens.access)
        return tokens.access

    async def refused(self, name: str, detail: str) -> None:
        """The grant no longer works (the provider said so, or a server refused a fresh
        token): mark it as needing a login and, the first time, tell staff."""
        marked = await self.store.run(grants.fail_refresh, name, detail, self.clock(),
                                      self.notify)
        if marked:
            log.error("grant %s needs a new login: %s; run: helpgate oauth login %s",
                      name, detail, name)


# ------------------------------------------------------------------------ the login
class LoginError(Exception):
    """The login did not complete: the message says why, in one line."""


async def login(store: Store, use: GrantUse, out: Callable[[str], None],
                box: grants.SecretBox, clock: Callable[[], datetime] = utcnow,
                wait: float = 900.0) -> Tokens:
    """`helpgate oauth login NAME`: the flow the endpoints call for, then the grant
    stored (state ok). `out` prints what the admin must do."""
    ends = use.endpoints
    flow = ends.login_flow
    if flow == "device" and not ends.device_url:
        raise LoginError(f"grant {use.name}: the provider has no device-code endpoint; "
                         "use flow = \"browser\" or set device_url")
    if flow == "browser" and not ends.authorize_url:
        raise LoginError(f"grant {use.name}: no authorize_url for a browser login")
    try:
        if flow == "device":
            answer = await _device_flow(ends, out, wait)
        else:
            answer = await _browser_flow(ends, out, wait)
    except Refused as exc:
        raise LoginError(f"the provider refused the login: {exc}") from None
    except TokenUnavailable as exc:
        raise LoginError(str(exc)) from None
    now = clock()
    tokens = Tokens.from_answer(answer, now)
    if tokens.refresh is None:
        raise LoginError("the provider gave no refresh token: the app must ask for offline "
                         "access (Microsoft: scope offline_access; Google: a consent "
                         "prompt) — helpgate could only read mail for an hour")
    await store.run(grants.save_login, use.name, ends.provider, box.seal(tokens.refresh),
                    box.seal(tokens.access), tokens.expires_at, tokens.refresh_at, now)
    return tokens


async def _device_flow(ends: Endpoints, out: Callable[[str], None], wait: float) -> dict:
    start = await token_request(ends.device_url,
                                client_form(ends, scope=" ".join(ends.scopes)), ends.timeout)
    device_code = start.get("device_code")
    user_code = start.get("user_code")
    where = start.get("verification_uri_complete") or start.get("verification_uri") \
        or start.get("verification_url")
    if not (device_code and user_code and where):
        raise LoginError(f"{ends.device_url} answered no device code: {sorted(start)}")
    interval = float(start.get("interval") or 5)
    expires = min(float(start.get("expires_in") or wait), wait)
    out(f"To sign in, open {where} and enter the code {user_code}")
    out(f"(waiting up to {expires / 60:.0f} minutes)")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + expires
    while loop.time() < deadline:
        await asyncio.sleep(interval)
        try:
            # Yandex's own names for the same request (its docs); RFC 8628's elsewhere.
            form = client_form(ends, grant_type="device_code", code=device_code) \
                if ends.provider == "yandex" else \
                client_form(ends, grant_type=DEVICE_GRANT, device_code=device_code)
            return await token_request(ends.token_url, form, ends.timeout)
        except Refused as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":
                interval += 5
                continue
            raise
    raise LoginError("nobody entered the code in time; run the login again")


async def _browser_flow(ends: Endpoints, out: Callable[[str], None], wait: float) -> dict:
    from aiohttp import web

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    arrived: asyncio.Future = asyncio.get_running_loop().create_future()

    async def redirected(request: web.Request) -> web.Response:
        query = request.query
        if query.get("state") != state:
            return web.Response(status=400, text="This is not the login helpgate started.")
        if not arrived.done():
            arrived.set_result(dict(query))
        if "code" in query:
            return web.Response(text="helpgate: signed in. You may close this window.")
        return web.Response(status=400, text=f"helpgate: sign-in failed: {query.get('error')}")

    app = web.Application()
    app.router.add_get("/", redirected)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", ends.redirect_port)
    try:
        await site.start()
        port = runner.addresses[0][1]
        redirect_uri = f"http://localhost:{port}/"
        query = {"response_type": "code", "client_id": ends.client_id,
                 "redirect_uri": redirect_uri, "scope": " ".join(ends.scopes), "state": state,
                 "code_challenge": challenge, "code_challenge_method": "S256",
                 **dict(ends.authorize_params)}
        separator = "&" if "?" in ends.authorize_url else "?"
        out(f"To sign in, open this address in a browser on this machine (or forward port "
            f"{port} to it):")
        out(f"{ends.authorize_url}{separator}{urlencode(query)}")
        try:
            result = await asyncio.wait_for(arrived, wait)
        except TimeoutError:
            raise LoginError("nobody signed in in time; run the login again") from None
    finally:
        await runner.cleanup()
    if "code" not in result:
        raise LoginError(f"the provider answered {result.get('error')}: "
                         f"{result.get('error_description', '')}")
    return await token_request(ends.token_url, client_form(
        ends, grant_type="authorization_code", code=result["code"],
        redirect_uri=redirect_uri, code_verifier=verifier), ends.timeout)
