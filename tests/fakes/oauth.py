"""A local fake OAuth2 provider: token endpoint, device authorisation, a browser's
authorisation page, and the token-info endpoint Dovecot's oauth2 passdb asks.

It behaves as the strict providers do where helpgate could go wrong:

- every refresh ROTATES the refresh token and retires the old one at once: a client that
  keeps or re-uses an old refresh token gets `invalid_grant`, as a Microsoft or Google
  mailbox does after 90 days;
- access tokens live `lifetime` seconds; Dovecot's token-info call says 401 for an
  expired, unknown or revoked one;
- `revoke()` kills the grant (the user changed the password, an admin revoked consent):
  every refresh answers `invalid_grant`.

    async with FakeOAuth() as provider:
        dovecot = Dovecot(certificate, oauth=provider)    # validates through us
        ... provider.token_url, provider.device_url, provider.authorize_url
        provider.approve(user_code)                        # the person types the code

It runs on the test's event loop; Dovecot and a `helpgate` process reach it over HTTP on
a loopback port. `on_first_use` lets a test act at the moment a newly issued access
token is first presented (the kill -9 test kills the gateway there).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from aiohttp import web

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class Grant:
    user: str
    refresh: str
    revoked: bool = False
    # Every refresh token ever issued for it, the retired ones included.
    history: list[str] = field(default_factory=list)


class FakeOAuth:
    def __init__(self, user: str = "support", lifetime: int = 3600,
                 client_id: str = "helpgate-test") -> None:
        self.user = user
        self.lifetime = lifetime
        self.client_id = client_id
        self.grants: dict[str, Grant] = {}  # by current refresh token
        self.access: dict[str, tuple[Grant, float]] = {}  # token -> (grant, expires)
        self.devices: dict[str, dict] = {}  # device_code -> {user_code, approved}
        self.codes: dict[str, tuple[str, str]] = {}  # auth code -> (challenge, redirect)
        self.refreshes = 0  # refresh_token grants answered with tokens
        self.refused: list[str] = []  # refresh tokens answered invalid_grant
        self.used: list[str] = []  # access tokens presented to the token-info endpoint
        self.on_first_use: Callable[[str], None] | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> FakeOAuth:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/devicecode", self._device)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_get("/tokeninfo", self._tokeninfo)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.base}/token"

    @property
    def device_url(self) -> str:
        return f"{self.base}/devicecode"

    @property
    def authorize_url(self) -> str:
        return f"{self.base}/authorize"

    @property
    def tokeninfo_url(self) -> str:
        return f"{self.base}/tokeninfo?access_token="

    def oauth2_config(self, **extra) -> dict:
        """A `[...oauth2]` table of provider "generic" pointing at this fake."""
        return {"provider": "generic", "client_id": self.client_id,
                "token_url": self.token_url, "device_url": self.device_url,
                "authorize_url": self.authorize_url, "scopes": ["mail"], "timeout": 5.0,
                **extra}

    # ------------------------------------------------------------ the test's side
    def approve(self, user_code: str) -> None:
        """The person typed the code on the provider's page and consented."""
        for device in self.devices.values():
            if device["user_code"] == user_code:
                device["approved"] = True
                return
        raise KeyError(user_code)

    def issue(self) -> str:
        """A grant made outside any flow (a login done earlier): its refresh token."""
        return self._new_grant()

    def revoke(self) -> None:
        for grant in self.grants.values():
            grant.revoked = True
        for token, (grant, _) in list(self.access.items()):
            if grant.revoked:
                del self.access[token]

    def expire_access_tokens(self) -> None:
        """As time does: every access token issued so far stops working."""
        self.access = {token: (grant, 0.0) for token, (grant, _) in self.access.items()}

    def valid(self, user: str, token: str) -> bool:
        """Whether an access token lets `user` in now (the SMTP relay's check)."""
        found = self.access.get(token)
        return found is not None and not found[0].revoked and found[1] >= time.time() \
            and found[0].user == user

    def current_refresh(self) -> str:
        """The one refresh token that works now (tests have one grant)."""
        live = [token for token, grant in self.grants.items() if not grant.revoked]
        assert len(live) == 1, live
        return live[0]

    # --------------------------------------------------------------- endpoints
    def _new_grant(self) -> str:
        refresh = "rt-" + secrets.token_urlsafe(12)
        grant = Grant(self.user, refresh, history=[refresh])
        self.grants[refresh] = grant
        return refresh

    def _tokens(self, grant: Grant) -> dict:
        access = "at-" + secrets.token_urlsafe(12)
        self.access[access] = (grant, time.time() + self.lifetime)
        return {"access_token": access, "token_type": "Bearer", "expires_in": self.lifetime,
                "refresh_token": grant.refresh, "scope": "mail"}

    @staticmethod
    def _error(error: str, description: str = "", status: int = 400) -> web.Response:
        return web.json_response({"error": error, "error_description": description},
                                 status=status)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != self.client_id:
            return self._error("invalid_client", "unknown client", 401)
        kind = form.get("grant_type")
        if kind == "refresh_token":
            grant = self.grants.get(str(form.get("refresh_token")))
            if grant is None or grant.revoked:
                self.refused.append(str(form.get("refresh_token")))
                return self._error("invalid_grant", "AADSTS70000: the refresh token has "
                                   "expired or was revoked")
            # Rotation: a new refresh token; the old one dies this instant.
            del self.grants[grant.refresh]
            grant.refresh = "rt-" + secrets.token_urlsafe(12)
            grant.history.append(grant.refresh)
            self.grants[grant.refresh] = grant
            self.refreshes += 1
            return web.json_response(self._tokens(grant))
        if kind == DEVICE_GRANT:
            device = self.devices.get(str(form.get("device_code")))
            if device is None:
                return self._error("expired_token")
            if not device["approved"]:
                return self._error("authorization_pending")
            del self.devices[str(form.get("device_code"))]
            return web.json_response(self._tokens(self.grants[self._new_grant()]))
        if kind == "authorization_code":
            code = self.codes.pop(str(form.get("code")), None)
            if code is None or code[1] != form.get("redirect_uri"):
                return self._error("invalid_grant", "unknown code")
            verifier = str(form.get("code_verifier", ""))
            challenge = base64.urlsafe_b64encode(
                hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge != code[0]:
                return self._error("invalid_grant", "PKCE verification failed")
            return web.json_response(self._tokens(self.grants[self._new_grant()]))
        return self._error("unsupported_grant_type")

    async def _device(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != self.client_id:
            return self._error("invalid_client", "unknown client", 401)
        device_code = secrets.token_urlsafe(16)
        user_code = secrets.token_hex(4).upper()
        self.devices[device_code] = {"user_code": user_code, "approved": False}
        return web.json_response({"device_code": device_code, "user_code": user_code,
                                  "verification_uri": f"{self.base}/device",
                                  "expires_in": 600, "interval": 0.2})

    async def _authorize(self, request: web.Request) -> web.Response:
        """The person signs in and consents at once; the browser goes back to the app."""
        query = request.query
        if query.get("client_id") != self.client_id:
            return web.Response(status=400, text="unknown client")
        code = secrets.token_urlsafe(12)
        self.codes[code] = (query.get("code_challenge", ""), query["redirect_uri"])
        back = urlencode({"code": code, "state": query.get("state", "")})
        raise web.HTTPFound(f"{query['redirect_uri']}?{back}")

    async def _tokeninfo(self, request: web.Request) -> web.Response:
        token = request.query.get("access_token", "")
        found = self.access.get(token)
        first = token not in self.used
        self.used.append(token)
        if found is None or found[0].revoked or found[1] < time.time():
            return web.json_response({"error": "invalid_token"}, status=401)
        if first and self.on_first_use is not None:
            self.on_first_use(token)
        return web.json_response({"email": found[0].user, "active": "true"})
