"""The `hg` fixture: a help desk with the sample directory, driven through the CLI."""

from __future__ import annotations

import pytest

from tests.conftest import sqlite_template
from tests.gateway.cli_helpers import Helpgate


@pytest.fixture
def hg(tmp_path, monkeypatch, capsys) -> Helpgate:
    # Its database starts migrated, copied from the template (a fresh install's first
    # command migrating is tested with a Helpgate of its own, tests/gateway/test_cli_ops.py).
    sqlite_template(tmp_path / "helpgate.db")
    desk = Helpgate(tmp_path, monkeypatch, capsys)
    desk.directory()
    return desk
