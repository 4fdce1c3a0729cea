"""Schema migrations (R-TS-1): the migrations build exactly the models' schema on both
backends, and HEAD (read at start-up without loading Alembic) is the newest revision."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from helpgate.ticketstore.migrations import HEAD, alembic_config
from helpgate.ticketstore.models import Base


def test_head_constant_is_the_newest_revision():
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


async def test_migrated_schema_matches_the_models(store):
    def diff(connection):
        context = MigrationContext.configure(connection)
        return compare_metadata(context, Base.metadata)

    assert await store.run_connection(diff) == []


async def test_ensure_schema_is_idempotent(store):
    await store.ensure_schema()
    await store.ensure_schema()
    version = await store.run_connection(
        lambda c: c.execute(text("SELECT version_num FROM alembic_version")).scalar())
    assert version == HEAD


async def test_raw_bytes_move_to_their_own_table_on_upgrade(tmp_path):
    """0004 moves every kept raw message into inbound_raw, byte for byte (R-TS-5)."""
    from helpgate.ticketstore.migrations import upgrade
    from helpgate.ticketstore.repository import Store

    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        await upgrade(store, "0003")
        raw = b"From: a@b.ru\r\nSubject: s\r\n\r\n\x00\xff body\r\n"

        def old_row(connection):
            connection.execute(text(
                "INSERT INTO inbound_messages (channel, dedupe_key, raw, meta, received_at, "
                "state) VALUES ('email', 'k', :raw, '{}', '2026-11-23 09:00:00', "
                "'processed')"), {"raw": raw})
        await store.run_connection(old_row)
        await upgrade(store)
        moved = await store.run_connection(lambda c: c.execute(text(
            "SELECT inbound_id, raw FROM inbound_raw")).all())
        assert [tuple(row) for row in moved] == [(1, raw)]
    finally:
        await store.close()


async def test_old_dedupe_keys_get_their_content_digest(store):
    """0007: a mail stored under "mid:<id>" before issue #14 is still recognised when it
    is delivered again after the upgrade (R-TH-9), on both backends."""
    from helpgate.channels.mail.parse import parse_email
    from helpgate.ticketstore.migrations import upgrade
    from tests.conftest import Clock
    from tests.mailfactory import mail

    raw = mail(message_id="<old@client>", body="Старое письмо")

    def old_row(connection):
        connection.execute(text("UPDATE alembic_version SET version_num = '0006'"))
        inbound = connection.execute(text(
            "INSERT INTO inbound_messages (channel, dedupe_key, meta, received_at, state) "
            "VALUES ('email', 'mid:<old@client>', '{}', :at, 'processed') RETURNING id"),
            {"at": Clock().now}).scalar()
        connection.execute(text("INSERT INTO inbound_raw (inbound_id, raw) VALUES (:i, :r)"),
                           {"i": inbound, "r": raw})
    await store.run_connection(old_row)
    await upgrade(store)
    key = await store.run_connection(lambda c: c.execute(text(
        "SELECT dedupe_key FROM inbound_messages")).scalar())
    assert key == parse_email(raw, Clock().now).dedupe_key
