"""`helpgate run` on the embedded default: starts, applies due status timers, and stops
cleanly on SIGTERM (R-TS-3 timers, the README's start command)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HELPGATE = str(Path(sys.executable).parent / "helpgate")


def test_run_starts_applies_timers_and_stops_on_sigterm(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPGATE_")}
    db = tmp_path / "helpgate.db"
    env["HELPGATE_DATABASE_URL"] = f"sqlite:///{db}"
    mail = tmp_path / "m.eml"
    mail.write_bytes(b"From: ivan@romashka.ru\nSubject: help\nMessage-ID: <r1@x>\n\nhello\n")
    subprocess.run([HELPGATE, "ingest", str(mail)], env=env, check=True, capture_output=True)
    until = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 2))
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
