"""The `hg` fixture: a help desk with the sample directory, driven through the CLI."""

from __future__ import annotations

import pytest

from tests.gateway.cli_helpers import Helpgate


@pytest.fixture
def hg(tmp_path, monkeypatch, capsys) -> Helpgate:
    desk = Helpgate(tmp_path, monkeypatch, capsys)
    desk.directory()
    return desk
