"""`helpgate telegram check` and `helpgate vk check` against the fakes: set-up failures
(a wrong token, a webhook elsewhere, Long Poll off, the service out of reach) are found
and named with their fix, exit 1; a good set-up exits 0 and lists what was checked.

The CLI runs its own event loop (asyncio.run), so it runs in a worker thread here while
the fake serves on the test's loop."""

from __future__ import annotations

import asyncio
import json

import pytest

from helpgate.gateway.channels import CHANNELS
from helpgate.gateway.cli import CHECKED_CHANNELS
from tests.fakes.telegram import FakeTelegram
from tests.fakes.vk import FakeVK
from tests.gateway.cli_helpers import Helpgate

GROUP = 4242
VK_TOKEN = "vk-group-token"
CODE = "c0nf1rm"
HOOK = "https://support.example.com/telegram"


@pytest.fixture
def desk(tmp_path, monkeypatch, capsys, no_vk_rate_sleep) -> Helpgate:
    return Helpgate(tmp_path, monkeypatch, capsys)


@pytest.fixture
async def vk():
    async with FakeVK(group_id=GROUP, token=VK_TOKEN, confirmation_code=CODE,
                      secret="s3cret") as fake:
        yield fake


async def check(desk: Helpgate, channel: str, *extra: str) -> tuple[int, str]:
    code, out, err = await asyncio.to_thread(desk.run, channel, "check", *extra)
    assert err == "" or code != 0, err
    return code, out


async def checks(desk: Helpgate, channel: str) -> tuple[int, dict]:
    code, out = await check(desk, channel, "--json")
    data = json.loads(out)
    assert data["ok"] is (code == 0)
    return code, {c["name"]: c for c in data["checks"]}


def telegram(desk: Helpgate, tg: FakeTelegram, **extra: str) -> None:
    lines = [f'token = "{tg.token}"', f'api_base_url = "{tg.base_url}"',
             *(f'{key} = "{value}"' for key, value in extra.items())]
    desk.configure("[telegram]\n" + "\n".join(lines) + "\n")


def webhook(desk: Helpgate, tg: FakeTelegram) -> None:
    telegram(desk, tg, mode="webhook", webhook_url=HOOK, webhook_secret="s3cret")


def vk_config(desk: Helpgate, vk: FakeVK, group_id: int = GROUP, **extra: str) -> None:
    lines = [f'token = "{VK_TOKEN}"', f"group_id = {group_id}",
             f'api_base_url = "{vk.base_url}"',
             *(f'{key} = "{value}"' for key, value in extra.items())]
    desk.configure("[vk]\n" + "\n".join(lines) + "\n")


def test_every_channel_with_a_check_has_its_command():
    assert set(CHECKED_CHANNELS) == {name for name, entry in CHANNELS.items()
                                     if entry.kind.check is not None}


# ---- Telegram ---------------------------------------------------------------------------

async def test_a_good_telegram_setup_lists_its_checks_and_exits_0(desk, tg):
    telegram(desk, tg)
    code, out = await check(desk, "telegram")
    assert code == 0, out
    assert "ok    token: the token is valid: the bot is @helpgate_bot" in out
    assert "ok    mode: polling: no webhook is set" in out
    assert out.rstrip().endswith("telegram: all is well")
    # A new bot is in privacy mode: advice for group chats, no failure.
    privacy = [line for line in out.splitlines() if line.startswith("note  privacy")]
    assert privacy and "/setprivacy" in privacy[0] and "Disable" in privacy[0]


