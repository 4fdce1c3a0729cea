"""Shared fixtures: config, stores on SQLite and PostgreSQL, a pipeline with a movable clock.

Tests that need a service (PostgreSQL) fail when HELPGATE_REQUIRE_SERVICES=1 (CI) and
skip with a one-line reason elsewhere.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from helpgate.config.schema import Config
from helpgate.gateway.pipeline import Pipeline
from helpgate.ticketstore.repository import Store

DATA = Path(__file__).parent / "data"
PG_ADMIN_URL = os.environ.get("HELPGATE_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("HELPGATE_REQUIRE_SERVICES") == "1"


def need_service(reason: str) -> None:
    """Fail in CI, skip elsewhere: a service test must never silently not run in CI."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


class Clock:
    """A clock the test moves; the pipeline reads it for every time decision."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def pytest_configure(config):
    config.addinivalue_line("markers", "pipeline_errors_expected: the test provokes "
                            "errors the pipeline logs (and recovers from)")


@pytest.fixture(autouse=True)
def _no_hidden_pipeline_errors(request, caplog):
    """The pipeline recovers from errors (careful path, quarantine) and logs them: a bug
    would hide behind that recovery, so a logged pipeline error fails the test."""
    yield
    if request.node.get_closest_marker("pipeline_errors_expected"):
        return
    errors = [r for r in caplog.get_records("call")
              if r.levelno >= logging.ERROR and r.name.startswith("helpgate")]
    assert not errors, f"pipeline logged an error: {errors[0].getMessage()}"


@pytest.fixture
async def tg():
    """A fake Telegram Bot API (tests/fakes/telegram.py) on a loopback port."""
    from tests.fakes.telegram import FakeTelegram
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def no_vk_rate_sleep(monkeypatch):
    """vk-api waits 1/20 s before each call of a community token; the fake needs none."""
    from helpgate.channels.vk import api
    monkeypatch.setattr(api.BoundedVkApi, "RPS_DELAY", 0)
    monkeypatch.setattr(api, "RPS_PAUSE", 0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config() -> Config:
    return Config()


def sqlite_template(path: Path) -> None:
    """Put a migrated, empty SQLite database at `path` (see _Templates)."""
    shutil.copyfile(_templates.sqlite(), path)


async def _sqlite_store(tmp_path: Path) -> Store:
    """A copy of the migrated template: the migrations run once per test process."""
    path = tmp_path / "helpgate.db"
    sqlite_template(path)
    store = Store(f"sqlite:///{path}")
    await store.ensure_schema()  # one query: the copy is at HEAD
    return store


# Making and dropping a test's schema need not wait for the disk: a crash of the test
# database loses nothing a test needs. (The stores' own commits keep the server's default.)
_ADMIN_SETTINGS = {"synchronous_commit": "off"}


def _pg_dsn() -> str:
    return PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")


async def _postgres_store() -> tuple[Store, str]:
    """A fresh schema in the test database, so parallel runs never see each other."""
    import asyncpg
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(_pg_dsn(), timeout=5,
                                     server_settings=_ADMIN_SETTINGS)
    except (OSError, asyncpg.PostgresError) as exc:
        need_service(f"PostgreSQL at {_pg_dsn()} unavailable: {exc}")
    try:
        script = await _templates.postgres(conn)
        if script is None:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        else:
            await conn.execute(script.replace(_templates.pg_schema, schema))
    finally:
        await conn.close()
    store = Store(PG_ADMIN_URL, connect_args={"server_settings": {"search_path": schema}})
    await store.ensure_schema()  # migrates where no template could be made; else one query
    return store, schema


async def _drop_schema(schema: str) -> None:
    import asyncpg
    conn = await asyncpg.connect(_pg_dsn(), server_settings=_ADMIN_SETTINGS)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


class _Templates:
    """Each store test starts from a migrated schema. Running the fourteen migrations
    per test cost more than most tests themselves, so each test process migrates once
    per backend, through the same `ensure_schema` as ever, and every test copies that:
    SQLite the database file, PostgreSQL the schema as `pg_dump` writes it, under the
    test's own schema name. tests/ticketstore/test_migrations.py still compares every
    store's schema with the models, and migrates databases with rows on its own."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.pg_schema = f"t_{uuid.uuid4().hex[:12]}"
        self.pg_script: str | None = None
        self.pg_tried = False

    def sqlite(self) -> Path:
        """The migrated SQLite file (made on first use, in a thread of its own so that
        sync fixtures and tests inside an event loop may both ask)."""
        if self.folder is None:
            folder = Path(tempfile.mkdtemp(prefix="helpgate-template-"))
            atexit.register(shutil.rmtree, folder, True)

            async def migrate() -> None:
                store = Store(f"sqlite:///{folder / 'helpgate.db'}")
                try:
                    await store.ensure_schema()
                finally:
                    await store.close()  # the last connection's close folds the WAL in
            with ThreadPoolExecutor(1) as thread:
                thread.submit(asyncio.run, migrate()).result()
            self.folder = folder
        return self.folder / "helpgate.db"

    async def postgres(self, conn) -> str | None:
        """The migrated schema as SQL naming `pg_schema`; None where pg_dump is missing
        or fails (each test then migrates its own schema, as before)."""
        if not self.pg_tried:
            self.pg_tried = True
            self.pg_script = await self._dump(conn)
        return self.pg_script

    async def _dump(self, conn) -> str | None:
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            return None
        await conn.execute(f'CREATE SCHEMA "{self.pg_schema}"')
        try:
            store = Store(PG_ADMIN_URL,
                          connect_args={"server_settings": {"search_path": self.pg_schema}})
            try:
                await store.ensure_schema()
            finally:
                await store.close()
            done = await asyncio.to_thread(
                subprocess.run, [pg_dump, "--dbname", _pg_dsn(), "--schema", self.pg_schema,
                                 "--inserts", "--no-owner", "--no-privileges"],
                capture_output=True, text=True)
        finally:
            await conn.execute(f'DROP SCHEMA "{self.pg_schema}" CASCADE')
        if done.returncode != 0 or f"CREATE SCHEMA {self.pg_schema};" not in done.stdout:
            return None
        # Lines starting with a backslash are psql's commands (\restrict), not SQL.
        return "\n".join(line for line in done.stdout.splitlines()
                         if not line.startswith(("\\", "--")))


_templates = _Templates()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path) -> AsyncIterator[Store]:
    """The store on each backend: every store test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        store = await _sqlite_store(tmp_path)
        yield store
        await store.close()
    else:
        store, schema = await _postgres_store()
        yield store
        await store.close()
        await _drop_schema(schema)


@pytest.fixture
async def sqlite_store(tmp_path) -> AsyncIterator[Store]:
    store = await _sqlite_store(tmp_path)
    yield store
    await store.close()


@pytest.fixture
def pipeline(config, store, clock) -> Pipeline:
    return Pipeline(config, store, clock=clock)


def eml(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate for localhost, for the TLS servers of the tests."""
    from tests.mailservers import make_certificate
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def dovecot(certificate):
    """A real Dovecot IMAP server of the test's own (tests/dovecot.py)."""
    from tests.dovecot import Dovecot
    server = Dovecot(certificate).start()
    yield server
    server.cleanup()


@pytest.fixture
async def relay():
    """A real aiosmtpd SMTP relay on a loopback port, with an error-injection switch."""
    from tests.mailservers import Relay
    server = await Relay().start()
    yield server
    await server.stop()
