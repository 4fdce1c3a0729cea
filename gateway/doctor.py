"""`helpgate doctor`: the state of each configured mailbox and relay, as the gateway left
it in the database, with the command that fixes what needs fixing.

It reads; it connects to no server (`helpgate <channel> check` does that for the
messengers). What it knows of a mailbox is how it signs in: with a password, or with an
OAuth2 grant whose state the token broker keeps (gateway/oauth.py) — never logged in,
refused by the provider (revoked, expired: "needs login"), or good — and whether the key
that opens the stored grant is in the environment.
"""

from __future__ import annotations

from helpgate.channels.base import Finding
from helpgate.config.schema import Config
from helpgate.gateway.oauth import configured_grants
from helpgate.ticketstore import oauth as grants
from helpgate.ticketstore.repository import Store


async def diagnose(config: Config, store: Store) -> list[Finding]:
    findings: list[Finding] = []
    configured = configured_grants(config)
    states = await store.run(grants.grant_states)
    box = None
    if configured:
        try:
            box = grants.secret_box()
        except grants.SecretKeyError as exc:
            findings.append(Finding(grants.KEY_VARIABLE, False, str(exc),
                                    f"export {grants.KEY_VARIABLE}=$(helpgate oauth key) "
                                    "(then log every grant in again)"))
    for mailbox in config.mail.imap:
        name = f"imap {mailbox.name}"
        if mailbox.auth == "oauth2":
            findings.append(await _grant(store, name, mailbox.grant_name, states, box))
        else:
            findings.append(Finding(name, True, "signs in with a password"))
    relay = config.mail.smtp
    if not relay.host:
        findings.append(Finding("smtp relay", True, "none configured: email notifications "
                                "wait in the outbox"))
    elif relay.auth == "oauth2":
        findings.append(await _grant(store, f"smtp {relay.host}", relay.grant_name, states,
                                     box))
    else:
        how = "with a password" if relay.username else "without AUTH"
        findings.append(Finding(f"smtp {relay.host}", True, f"signs in {how}"))
    return findings


async def _grant(store: Store, who: str, grant: str, states: dict,
                 box: grants.SecretBox | None) -> Finding:
    login = f"helpgate oauth login {grant}"
    state = states.get(grant)
    if state is None:
        return Finding(who, False, f"OAuth2 grant {grant} was never logged in", login)
    if state["state"] == grants.NEEDS_LOGIN:
        return Finding(who, False, f"OAuth2 grant {grant} needs login: {state['detail']}",
                       login)
    if box is not None:
        sealed = await store.run(grants.sealed_refresh_token, grant)
        try:
            if sealed is not None:
                box.open(sealed)
        except grants.SecretKeyError as exc:
            return Finding(who, False, str(exc), login)
    return Finding(who, True, f"OAuth2 grant {grant} ({state['provider']}) is good; "
                   f"access token until {state['access_expires_at']}, refresh token "
                   f"rotated {state['rotations']} times")
