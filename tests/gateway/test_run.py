"""`helpgate run`: applies due status timers and stops cleanly on SIGTERM (R-TS-3), and on
the embedded default (no config at all) takes mail on 127.0.0.1:2525 — the README's
three-line first run."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

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
    # Far enough ahead for a `helpgate status` start-up on a busy machine.
    until = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 10))
    subprocess.run([HELPGATE, "status", "1", "pending", "--until", until], env=env,
                   check=True, capture_output=True)
    gateway = subprocess.Popen([HELPGATE, "run", "--timer-interval", "0.2"], env=env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert "helpgate running" in gateway.stdout.readline()
        deadline = time.monotonic() + 20
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


def test_the_embedded_default_takes_mail_on_port_2525(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPGATE_")}
    gateway = subprocess.Popen([HELPGATE, "run"], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = gateway.stdout.readline()
        assert "smtp endpoint 127.0.0.1:2525" in banner, gateway.stderr.read()
        with smtplib.SMTP("127.0.0.1", 2525, timeout=10) as client:
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
