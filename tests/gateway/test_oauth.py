"""OAuth2 mailboxes (issue 19) against a real Dovecot whose oauth2 passdb asks a fake
provider (tests/fakes/oauth.py) that rotates every refresh token and retires the old one
at once, as the strict providers do: login, refresh, rotation kept across a restart,
expiry in the middle of IDLE, a token refused by the server, a revoked grant, and the
same for the SMTP relay with AUTH XOAUTH2."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from helpgate.channels.mail.imap import ImapMailbox
from helpgate.config.oauth import GrantNeedsLogin, endpoints
from helpgate.config.schema import Config
from helpgate.gateway.oauth import GrantUse, TokenBroker, configured_grants, login
from helpgate.gateway.pipeline import Pipeline
from helpgate.outbound.alerts import grant_needs_login
from helpgate.outbound.base import Outgoing
from helpgate.outbound.email import EmailTransport
from helpgate.ticketstore import oauth as grants
from helpgate.ticketstore.models import Employee, InboundMessage, OutboxMessage
from helpgate.ticketstore.repository import Store
from tests.dovecot import Dovecot
from tests.fakes.oauth import FakeOAuth
from tests.mailfactory import mail
from tests.mailservers import Relay
from tests.services import services_for
from tests.waiting import eventually

HELPGATE = str(Path(sys.executable).parent / "helpgate")
GRANT = "support"
KEY = grants.new_key()


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
async def provider():
    async with FakeOAuth(user="support") as fake:
        yield fake


@pytest.fixture
def oauth_dovecot(certificate, provider):
    server = Dovecot(certificate, oauth_tokeninfo=provider.tokeninfo_url).start()
    yield server
    server.cleanup()


@pytest.fixture
def box(monkeypatch) -> grants.SecretBox:
    monkeypatch.setenv(grants.KEY_VARIABLE, KEY)
    return grants.secret_box()


def mailbox_config(dovecot: Dovecot, provider: FakeOAuth, **extra) -> Config:
    # Dovecot answers a refused token after its auth_failure_delay (2 s).
    imap = dovecot.oauth_config(provider.oauth2_config(), idle=True, poll_interval=3600,
                                **{"timeout": 10.0, **extra})
    return Config(mail={"imap": [imap], "endpoint": {"enabled": False}},
                  notifications={"employees": "none"})


async def device_login(store: Store, config: Config, provider: FakeOAuth,
                       box: grants.SecretBox):
    """`helpgate oauth login`'s device flow, the person approving the code at once."""
    def out(line: str) -> None:
        if "enter the code" in line:
            provider.approve(line.rsplit(" ", 1)[1])
    return await login(store, configured_grants(config)[GRANT], out, box)


