"""`helpgate vk check`: the community bot's set-up as VK sees it, before anything runs.

What goes wrong when a VK community is connected: a token copied wrong or revoked, the
token of another community than `group_id`, the Long Poll API switched off or without
the message events, a confirmation code that is not the one VK expects. Each is found
here with read-only API calls against the configured `api_base_url` (groups.getById,
groups.getLongPollSettings, groups.getCallbackConfirmationCode) and reported as one line
in plain words with what to do.

vk-api is synchronous: the calls run in a worker thread.
"""

from __future__ import annotations

import asyncio

import requests
import vk_api

from helpgate.channels.base import Finding
from helpgate.channels.vk import api
from helpgate.channels.vk.adapter import START_FIXES
from helpgate.config.schema import Config, VkConfig

# The events the adapter reads; the Long Poll API must deliver all three (message_event:
# a customer's press of the bot's buttons).
EVENTS = ("message_new", "message_edit", "message_event")
SETTINGS_PLACE = "the community's settings (Manage → API usage"
NOT_CONFIGURED = Finding(
    "config", False, "vk is not configured: set [vk] token and group_id",
    "create a community access token (Manage → API usage → Access tokens, with the "
    "messages, docs and manage rights) and set [vk] token and group_id in helpgate.toml")
NETWORK = (requests.RequestException, vk_api.ApiHttpError, OSError)


class _Unreachable(Exception):
    pass


async def check(config: Config) -> list[Finding]:
    settings = config.vk
    if not settings.token:
        return [NOT_CONFIGURED]
    session = api.session(settings)
    try:
        return await asyncio.to_thread(_check, session, settings)
    finally:
        session.http.close()


def _call(session: api.BoundedVkApi, method: str, **values):
    try:
        return session.method(method, values)
    except NETWORK as exc:
        raise _Unreachable(str(exc)) from None


def _unreachable(settings: VkConfig, reason: str) -> Finding:
    return Finding(
        "api", False, f"cannot reach the VK API at {settings.api_base_url}: {reason}",
        "check [vk] api_base_url (https://api.vk.ru) and that this machine reaches it "
        "(network, firewall, proxy, DNS)")


def _check(session: api.BoundedVkApi, settings: VkConfig) -> list[Finding]:
    try:
        answer = _call(session, "groups.getById")
    except _Unreachable as exc:
        return [_unreachable(settings, str(exc))]
    except vk_api.ApiError as exc:
        if exc.code == 5:
            return [Finding(
                "token", False, f"VK refused [vk] token (error 5: {exc.error['error_msg']})",
                "the token is wrong or revoked: create a community token (Manage → API "
                "usage → Access tokens, rights messages, docs, manage) and set [vk] token")]
        return [Finding("token", False, f"groups.getById failed: {exc}",
                        START_FIXES.get(exc.code, "check [vk] token and group_id"))]
    groups = answer["groups"] if isinstance(answer, dict) else answer
    if not groups:
        return [Finding("token", False, "VK names no community for [vk] token: it is not a "
                                        "community token",
                        START_FIXES[27])]
    group = groups[0]
    findings = [Finding("api", True, f"the VK API answers at {settings.api_base_url}")]
    if group["id"] != settings.group_id:
        findings.append(Finding(
            "group", False, f"the token belongs to community {group['id']} "
            f"({group.get('name', '')}), but [vk] group_id is {settings.group_id}",
            f"set [vk] group_id = {group['id']}, or set the token of community "
            f"{settings.group_id}"))
        return findings
    findings.append(Finding("token", True, f"the token is valid for community "
                                           f"{group['id']} ({group.get('name', '')})"))
    try:
        if settings.mode == "longpoll":
            findings.append(_long_poll(session, settings))
        else:
            findings.append(_callback(session, settings))
    except _Unreachable as exc:
        findings.append(_unreachable(settings, str(exc)))
    return findings


def _long_poll(session: api.BoundedVkApi, settings: VkConfig) -> Finding:
    try:
        state = _call(session, "groups.getLongPollSettings", group_id=settings.group_id)
    except vk_api.ApiError as exc:
        return Finding(
            "longpoll", False, f"cannot read the Long Poll settings: {exc}",
            "give the token the manage right (so this check can read them), and make "
            f"sure in {SETTINGS_PLACE} → Long Poll API) that it is on with "
            f"{' and '.join(EVENTS)}")
    if not state.get("is_enabled"):
        return Finding(
            "longpoll", False, "the community's Long Poll API is off: VK delivers no events",
            f"turn on Long Poll API in {SETTINGS_PLACE} → Long Poll API) with "
            f"{' and '.join(EVENTS)}")
    events = state.get("events") or {}
    missing = [name for name in EVENTS if not events.get(name)]
    if missing:
        return Finding(
            "longpoll", False, f"the Long Poll API is on, but without "
            f"{' and '.join(missing)}: those messages never reach helpgate",
            f"in {SETTINGS_PLACE} → Long Poll API → Event types) tick "
            f"{' and '.join(missing)}")
    return Finding("longpoll", True, f"the Long Poll API is on with {' and '.join(EVENTS)} "
                                     f"(API version {state.get('api_version', '?')})")


def _callback(session: api.BoundedVkApi, settings: VkConfig) -> Finding:
    hint = (f"in {SETTINGS_PLACE} → Callback API) set the address to your public URL, "
            f"forwarded to {settings.callback_host}:{settings.callback_port}"
            f"{settings.callback_path}, the secret key to [vk] secret, and tick "
            f"{' and '.join(EVENTS)}; VK confirms the address while `helpgate run` runs")
    try:
        answer = _call(session, "groups.getCallbackConfirmationCode",
                       group_id=settings.group_id)
    except vk_api.ApiError:
        # Reading the code needs the manage right; its absence is no failure of the channel.
        return Finding("callback", True, "callback mode: confirmation_code and secret are "
                                         "set (VK's expected code could not be read)", hint)
    expected = answer.get("code")
    if expected and expected != settings.confirmation_code:
        return Finding(
            "callback", False, f"VK expects the confirmation code {expected!r}, "
            f"[vk] confirmation_code is {settings.confirmation_code!r}: VK will not "
            "confirm the server",
            f"set [vk] confirmation_code = {expected!r}")
    return Finding("callback", True, "callback mode: confirmation_code matches VK's, "
                                     "secret is set", hint)
