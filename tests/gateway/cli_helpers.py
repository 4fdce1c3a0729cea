"""Running the `helpgate` CLI from tests: in-process for speed, as a subprocess under
`faketime` where the system clock has to move (reopen windows, timers)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpgate.gateway.cli import main
from tests.conftest import DATA, need_service

HELPGATE = str(Path(sys.executable).parent / "helpgate")

DIRECTORY = {
    "companies": [{"name": "Romashka LLC", "domains": ["romashka.ru"],
                   "email": "office@romashka.ru", "phone": "+74951234567"}],
    "contacts": [{"name": "Ivan Petrov", "email": "ivan@romashka.ru", "phone": "+79161234567",
                  "company": "Romashka LLC"},
                 {"name": "Olga Smirnova", "email": "olga@romashka.ru",
                  "company": "Romashka LLC"}],
    "employees": [{"name": "Anna Admin", "email": "anna@helpgate.test",
                   "phone": "+79990000001", "role": "admin"},
                  {"name": "Boris Admin", "email": "boris@helpgate.test", "role": "admin"},
                  {"name": "Vera Agent", "email": "vera@helpgate.test", "role": "agent"}],
}


class Helpgate:
    """One help desk: its own database and config file, driven through the CLI."""

    def __init__(self, tmp_path: Path, monkeypatch, capsys) -> None:
        self.tmp = tmp_path
        self.capsys = capsys
        self.config = tmp_path / "helpgate.toml"
        self.config.write_text("", encoding="utf-8")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HELPGATE_")}
        self.env["HELPGATE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'helpgate.db'}"
        self.env["HELPGATE_CONFIG"] = str(self.config)
        for key in [k for k in os.environ if k.startswith("HELPGATE_")]:
            monkeypatch.delenv(key)
        for key in ("HELPGATE_DATABASE_URL", "HELPGATE_CONFIG"):
            monkeypatch.setenv(key, self.env[key])

    def configure(self, toml: str) -> None:
        self.config.write_text(toml, encoding="utf-8")

    def run(self, *args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str):
        code, out, err = self.run(*args)
        assert code == 0, err
        return json.loads(out)

    def ingest(self, source: str | bytes, *extra: str) -> dict:
        return self.json("ingest", str(self.file(source)), *extra)

    def file(self, source: str | bytes) -> Path:
        """A fixture name from tests/data, or raw bytes written to a temp file."""
        if isinstance(source, bytes):
            path = self.tmp / f"mail{len(list(self.tmp.glob('mail*.eml')))}.eml"
            path.write_bytes(source)
            return path
        return DATA / source

    def ticket(self, number: int) -> dict:
        return self.json("ticket", str(number), "--json")

    def outbox(self) -> list[dict]:
        return self.json("outbox", "--json")

    def directory(self, data: dict | None = None) -> None:
        path = self.tmp / "directory.json"
        path.write_text(json.dumps(data or DIRECTORY), encoding="utf-8")
        assert self.run("directory", "import", str(path))[0] == 0

    def at(self, offset: str, *args: str) -> dict:
        """Run one command in a subprocess whose clock is `offset` ("+8d") from now."""
        faketime = shutil.which("faketime")
        if faketime is None:
            need_service("the faketime program is not installed (Debian package faketime)")
        env = {**self.env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        done = subprocess.run([faketime, "-f", offset, HELPGATE, *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def template(name: str, **values: str) -> bytes:
    """A fixture with {PLACEHOLDERS} filled in (ids only known once a test has run)."""
    raw = (DATA / name).read_bytes()
    for key, value in values.items():
        raw = raw.replace(f"{{{key}}}".encode(), value.encode())
    return raw