class Running:
    """Mailbox readers over one store, each with its own token broker (its own process,
    as far as tokens go); all stopped after the test."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.readers: list[ImapMailbox] = []
        self.alerts = 0

    async def start(self, config: Config, connected: bool = True) -> ImapMailbox:
        pipeline = Pipeline(config, self.store)

        def notify(session, name, detail, at):
            self.alerts += grant_needs_login(session, config, name, detail, at)

        broker = TokenBroker(self.store, config, notify=notify)
        services = services_for(pipeline)
        services = type(services)(ingest=services.ingest, parse_many=services.parse_many,
                                  cursors=services.cursors, clock=services.clock,
                                  tokens=broker)
        reader = ImapMailbox(config.mail.imap[0], services, config.mail.max_message_size)
        await reader.start()
        self.readers.append(reader)
        if connected:
            await asyncio.wait_for(reader.connected.wait(), 15)
        return reader

    async def stop(self) -> None:
        for reader in self.readers:
            await reader.stop()
        self.readers.clear()


@pytest.fixture
async def running(store):
    runner = Running(store)
    yield runner
    await runner.stop()


async def stored(store: Store) -> int:
    return await store.run(lambda s: len(s.scalars(select(InboundMessage.id)).all()))


async def state(store: Store) -> dict:
    return (await store.run(grants.grant_states)).get(GRANT)


async def deliver(dovecot: Dovecot, *raws: bytes) -> None:
    await asyncio.to_thread(dovecot.deliver, *raws)


# ------------------------------------------------------------------------------ IMAP
async def test_device_login_stores_the_grant_sealed_and_the_mailbox_reads_with_xoauth2(
        store, oauth_dovecot, provider, box, running):
    config = mailbox_config(oauth_dovecot, provider)
    await device_login(store, config, provider, box)

    sealed = await store.run(grants.sealed_refresh_token, GRANT)
    assert provider.current_refresh() not in sealed  # never stored in the clear
    assert box.open(sealed) == provider.current_refresh()
    assert (await state(store))["state"] == "ok"

    await running.start(config)
    await deliver(oauth_dovecot, mail(subject="Signed in with a token"))
    await eventually(lambda: _count_is(store, 1), 15, "the mail stored")
    assert provider.refreshes == 0  # the login's own access token was still good


async def _count_is(store: Store, n: int) -> bool:
    return await stored(store) == n


async def test_refresh_before_expiry_rotation_persisted_across_a_restart(
        store, oauth_dovecot, provider, box, running):
    """Short-lived tokens: each new session refreshes; the provider retires every old
    refresh token, so a restart that read a stale one would find the grant dead."""
    provider.lifetime = 3
    config = mailbox_config(oauth_dovecot, provider)
    await device_login(store, config, provider, box)
    await running.start(config)
    await asyncio.sleep(3.2)  # the access token is past its refresh time now
    oauth_dovecot.kick()  # the provider's BYE on an expired token
    await eventually(lambda: provider.refreshes >= 1, 15, "a refresh")
    await eventually(lambda: running.readers[0].connected.is_set(), 15, "the reconnect")
    first = await state(store)
    assert first["rotations"] >= 1 and first["state"] == "ok"
    assert box.open(await store.run(grants.sealed_refresh_token, GRANT)) \
        == provider.current_refresh()

    # A restart: new readers and brokers, nothing in memory from before.
    await running.stop()
    provider.expire_access_tokens()
    # Long-lived from here: Dovecot's 2 s delay after the refusal must not outlast it.
    provider.lifetime = 3600
    refreshes = provider.refreshes
    await running.start(config)
    assert provider.refreshes > refreshes
    assert provider.refused == []
    await deliver(oauth_dovecot, mail(subject="After the restart"))
    await eventually(lambda: _count_is(store, 1), 15, "the mail stored")
    assert (await state(store))["rotations"] > first["rotations"]


async def test_expiry_mid_idle_reconnects_with_a_fresh_token_and_loses_no_mail(
        store, oauth_dovecot, provider, box, running):
    config = mailbox_config(oauth_dovecot, provider)
    await device_login(store, config, provider, box)
    reader = await running.start(config)
    await deliver(oauth_dovecot, mail(subject="Before", message_id="<before@t>"))
    await eventually(lambda: _count_is(store, 1), 15, "the first mail")

    # The token dies while the reader idles; the provider ends the session with BYE.
    # The kept token still looks good to helpgate (its expiry is an hour away), so the
    # server's refusal is what makes it refresh, once.
    provider.expire_access_tokens()
    oauth_dovecot.kick()
    await deliver(oauth_dovecot, mail(subject="During", message_id="<during@t>"))
    await eventually(lambda: _count_is(store, 2), 20, "the mail sent meanwhile")
    assert provider.refreshes == 1
    assert reader.connected.is_set()
    assert (await state(store))["state"] == "ok"


async def test_idle_is_issued_again_every_idle_renew_seconds(
        store, oauth_dovecot, provider, box, running):
    config = mailbox_config(oauth_dovecot, provider, idle_renew=0.5)
    await device_login(store, config, provider, box)
    reader = await running.start(config)
    idles = 0
    original = reader._idle

    async def counted(client):
        nonlocal idles
        idles += 1
        await original(client)

    reader._idle = counted
    await deliver(oauth_dovecot, mail(subject="Wake up"))  # leaves the first IDLE
    await eventually(lambda: idles >= 3, 15, "IDLE issued again")
    await deliver(oauth_dovecot, mail(subject="Still listening"))
    await eventually(lambda: _count_is(store, 2), 15, "both mails")


# The refusal is logged as an error: an admin must act.
@pytest.mark.pipeline_errors_expected
async def test_a_revoked_grant_needs_login_tells_staff_once_and_a_new_login_resumes(
        store, oauth_dovecot, provider, box, running):
    await store.run(lambda s: s.add(Employee(name="Anna", email="anna@helpgate.test",
                                             role="admin", created_at=now())))
    config = mailbox_config(oauth_dovecot, provider)
    await device_login(store, config, provider, box)
    reader = await running.start(config)
    # A second process using the same grant (another gateway instance).
    second = await running.start(config)

    provider.revoke()
    oauth_dovecot.kick()
    await eventually(lambda: _needs_login(store), 20, "the grant marked")
    found = await state(store)
    assert "invalid_grant" in found["detail"]
    await eventually(_signed_out(oauth_dovecot, reader, second), 30,
                     "both readers signed out")
    oauth_dovecot.kick()
    await asyncio.sleep(1.5)  # both readers retry meanwhile; nobody is told again
    alerts = await store.run(lambda s: s.scalars(
        select(OutboxMessage).where(OutboxMessage.kind == "alert")).all())
    assert [(a.recipient, a.subject) for a in alerts] == [
        ("anna@helpgate.test", "Mailbox support needs a new OAuth2 login")]
    assert "helpgate oauth login support" in alerts[0].text
    assert running.alerts == 1

    # Someone logs in again: the readers pick the new grant up without a restart.
    for reader_ in running.readers:
        reader_._stop.set()  # speed the test: restart them instead of a 60 s backoff
    await running.stop()
    await device_login(store, config, provider, box)
    await running.start(config)
    await deliver(oauth_dovecot, mail(subject="Back"))
    await eventually(lambda: _count_is(store, 1), 15, "the mail after the new login")


def _signed_out(dovecot: Dovecot, *readers: ImapMailbox):
    """A check that every reader is signed out, kicking the user's sessions again (at
    most once a second: doveadm blocks the loop a moment) while one is not. Dovecot kicks
    only the sessions it has registered, and one that signed in a moment before the first
    kick may not have been yet."""
    kicked = 0.0

    def check() -> bool:
        nonlocal kicked
        if not any(reader.connected.is_set() for reader in readers):
            return True
        if time.monotonic() - kicked > 1.0:
            kicked = time.monotonic()
            dovecot.kick()
        return False
    return check


async def _needs_login(store: Store) -> bool:
    found = await state(store)
    return found is not None and found["state"] == "needs_login"


# The refusal is logged as an error: an admin must act.
@pytest.mark.pipeline_errors_expected
async def test_a_token_the_server_keeps_refusing_marks_the_grant_without_hanging(
        store, oauth_dovecot, provider, box, running, monkeypatch):
    """Refused, refreshed once, refused again: the grant needs a login. Each refusal
    is answered at once (Dovecot sends a challenge and waits for our empty line)."""
    config = mailbox_config(oauth_dovecot, provider)
    await device_login(store, config, provider, box)
    monkeypatch.setattr(provider, "user", "somebody-else")  # tokens name another user
    provider.grants[provider.current_refresh()].user = "somebody-else"
    provider.access = {token: (grant, 0.0) for token, (grant, _) in provider.access.items()}
    reader = await running.start(config, connected=False)
    await eventually(lambda: _needs_login(store), 20, "the grant marked")
    assert provider.refreshes == 1
    assert "refused a fresh access token" in (await state(store))["detail"]
    assert not reader.connected.is_set()


# ------------------------------------------------------------------------------ SMTP
# The refusal is logged as an error: an admin must act.
@pytest.mark.pipeline_errors_expected
async def test_smtp_relay_xoauth2_refreshes_a_refused_token_then_needs_login(
        store, provider, box):
    relay = await Relay(xoauth2=provider.valid).start()
    try:
        smtp = {**relay.smtp_config(), "username": "support", "auth": "oauth2",
                "oauth2": provider.oauth2_config()}
        config = Config(mail={"smtp": smtp, "endpoint": {"enabled": False}})
        use = configured_grants(config)[GRANT]
        await login_with(store, use, provider, box)
        transport = EmailTransport(config)
        transport.use_tokens(TokenBroker(store, config))

        def outgoing(n: int) -> Outgoing:
            return Outgoing(id=n, channel="email", kind="comment",
                            recipient="ann@customer.example", subject=f"Answer {n}",
                            text="Hello\n")

        assert (await transport.send(outgoing(1))).delivered
        provider.expire_access_tokens()  # refused by the relay: refreshed, sent
        assert (await transport.send(outgoing(2))).delivered
        assert provider.refreshes == 1 and relay.handler.refusals == 1
        provider.revoke()
        provider.expire_access_tokens()
        result = await transport.send(outgoing(3))
        assert result.temporary and "helpgate oauth login support" in result.error
        assert (await state(store))["state"] == "needs_login"
        assert [m.message["Subject"] for m in relay.received] == ["Answer 1", "Answer 2"]
    finally:
        await relay.stop()


async def login_with(store, use: GrantUse, provider: FakeOAuth, box) -> None:
    def out(line: str) -> None:
        if "enter the code" in line:
            provider.approve(line.rsplit(" ", 1)[1])
    await login(store, use, out, box)


async def test_broker_without_login_or_key_says_what_to_run(store, provider, monkeypatch):
    config = Config(mail={"imap": [{"host": "h", "username": GRANT, "auth": "oauth2",
                                    "oauth2": provider.oauth2_config()}]})
    monkeypatch.delenv(grants.KEY_VARIABLE, raising=False)
    with pytest.raises(grants.SecretKeyError, match="helpgate oauth key"):
        TokenBroker(store, config)
    monkeypatch.setenv(grants.KEY_VARIABLE, KEY)
    with pytest.raises(GrantNeedsLogin, match="run: helpgate oauth login support"):
        await TokenBroker(store, config).token(GRANT)


# --------------------------------------------------------------------- config, CLI
def test_presets_fill_the_providers_endpoints_and_scopes():
    from helpgate.config.oauth import OAuth2Config
    microsoft = endpoints(OAuth2Config(provider="microsoft", client_id="c", tenant="contoso.com"),
                          "imap", ("https://outlook.office.com/SMTP.Send",))
    assert microsoft.token_url == \
        "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"
    assert microsoft.login_flow == "device"
    assert microsoft.scopes == ("https://outlook.office.com/IMAP.AccessAsUser.All",
                                "offline_access", "https://outlook.office.com/SMTP.Send")
    google = endpoints(OAuth2Config(provider="google", client_id="c", client_secret="s"),
                       "smtp")
    assert google.login_flow == "browser" and google.scopes == ("https://mail.google.com/",)
    yandex = endpoints(OAuth2Config(provider="yandex", client_id="c"), "imap")
    assert (yandex.device_url, yandex.scopes) == ("https://oauth.yandex.ru/device/code",
                                                  ("mail:imap_full",))


def test_a_mailbox_and_relay_of_one_account_share_one_grant_with_both_scopes():
    oauth = {"provider": "microsoft", "client_id": "c"}
    config = Config(mail={
        "imap": [{"host": "outlook.office365.com", "username": "help@contoso.com",
                  "auth": "oauth2", "oauth2": oauth}],
        "smtp": {"host": "smtp.office365.com", "username": "help@contoso.com",
                 "auth": "oauth2", "oauth2": oauth}})
    found = configured_grants(config)
    assert list(found) == ["help@contoso.com"]
    assert "https://outlook.office.com/SMTP.Send" in found["help@contoso.com"].endpoints.scopes
    assert len(found["help@contoso.com"].users) == 2


async def _lines_until(stream, marker: str, seconds: float = 20) -> str:
    while True:
        line = (await asyncio.wait_for(stream.readline(), seconds)).decode()
        assert line, "helpgate ended before printing " + marker
        if marker in line:
            return line.strip()


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPGATE_")}
    env[grants.KEY_VARIABLE] = KEY
    return env


def _write_config(tmp_path: Path, provider: FakeOAuth, dovecot_port: int = 1,
                  **oauth) -> Path:
    table = "\n".join(f"{key} = {json.dumps(value)}"
                      for key, value in provider.oauth2_config(**oauth).items())
    path = tmp_path / "helpgate.toml"
    path.write_text(f"""
