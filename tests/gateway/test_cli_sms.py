"""`helpgate sms check` and `helpgate reply N --via sms` against the fake gateways: the
check prints success and the balance, or the gateway's error in plain words with the fix
(exit 1); a reply by SMS is queued to the contact's phone with what it costs, and the
outbox sends it once.

The CLI runs its own event loop (asyncio.run), so it runs in a worker thread here while
the fake serves on the test's loop."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.fakes.sms import FAKES, FakeSmsc, settings_for
from tests.mailfactory import mail

TITLES = {"smsc": "SMSC.ru", "smsru": "SMS.ru", "smsaero": "SMSAero"}


@pytest.fixture(params=list(FAKES))
async def fake(request):
    async with FAKES[request.param](balance=84.75) as server:
        yield server


def configure(hg, values: dict) -> None:
    lines = [f"{key} = {json.dumps(value, ensure_ascii=False)}"
             for key, value in values.items() if not isinstance(value, dict)]
    hg.configure("[notifications]\nacknowledge_new_tickets = false\n"
                 "[sms]\n" + "\n".join(lines) + "\n")


async def run(hg, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(hg.run, *args)


async def test_check_prints_success_and_the_balance(hg, fake):
    configure(hg, settings_for(fake, sender="Helpdesk"))
    code, out, err = await run(hg, "sms", "check")
    assert (code, err) == (0, "")
    title = TITLES[settings_for(fake)["provider"]]
    assert f"ok    api: {title} at {fake.base_url} answers" in out
    assert f"ok    credentials: {title} accepts the credentials" in out
    assert "ok    balance: balance: 84.75" in out
    assert out.rstrip().endswith("sms: all is well")
    if settings_for(fake)["provider"] == "smsaero":
        assert fake.requests["auth"] == 1   # its connection check, then the balance
    assert fake.sent == []


async def test_check_names_wrong_credentials_with_the_fix(hg, fake):
    values = settings_for(fake)
    values.update({key: "wrong" for key in ("password", "api_key") if key in values})
    configure(hg, values)
    code, out, _ = await run(hg, "sms", "check", "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    credentials = {c["name"]: c for c in data["checks"]}["credentials"]
    assert credentials["ok"] is False
    assert "wrong" in credentials["detail"] and "sms." in credentials["detail"]
    assert "account page" in credentials["fix"]


async def test_check_says_when_the_account_has_no_money(hg):
    async with FakeSmsc(balance=0) as fake:
        configure(hg, settings_for(fake))
        code, out, _ = await run(hg, "sms", "check")
    assert code == 0   # it answers; the note says what will happen
    assert "note  balance: balance: 0.00 RUR — advice: top the account up" in out


async def test_check_without_a_provider_or_a_gateway_to_reach(hg):
    code, out, _ = await run(hg, "sms", "check")
    assert code == 1
    assert "FAIL  config: sms is not configured: set [sms] provider — fix:" in out
    hg.configure('[sms]\nprovider = "smsru"\napi_key = "k"\n'
                 'base_url = "http://127.0.0.1:9"\ntimeout = 2\n')
    code, out, _ = await run(hg, "sms", "check")
    assert code == 1
    assert "FAIL  api: cannot use SMS.ru at http://127.0.0.1:9: cannot connect" in out
    hg.configure('[sms]\nprovider = "smsaero"\nlogin = "x@y.ru"\n')
    code, out, _ = await run(hg, "sms", "check")
    assert code == 1 and "needs sms.api_key" in out


async def test_reply_via_sms_is_queued_with_its_cost_and_sent_once(hg, fake):
    configure(hg, settings_for(fake, max_parts=2, timeout=2))
    number = (await asyncio.to_thread(hg.ingest, mail(subject="Принтер")))["ticket"]
    text = "Картридж заменили, принтер снова печатает. " * 3
    code, out, err = await run(hg, "reply", str(number), text, "--via", "sms")
    assert code == 0, err
    queued = json.loads(out)["queued"]
    assert queued == [{"channel": "sms", "to": "+79161234567", "sms": {
        "parts": 2, "encoding": "UCS-2", "characters": 128, "trimmed": False,
        "too_long": False}}]
    [row] = [r for r in await asyncio.to_thread(hg.outbox) if r["channel"] == "sms"]
    assert row["state"] == "queued"
    await asyncio.to_thread(_send_outbox, hg)
    assert [(s.phone, s.text) for s in fake.sent] == [("79161234567", text.strip())]
    [row] = [r for r in await asyncio.to_thread(hg.outbox) if r["channel"] == "sms"]
    assert row["state"] == "sent"


def _send_outbox(hg) -> None:
    """One round of the outbox worker with the configured transports, as `helpgate run`
    has it, in this thread's own event loop."""
    from helpgate.config.load import load_config
    from helpgate.gateway.channels import transports
    from helpgate.outbound.outbox import OutboxWorker
    from helpgate.ticketstore.repository import Store

    async def once():
        config = load_config()
        store = Store(config.database.url)
        sending = transports(config)
        try:
            await OutboxWorker(store, config, sending, _utcnow).run_once()
        finally:
            for transport in sending.values():
                await transport.close()
            await store.close()
    asyncio.run(once())


def _utcnow():
    from datetime import datetime, timezone
    return datetime.now(timezone.utc)


# The web form is a channel that only takes submissions: nothing can be sent "via" it.
@pytest.mark.parametrize("via", ["pager", "webform"])
async def test_reply_via_an_unknown_channel_is_refused(hg, via):
    number = (await asyncio.to_thread(hg.ingest, mail()))["ticket"]
    code, _, err = await run(hg, "reply", str(number), "текст", "--via", via)
    assert code == 1
    assert err.strip() == (f"helpgate: error: --via {via}: no such channel; known: email, "
                           "telegram, vk, sms")