async def test_the_json_shape(desk, tg):
    telegram(desk, tg)
    code, out = await check(desk, "telegram", "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True
    assert [c["name"] for c in data["checks"]] == ["api", "token", "mode", "privacy"]
    for entry in data["checks"]:
        assert set(entry) == {"name", "ok", "detail", "fix"}
        assert isinstance(entry["ok"], bool) and entry["detail"]
        assert entry["fix"] is None or isinstance(entry["fix"], str)
    assert data["checks"][1]["fix"] is None


async def test_a_revoked_telegram_token_exits_1_with_the_fix(desk, tg):
    telegram(desk, tg)
    tg.tokens.discard(tg.token)      # the fake answers 401 Unauthorized
    code, out = await check(desk, "telegram")
    assert code == 1
    assert "FAIL  token:" in out and "401 Unauthorized" in out
    assert "fix: the token is wrong or revoked: ask @BotFather for /token" in out
    code, found = await checks(desk, "telegram")
    assert code == 1 and list(found) == ["token"] and not found["token"]["ok"]


async def test_privacy_mode_off_needs_no_advice(desk, tg):
    telegram(desk, tg)
    tg.privacy = False
    code, found = await checks(desk, "telegram")
    assert code == 0
    assert found["privacy"]["fix"] is None and "off" in found["privacy"]["detail"]


async def test_polling_with_a_webhook_set_says_it_will_be_deleted(desk, tg):
    telegram(desk, tg)
    tg.webhook = {"url": "https://old.example.com/hook", "secret_token": None,
                  "max_connections": 40}
    code, found = await checks(desk, "telegram")
    assert code == 0
    assert found["mode"]["ok"]
    assert "https://old.example.com/hook" in found["mode"]["detail"]
    assert "deletes it when it starts" in found["mode"]["detail"]
    assert tg.webhook is not None    # the check changed nothing at Telegram


async def test_webhook_mode_without_a_webhook_at_telegram(desk, tg):
    webhook(desk, tg)
    code, found = await checks(desk, "telegram")
    assert code == 1
    assert not found["mode"]["ok"] and "has no webhook" in found["mode"]["detail"]
    assert HOOK in found["mode"]["fix"]


async def test_webhook_set_to_another_url(desk, tg):
    webhook(desk, tg)
    tg.webhook = {"url": "https://elsewhere.example/hook", "max_connections": 40}
    code, found = await checks(desk, "telegram")
    assert code == 1
    assert "https://elsewhere.example/hook" in found["mode"]["detail"]
    assert HOOK in found["mode"]["detail"]


async def test_webhook_that_telegram_cannot_deliver_to(desk, tg):
    webhook(desk, tg)
    tg.webhook = {"url": HOOK, "max_connections": 40, "last_error_date": 1767225600,
                  "last_error_message": "Connection refused"}
    tg.send_text(tg.user(1001, "Ann"), "hello")
    code, out = await check(desk, "telegram")
    assert code == 1
    line = next(line for line in out.splitlines() if line.startswith("FAIL  mode"))
    assert "Connection refused" in line and "2026-01-01 00:00 UTC" in line
    assert "1 update wait" in line and "127.0.0.1:8443/telegram" in line


async def test_webhook_in_place_is_well(desk, tg):
    webhook(desk, tg)
    tg.webhook = {"url": HOOK, "max_connections": 40}
    code, found = await checks(desk, "telegram")
    assert code == 0 and found["mode"]["ok"] and HOOK in found["mode"]["detail"]


async def test_the_bot_api_out_of_reach_names_the_url(desk, tg):
    telegram(desk, tg)
    await tg.go_down()
    code, out = await check(desk, "telegram")
    assert code == 1
    assert f"FAIL  api: cannot reach the Bot API at {tg.base_url}" in out
    assert "api_base_url" in out and "network" in out


async def test_telegram_not_configured(desk):
    code, found = await checks(desk, "telegram")
    assert code == 1
    assert found["config"]["detail"] == "telegram is not configured: set [telegram] token"


# ---- VK ---------------------------------------------------------------------------------

async def test_a_good_vk_setup_exits_0(desk, vk):
    vk_config(desk, vk)
    code, out = await check(desk, "vk")
    assert code == 0, out
    assert f"ok    token: the token is valid for community {GROUP}" in out
    assert "ok    longpoll: the Long Poll API is on with message_new and message_edit" in out
    assert out.rstrip().endswith("vk: all is well")


async def test_a_wrong_vk_token(desk, vk):
    vk_config(desk, vk)
    vk.token = "another-token"        # the fake answers error 5 to ours
    code, out = await check(desk, "vk")
    assert code == 1
    assert "FAIL  token: VK refused [vk] token (error 5" in out
    assert "the token is wrong or revoked" in out


async def test_a_token_of_another_community(desk, vk):
    vk_config(desk, vk, group_id=777)
    code, found = await checks(desk, "vk")
    assert code == 1
    group = found["group"]
    assert f"belongs to community {GROUP}" in group["detail"] and "777" in group["detail"]
    assert group["fix"].startswith(f"set [vk] group_id = {GROUP}")


async def test_long_poll_off(desk, vk):
    vk_config(desk, vk)
    vk.lp_settings["is_enabled"] = False
    code, out = await check(desk, "vk")
    assert code == 1
    assert ("turn on Long Poll API in the community's settings (Manage → API usage → "
            "Long Poll API) with message_new and message_edit") in out


async def test_long_poll_without_the_edit_event(desk, vk):
    vk_config(desk, vk)
    vk.lp_settings["events"]["message_edit"] = 0
    code, found = await checks(desk, "vk")
    assert code == 1
    assert "without message_edit" in found["longpoll"]["detail"]
    assert "message_new" not in found["longpoll"]["detail"]


async def test_callback_mode_checks_the_confirmation_code(desk, vk):
    vk_config(desk, vk, mode="callback", confirmation_code=CODE, secret="s3cret")
    code, found = await checks(desk, "vk")
    assert code == 0 and found["callback"]["ok"]
    assert "Callback API" in found["callback"]["fix"]     # the hint where to set it up
    vk_config(desk, vk, mode="callback", confirmation_code="stale", secret="s3cret")
    code, found = await checks(desk, "vk")
    assert code == 1
    assert found["callback"]["fix"] == f"set [vk] confirmation_code = {CODE!r}"


async def test_vk_out_of_reach_names_the_url(desk, vk):
    vk_config(desk, vk)
    await vk.go_down()
    code, out = await check(desk, "vk")
    assert code == 1
    assert f"FAIL  api: cannot reach the VK API at {vk.base_url}" in out


async def test_vk_not_configured(desk):
    code, out = await check(desk, "vk")
    assert code == 1 and "vk is not configured" in out