[database]
url = "sqlite:///{tmp_path / 'helpgate.db'}"
[mail.endpoint]
enabled = false
[[mail.imap]]
host = "127.0.0.1"
port = {dovecot_port}
security = "none"
username = "support"
auth = "oauth2"
timeout = 5.0
[mail.imap.oauth2]
{table}
""", encoding="utf-8")
    return path


async def _cli(config: Path, env: dict, *args: str):
    return await asyncio.create_subprocess_exec(
        HELPGATE, "--config", str(config), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_cli_browser_login_then_doctor_and_oauth_list(tmp_path, provider):
    """`helpgate oauth login` with the authorisation-code flow: the printed address, a
    browser that follows it (the provider redirects to helpgate's local port), the grant
    stored; `doctor` says good; after a refusal it names the command to run."""
    config = _write_config(tmp_path, provider, flow="browser")
    env = _env(tmp_path)
    doctor = await _cli(config, env, "doctor")
    out, _ = await doctor.communicate()
    assert doctor.returncode == 1
    assert "never logged in — fix: helpgate oauth login support" in out.decode()

    process = await _cli(config, env, "oauth", "login", "support")
    await _lines_until(process.stdout, "open this address")
    address = (await process.stdout.readline()).decode().strip()
    assert address.startswith(provider.authorize_url + "?")
    async with aiohttp.ClientSession() as browser, browser.get(address) as page:
        assert "signed in" in await page.text()
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    assert json.loads(out)["state"] == "ok"

    doctor = await _cli(config, env, "doctor", "--json")
    out, _ = await doctor.communicate()
    report = json.loads(out)
    assert doctor.returncode == 0 and report["ok"], report
    listing = await _cli(config, env, "oauth", "list", "--json")
    out, _ = await listing.communicate()
    assert [(g["grant"], g["state"]) for g in json.loads(out)] == [("support", "ok")]

    store = Store(f"sqlite:///{tmp_path / 'helpgate.db'}")
    try:
        await store.run(grants.fail_refresh, GRANT, "invalid_grant: revoked", now())
    finally:
        await store.close()
    doctor = await _cli(config, env, "doctor")
    out, _ = await doctor.communicate()
    assert doctor.returncode == 1
    assert ("needs login: invalid_grant: revoked — fix: helpgate oauth login support"
            in out.decode())


async def test_cli_device_login_and_a_missing_key_is_one_clear_line(tmp_path, provider):
    config = _write_config(tmp_path, provider)
    env = _env(tmp_path)
    without = {k: v for k, v in env.items() if k != grants.KEY_VARIABLE}
    process = await _cli(config, without, "oauth", "login", "support")
    _, err = await process.communicate()
    assert process.returncode == 1
    assert err.decode().strip().startswith("helpgate: error: HELPGATE_SECRET_KEY is not set")
    run = await _cli(config, without, "run")
    _, err = await asyncio.wait_for(run.communicate(), 30)
    assert run.returncode == 1 and "HELPGATE_SECRET_KEY is not set" in err.decode()

    process = await _cli(config, env, "oauth", "login", "support")
    line = await _lines_until(process.stdout, "enter the code")
    provider.approve(line.rsplit(" ", 1)[1])
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    assert json.loads(out.decode()[out.decode().index("{"):])["grant"] == "support"


# ---------------------------------------------------------------------- kill -9
async def test_a_rotated_refresh_token_survives_kill_9_right_after_rotation(
        tmp_path, oauth_dovecot, provider, box):
    """`helpgate run` refreshes (the provider rotates and retires the old refresh token)
    and is killed with SIGKILL the instant the new access token is first presented —
    before Dovecot has even answered. Had the rotated token not been committed before
    that use, the restarted gateway would hold a dead one and the mailbox would be lost."""
    db = tmp_path / "helpgate.db"
    config = _write_config(tmp_path, provider, dovecot_port=oauth_dovecot.port)
    store = Store(f"sqlite:///{db}")
    try:
        await store.ensure_schema()
        # A login done earlier whose access token is gone: the gateway must refresh.
        await store.run(grants.save_login, GRANT, "generic", box.seal(provider.issue()),
                        None, None, None, now())
    finally:
        await store.close()
    env = _env(tmp_path)
    log = tmp_path / "gateway.log"
    killed = []

    def kill_on_first_use(token: str) -> None:
        if not killed:
            gateway.send_signal(9)
            killed.append(token)

    provider.on_first_use = kill_on_first_use
    with open(log, "ab") as output:  # noqa: ASYNC230 - a local log file, opened once
        gateway = await asyncio.create_subprocess_exec(
            HELPGATE, "--config", str(config), "run", stdout=output, stderr=output, env=env)
    await asyncio.wait_for(gateway.wait(), 30)
    assert killed and gateway.returncode == -9, log.read_text()
    assert provider.refreshes == 1
    rotated = provider.current_refresh()
    store = Store(f"sqlite:///{db}")
    try:
        assert box.open(await store.run(grants.sealed_refresh_token, GRANT)) == rotated
    finally:
        await store.close()

    # Restarted: the kept access token may be used or refused; either way the stored,
    # rotated refresh token is the live one, and the mailbox works.
    provider.on_first_use = None
    provider.expire_access_tokens()
    await deliver(oauth_dovecot, mail(subject="After the kill", message_id="<kill@t>"))
    with open(log, "ab") as output:  # noqa: ASYNC230
        gateway = await asyncio.create_subprocess_exec(
            HELPGATE, "--config", str(config), "run", stdout=output, stderr=output, env=env)
    try:
        store = Store(f"sqlite:///{db}")
        try:
            await eventually(lambda: _count_is(store, 1), 30, "the mail read after restart")
            found = await state(store)
        finally:
            await store.close()
    finally:
        gateway.send_signal(15)
        await asyncio.wait_for(gateway.wait(), 30)
    assert provider.refused == [], log.read_text()[-2000:]
    assert found["state"] == "ok" and found["rotations"] == 2
    assert gateway.returncode == 0, log.read_text()[-3000:]
