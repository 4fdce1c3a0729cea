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
    from alembic import command

    from helpgate.channels.mail.parse import parse_email
    from helpgate.ticketstore.migrations import alembic_config, upgrade
    from tests.conftest import Clock
    from tests.mailfactory import mail

    raw = mail(message_id="<old@client>", body="Старое письмо")
    await store.run_migration(lambda c: command.downgrade(alembic_config(c), "0006"))

    def old_row(connection):
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


async def test_messenger_ids_move_to_identities_on_upgrade(store):
    """0008: the Telegram and VK ids contacts and employees had as columns become
    identities, and the people are found by them, on both backends."""
    from alembic import command

    from helpgate.ticketstore.migrations import alembic_config, upgrade
    from helpgate.ticketstore.repository import SessionDirectory
    from tests.conftest import Clock

    await store.run_migration(lambda c: command.downgrade(alembic_config(c), "0007"))

    def old_rows(connection):
        at = {"at": Clock().now}
        connection.execute(text(
            "INSERT INTO contacts (name, email, telegram_id, vk_id, created_at) "
            "VALUES ('Иван', 'ivan@romashka.ru', 4200000001, 77, :at)"), at)
        connection.execute(text(
            "INSERT INTO employees (name, email, telegram_id, role, created_at) "
            "VALUES ('Анна', 'anna@helpgate.test', 4200000002, 'admin', :at)"), at)
        # A ticket of the contact: the rebuilt contacts table must keep it valid.
        connection.execute(text(
            "INSERT INTO tickets (number, subject, type, priority, status, channel, "
            "contact_id, created_at, updated_at, status_changed_at, open_seconds) "
            "SELECT 1, 's', 'question', 'normal', 'open', 'email', id, :at, :at, :at, 0 "
            "FROM contacts"), at)
    await store.run_connection(old_rows)
    await upgrade(store)

    def found(session):
        directory = SessionDirectory(session)
        return [directory.person_by_identity("telegram", "4200000001"),
                directory.person_by_identity("vk", "77"),
                directory.person_by_identity("telegram", "4200000002"),
                directory.person_by_identity("telegram", "77")]
    contact, by_vk, employee, nobody = await store.run(found)
    assert (contact.kind, contact.email) == ("contact", "ivan@romashka.ru")
    assert by_vk == contact
    assert (employee.kind, employee.email) == ("employee", "anna@helpgate.test")
    assert nobody is None


async def test_outbox_rows_and_their_bounces_survive_the_outbox_rebuild(store):
    """0009 rebuilds the outbox on SQLite: its rows, and the bounces pointing at them,
    come through whole (the foreign keys are checked at commit), on both backends."""
    from alembic import command

    from helpgate.ticketstore.migrations import alembic_config, upgrade
    from tests.conftest import Clock

    await store.run_migration(lambda c: command.downgrade(alembic_config(c), "0008"))

    def old_rows(connection):
        at = {"at": Clock().now}
        connection.execute(text(
            "INSERT INTO outbox (dedupe_key, channel, kind, recipient, subject, text, "
            "headers, state, attempts, next_attempt_at, created_at) VALUES ('k', 'email', "
            "'ack', 'ivan@romashka.ru', 's', 'текст', '{}', 'sent', 1, :at, :at)"), at)
        inbound = connection.execute(text(
            "INSERT INTO inbound_messages (channel, dedupe_key, meta, received_at, state) "
            "VALUES ('email', 'bounce', '{}', :at, 'ignored') RETURNING id"), at).scalar()
        connection.execute(text(
            "INSERT INTO delivery_reports (outbox_id, inbound_id, created_at) "
            "SELECT id, :inbound, :at FROM outbox"), {**at, "inbound": inbound})
    await store.run_connection(old_rows)
    await upgrade(store)
    rows = await store.run_connection(lambda c: c.execute(text(
        "SELECT o.text, o.content, o.contact_id, r.outbox_id = o.id FROM outbox o "
        "JOIN delivery_reports r ON r.outbox_id = o.id")).all())
    assert [tuple(row) for row in rows] == [("текст", None, None, True)]


async def test_tickets_get_an_empty_assignee_on_upgrade(store):
    """0015: tickets kept from before gain an assignee column (nobody) and can then be
    assigned, with the history row, on both backends."""
    from alembic import command

    from helpgate.ticketstore.assignments import AssignmentService, find_employee
    from helpgate.ticketstore.migrations import alembic_config, upgrade
    from helpgate.ticketstore.queries import ticket_detail
    from helpgate.ticketstore.repository import ticket_by_number
    from tests.conftest import Clock

    await store.run_migration(lambda c: command.downgrade(alembic_config(c), "0014"))
    now = Clock().now

    def old_rows(connection):
        at = {"at": now}
        connection.execute(text(
            "INSERT INTO employees (name, email, role, created_at) "
            "VALUES ('Анна', 'anna@helpgate.test', 'admin', :at)"), at)
        for number in (1, 2):
            connection.execute(text(
                "INSERT INTO tickets (number, subject, type, priority, status, channel, "
                "created_at, updated_at, status_changed_at, open_seconds) "
                f"VALUES ({number}, 's{number}', 'question', 'normal', 'open', 'email', "
                ":at, :at, :at, 0)"), at)
    await store.run_connection(old_rows)
    await upgrade(store)

    def assign(session):
        from helpgate.config.schema import Config
        ticket = ticket_by_number(session, 2)
        kept = ticket_by_number(session, 1)
        AssignmentService().assign(session, ticket, find_employee(session, "anna@helpgate.test"),
                                   now, "test")
        return (kept.assignee_id, ticket_detail(session, Config(), ticket, now))
    before, detail = await store.run(assign)
    assert before is None
    assert detail["assignee"]["email"] == "anna@helpgate.test"
    assert [(h["from"], h["to"]["email"]) for h in detail["assignment_history"]] == \
        [(None, "anna@helpgate.test")]
