"""OAuth2 for mailboxes and relays: the `[...oauth2]` table and the providers' presets.

Microsoft 365 and Google accept no password on IMAP and SMTP any more; Yandex prefers a
token. A mailbox or relay with `auth = "oauth2"` names a provider here, and the gateway
gets its access tokens from the grant `helpgate oauth login` stored (gateway/oauth.py).
The presets are the providers' published endpoints and scopes, so an admin types only
the client id (and the secret Google needs); `generic` takes every URL from the config.

Also here, because both the IMAP reader (channels/) and the SMTP transport (outbound/)
speak it and both may import config: the SASL XOAUTH2 initial response.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

Provider = Literal["microsoft", "google", "yandex", "generic"]
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_TENANT = re.compile(r"^[A-Za-z0-9._-]+$")


class GrantNeedsLogin(Exception):
    """The grant cannot give tokens until someone runs `helpgate oauth login NAME`."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"grant {name} needs a login ({detail}); run: "
                         f"helpgate oauth login {name}")
        self.name = name
        self.detail = detail


class TokenUnavailable(Exception):
    """No token right now for a reason that may pass (network, the provider's 5xx)."""


@dataclass(frozen=True, slots=True)
class Preset:
    """A provider's endpoints. `device_url` empty: no device-code flow for mail scopes
    (Google offers none for https://mail.google.com/), so login uses a browser and a
    local redirect. `{tenant}` is filled from the config (Microsoft)."""

    token_url: str
    authorize_url: str
    device_url: str
    imap_scopes: tuple[str, ...]
    smtp_scopes: tuple[str, ...]
    # Extra parameters of the authorisation request (Google sends a refresh token only
    # with access_type=offline, and again on a new login only with prompt=consent).
    authorize_params: tuple[tuple[str, str], ...] = ()


_MICROSOFT = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
PRESETS: dict[str, Preset] = {
    # learn.microsoft.com: "Authenticate an IMAP, POP or SMTP connection using OAuth".
    "microsoft": Preset(
        token_url=f"{_MICROSOFT}/token", authorize_url=f"{_MICROSOFT}/authorize",
        device_url=f"{_MICROSOFT}/devicecode",
        imap_scopes=("https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"),
        smtp_scopes=("https://outlook.office.com/SMTP.Send", "offline_access")),
    # developers.google.com: "OAuth 2.0 for installed apps" (loopback redirect).
    "google": Preset(
        token_url="https://oauth2.googleapis.com/token",
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth", device_url="",
        imap_scopes=("https://mail.google.com/",), smtp_scopes=("https://mail.google.com/",),
        authorize_params=(("access_type", "offline"), ("prompt", "consent"))),
    # yandex.ru/dev/id: device codes at /device/code, tokens at /token.
    "yandex": Preset(
        token_url="https://oauth.yandex.ru/token",
        authorize_url="https://oauth.yandex.ru/authorize",
        device_url="https://oauth.yandex.ru/device/code",
        imap_scopes=("mail:imap_full",), smtp_scopes=("mail:smtp",)),
}


class OAuth2Config(BaseModel):
    """`[mail.imap.oauth2]` or `[mail.smtp.oauth2]`: where the tokens come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # "microsoft" (Microsoft 365, Outlook.com), "google", "yandex", or "generic" with
    # token_url (and device_url and/or authorize_url) and scopes given here.
    provider: Provider
    # The app registered with the provider (Entra app, Google Cloud OAuth client, Yandex
    # OAuth app). Google's desktop clients also have a secret; public clients do not.
    client_id: str
    client_secret: str = ""
    # Microsoft only: the directory (tenant id or domain); "common" for any account,
    # "organizations" for work accounts only.
    tenant: str = "common"
    # The stored grant's name, what `helpgate oauth login NAME` takes. Default: the
    # mailbox's username. A mailbox and a relay of one account share one grant (one
    # login, one refresh token) when they name the same one; the login then asks for
    # the scopes of both.
    grant: str = ""
    # Overrides of the preset (required with provider "generic"; empty: the preset's).
    token_url: str = ""
    device_url: str = ""
    authorize_url: str = ""
    scopes: list[str] = []
    # `helpgate oauth login`: "auto" uses the device code where the provider offers one,
    # else a browser with a redirect to this machine; or force either.
    flow: Literal["auto", "device", "browser"] = "auto"
    # The local port the browser is redirected to (0: any free port; a provider that
    # registers exact redirect URIs needs a fixed one, http://localhost:PORT/).
    redirect_port: int = 0
    # Seconds each request to the token endpoint may take.
    timeout: float = 30.0

    @model_validator(mode="after")
    def _complete(self):
        if not self.client_id.strip():
            raise ValueError("oauth2.client_id is required (the app registered with the "
                             "provider)")
        if not _TENANT.match(self.tenant):
            raise ValueError(f"oauth2.tenant {self.tenant!r} is not a tenant id or domain")
        if self.provider == "generic":
            if not self.token_url:
                raise ValueError('oauth2 provider "generic" needs token_url')
            if not (self.device_url or self.authorize_url):
                raise ValueError('oauth2 provider "generic" needs device_url or '
                                 'authorize_url (how `helpgate oauth login` gets consent)')
        if not 0 <= self.redirect_port <= 65535:
            raise ValueError(f"oauth2.redirect_port {self.redirect_port} is not a port")
        if self.timeout <= 0:
            raise ValueError("oauth2.timeout must be positive")
        return self


@dataclass(frozen=True, slots=True)
class Endpoints:
    """What one grant talks to, the preset and the overrides merged."""

    provider: str
    client_id: str
    client_secret: str
    token_url: str
    device_url: str
    authorize_url: str
    scopes: tuple[str, ...]
    authorize_params: tuple[tuple[str, str], ...]
    flow: str
    redirect_port: int
    timeout: float

    @property
    def login_flow(self) -> str:
        """"device" or "browser": what `helpgate oauth login` does."""
        if self.flow != "auto":
            return self.flow
        return "device" if self.device_url else "browser"


def endpoints(oauth: OAuth2Config, use: Literal["imap", "smtp"],
              extra_scopes: tuple[str, ...] = ()) -> Endpoints:
    """The endpoints and scopes of a grant used for `use` (and `extra_scopes`, another
    user's of the same grant)."""
    preset = PRESETS.get(oauth.provider)

    def pick(own: str, preset_value: str) -> str:
        return (own or preset_value).replace("{tenant}", oauth.tenant)

    scopes = tuple(oauth.scopes) or (
        (preset.imap_scopes if use == "imap" else preset.smtp_scopes) if preset else ())
    return Endpoints(
        provider=oauth.provider, client_id=oauth.client_id, client_secret=oauth.client_secret,
        token_url=pick(oauth.token_url, preset.token_url if preset else ""),
        device_url=pick(oauth.device_url, preset.device_url if preset else ""),
        authorize_url=pick(oauth.authorize_url, preset.authorize_url if preset else ""),
        scopes=tuple(dict.fromkeys((*scopes, *extra_scopes))),
        authorize_params=preset.authorize_params if preset else (),
        flow=oauth.flow, redirect_port=oauth.redirect_port, timeout=oauth.timeout)


def xoauth2(user: str, token: str) -> str:
    """The SASL XOAUTH2 initial response, base64 (the same for IMAP and SMTP)."""
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
