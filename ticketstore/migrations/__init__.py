"""Schema migrations (Alembic), run by `helpgate db upgrade` and at start-up.

HEAD names the newest revision so that start-up can tell "schema is current" from one
query without loading Alembic; tests/ticketstore/test_migrations.py keeps it true.
"""

from __future__ import annotations

from pathlib import Path

HEAD = "0015"
HERE = Path(__file__).resolve().parent


def alembic_config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config


async def upgrade(store, revision: str = "head") -> None:
    """Migrate the store's database to `revision` (the newest by default)."""

    def run(connection) -> None:
        from alembic import command

        if connection.dialect.name == "postgresql":
            # Several instances may start at once: one migrates, the others wait here.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(74210001)")
        command.upgrade(alembic_config(connection), revision)

    await store.run_migration(run)
