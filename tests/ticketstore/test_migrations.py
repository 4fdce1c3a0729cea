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
