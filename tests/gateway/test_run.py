"""`helpgate run`: applies due status timers and stops cleanly on SIGTERM (R-TS-3), takes
mail on the embedded default (SQLite in the working folder, the endpoint on
127.0.0.1:2525 — the README's three-line first run; tested on a free port, so the suite
runs beside a gateway on 2525), and stops with one line naming the fix when its port is
taken or out of range (#15.13)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpgate.config.load import load_config
from tests.conftest import need_service
from tests.mailservers import free_port

HELPGATE = str(Path(sys.executable).parent / "helpgate")


def test_run_starts_applies_timers_and_stops_on_sigterm(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPGATE_")}
    db = tmp_path / "helpgate.db"
    env["HELPGATE_DATABASE_URL"] = f"sqlite:///{db}"
    env["HELPGATE_CONFIG"] = str(tmp_path / "helpgate.toml")
    (tmp_path / "helpgate.toml").write_text(f"[mail.endpoint]\nport = {free_port()}\n")
    mail = tmp_path / "m.eml"
    mail.write_bytes(b"From: ivan@romashka.ru\nSubject: help\nMessage-ID: <r1@x>\n\nhello\n")
    subprocess.run([HELPGATE, "ingest", str(mail)], env=env, check=True, capture_output=True)
    # Due a second from now: the command runs an hour back in time (faketime), so however
    # long its start-up takes on a busy machine, the time is still ahead of it.
    faketime = shutil.which("faketime")
    if faketime is None:
        need_service("the faketime program is not installed (Debian package faketime)")
    until = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 1))
    subprocess.run([faketime, "-f", "-1h", HELPGATE, "status", "1", "pending", "--until", until],
                   env={**env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}, check=True,
                   capture_output=True)
    gateway = subprocess.Popen([HELPGATE, "run", "--timer-interval", "0.2",
                                "--log-level", "warning"], env=env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert "helpgate running" in gateway.stdout.readline()
        deadline = time.monotonic() + 40
        status = "pending"
        while status != "open" and time.monotonic() < deadline:
            time.sleep(0.3)
            shown = subprocess.run([HELPGATE, "tickets", "--json"], env=env, text=True,
                                   capture_output=True, check=True).stdout
            status = "open" if '"status": "open"' in shown else status
        assert status == "open"
    finally:
        gateway.send_signal(signal.SIGTERM)
        out, err = gateway.communicate(timeout=20)
    assert gateway.returncode == 0, err
    assert "helpgate stopped" in out
    # --log-level warning: no line per decision or timer.
    assert " INFO " not in err


def test_the_embedded_default_listens_where_the_readme_says_with_sqlite_here(monkeypatch):
    """Checks the configured default only; nothing binds it (the README's gateway may)."""
    for key in [k for k in os.environ if k.startswith("HELPGATE_")]:
        monkeypatch.delenv(key)
    config = load_config()
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    host, port = re.search(r"SMTP\s+endpoint on ([\d.]+):(\d+)", readme).groups()
    assert (config.mail.endpoint.host, config.mail.endpoint.port) == (host, int(port))
    assert config.database.url == "sqlite:///helpgate.db"


def test_the_embedded_default_takes_mail(tmp_path):
    # Nothing but the endpoint's port is set: a free one instead of the default.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPGATE_")}
    port = free_port()
    (tmp_path / "helpgate.toml").write_text(f"[mail.endpoint]\nport = {port}\n")
    env["HELPGATE_CONFIG"] = str(tmp_path / "helpgate.toml")
    gateway = subprocess.Popen([HELPGATE, "run"], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = gateway.stdout.readline()
        assert f"smtp endpoint 127.0.0.1:{port}" in banner, gateway.stderr.read()
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("ivan@romashka.ru", ["support@helpgate.localhost"],
                            "From: ivan@romashka.ru\r\nSubject: Hello\r\n\r\nIt works.\r\n")
        shown = json.loads(subprocess.run([HELPGATE, "tickets", "--json"], env=env,
                                          cwd=tmp_path, text=True, capture_output=True,
                                          check=True).stdout)
        assert [(t["number"], t["subject"]) for t in shown] == [(1, "Hello")]
        assert (tmp_path / "helpgate.db").exists()
    finally:
        gateway.send_signal(signal.SIGTERM)
        out, err = gateway.communicate(timeout=20)
    assert gateway.returncode == 0, err
    # One log line per decision, with the rules that fired; no library chatter.
    assert "INFO helpgate.pipeline inbound 1: new_ticket ticket=1" in err
    assert "alembic" not in err


def _run_briefly(tmp_path, config: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPGATE_")}
    (tmp_path / "helpgate.toml").write_text(config)
    env["HELPGATE_CONFIG"] = str(tmp_path / "helpgate.toml")
    return subprocess.run([HELPGATE, "run"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)


def test_a_port_in_use_is_one_line_naming_the_fix(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run_briefly(tmp_path, f"[mail.endpoint]\nport = {port}\n")
    assert done.returncode == 1
    assert done.stderr == (
        f"helpgate: error: cannot listen on 127.0.0.1:{port} (smtp endpoint): Address "
        "already in use; another program listens there: stop it, or set another "
        "[mail.endpoint] port\n")


def test_a_port_out_of_range_is_one_line_naming_the_key(tmp_path):
    done = _run_briefly(tmp_path, "[mail.endpoint]\nport = 99999\n")
    assert done.returncode == 1
    assert done.stderr == (f"helpgate: error: {tmp_path / 'helpgate.toml'}:2: "
                           "mail.endpoint.port: 99999 is not a port: use a number from 0 "
                           "to 65535\n")
