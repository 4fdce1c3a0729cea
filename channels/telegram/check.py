"""`helpgate telegram check`: the bot's set-up as Telegram sees it, before anything runs.

Set-up is where a messenger channel fails most: a token copied wrong or revoked, a
webhook someone else set, a proxy that never forwards Telegram's posts, a bot in privacy
mode, a staff group without topics or where the bot may neither manage topics nor read
staff's words (channels/telegram/staff.py). Each is found here with the Bot API calls
the gateway itself makes (getMe, getWebhookInfo, getChat, getChatMember) against the
configured `api_base_url`, and each finding is one line in plain words with what to do
about it. Nothing is changed at Telegram: the check only reads.
"""

from __future__ import annotations

from datetime import datetime, timezone

import aiohttp
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramUnauthorizedError,
)

from helpgate.channels.base import Finding
from helpgate.channels.telegram import staff
from helpgate.config.schema import Config, TelegramConfig

# Seconds one call may take: a check that hangs for a minute helps nobody.
TIMEOUT = 15.0
NETWORK = (TelegramNetworkError, aiohttp.ClientError, TimeoutError, OSError)
NOT_CONFIGURED = Finding(
    "config", False, "telegram is not configured: set [telegram] token",
    "create a bot with @BotFather (/newbot) and set its token as [telegram] token in "
    "helpgate.toml")


async def check(config: Config) -> list[Finding]:
    settings = config.telegram
    if not settings.token:
        return [NOT_CONFIGURED]
    api = TelegramAPIServer.from_base(settings.api_base_url)
    bot = Bot(settings.token, session=AiohttpSession(api=api, timeout=TIMEOUT))
    try:
        return await _check(bot, settings)
    finally:
        await bot.session.close()


def _unreachable(settings: TelegramConfig, exc: Exception) -> Finding:
    reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return Finding(
        "api", False, f"cannot reach the Bot API at {settings.api_base_url}: {reason}",
        "check [telegram] api_base_url (https://api.telegram.org, or your local Bot API "
        "server) and that this machine reaches it (network, firewall, proxy, DNS)")


async def _check(bot: Bot, settings: TelegramConfig) -> list[Finding]:
    try:
        me = await bot.get_me()
    except TelegramUnauthorizedError:
        return [Finding(
            "token", False, "Telegram refused [telegram] token (401 Unauthorized): the "
            "token is wrong or revoked",
            "the token is wrong or revoked: ask @BotFather for /token (or /mybots -> API "
            "Token) and set it again as [telegram] token")]
    except NETWORK as exc:
        return [_unreachable(settings, exc)]
    except TelegramAPIError as exc:
        return [Finding(
            "token", False, f"the Bot API at {settings.api_base_url} refused getMe: "
            f"{exc.message}",
            "check [telegram] api_base_url points at a Bot API server and the token is "
            "the one @BotFather gave")]
    findings = [
        Finding("api", True, f"the Bot API answers at {settings.api_base_url}"),
        Finding("token", True, f"the token is valid: the bot is @{me.username} "
                               f"(id {me.id}, {me.first_name})"),
    ]
    try:
        info = await bot.get_webhook_info()
    except NETWORK as exc:
        return [*findings, _unreachable(settings, exc)]
    except TelegramAPIError as exc:
        findings.append(Finding("mode", False, f"getWebhookInfo failed: {exc.message}",
                                "run the check again; if it persists, check the Bot API "
                                "server at [telegram] api_base_url"))
    else:
        findings.append(_mode(settings, info))
    findings.append(_privacy(me.username, me.can_read_all_group_messages))
    try:
        findings += await staff.findings(bot, me, settings.staff_chat_id)
    except NETWORK as exc:
        findings.append(_unreachable(settings, exc))
    except TelegramAPIError as exc:
        findings.append(Finding("staff_group", False, f"looking at the staff group failed: "
                                                      f"{exc.message}",
                                "run the check again; if it persists, check the Bot API "
                                "server at [telegram] api_base_url"))
    return findings


def _mode(settings: TelegramConfig, info) -> Finding:
    pending = info.pending_update_count or 0
    waiting = f"; {pending} update{'s' if pending != 1 else ''} wait at Telegram" \
        if pending else ""
    if settings.mode == "polling":
        if info.url:
            return Finding(
                "mode", True, f"polling is configured but a webhook is set at Telegram "
                f"({info.url}): helpgate deletes it when it starts (Telegram allows one "
                f"or the other){waiting}",
                "nothing to do if that webhook is an old set-up; if another program reads "
                "this bot through it, it stops getting updates: give each its own bot")
        return Finding("mode", True, f"polling: no webhook is set, so getUpdates can "
                                     f"run{waiting}")
    if not info.url:
        return Finding(
            "mode", False, f"webhook mode, but Telegram has no webhook for this bot: no "
            f"update is delivered{waiting}",
            f"start the gateway (`helpgate run`): it sets the webhook to "
            f"{settings.webhook_url} at start; if it runs already, its log says why "
            "setting it failed")
    if info.url != settings.webhook_url:
        return Finding(
            "mode", False, f"Telegram posts updates to {info.url}, not to "
            f"[telegram] webhook_url {settings.webhook_url}{waiting}",
            "another program or an earlier set-up set that webhook: restart the gateway "
            "to set ours; if another program uses this bot, give each its own bot")
    if info.last_error_message:
        when = ""
        if info.last_error_date:
            moment = info.last_error_date
            if isinstance(moment, int):
                moment = datetime.fromtimestamp(moment, timezone.utc)
            when = f" at {moment.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"
        return Finding(
            "mode", False, f"Telegram's last post to {info.url} failed{when}: "
            f"{info.last_error_message}{waiting}",
            f"make {settings.webhook_url} reach the gateway: the reverse proxy must "
            f"forward it to {settings.webhook_host}:{settings.webhook_port}"
            f"{settings.webhook_path}, with a valid TLS certificate, and `helpgate run` "
            "must be running")
    return Finding("mode", True, f"webhook: Telegram posts updates to {info.url}"
                                 f"{waiting}")


def _privacy(username: str | None, reads_all: bool | None) -> Finding:
    if reads_all:
        return Finding("privacy", True, "privacy mode is off: the bot sees every message "
                                        "in the groups it is in")
    return Finding(
        "privacy", True, "privacy mode is on: the bot sees only commands and replies in "
        "groups (private chats, which helpgate reads, are not affected)",
        f"for group chats: /setprivacy -> @{username} -> Disable at @BotFather, then add "
        "the bot to the group again")
