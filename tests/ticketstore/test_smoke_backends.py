"""The store opens, migrates and keeps a raw message on both backends."""

from datetime import datetime, timezone

from helpgate.channels.mail.parse import parse_email


async def test_keep_raw_then_duplicate(store):
    message = parse_email(b"From: a@b.example\nMessage-ID: <x@y>\n\nhello\n",
                          datetime(2026, 1, 1, tzinfo=timezone.utc))
    first, duplicate = await store.keep_raw(message, message.sender_email)
    again, duplicate_again = await store.keep_raw(message, message.sender_email)
    assert (duplicate, duplicate_again) == (False, True)
    assert again == first


async def test_sqlite_syncs_every_commit_to_disk(sqlite_store):
    # A kept mail is answered 250 and an outbox row marked sending is sent: each commit
    # must be on disk (synchronous FULL, 2), not only in the WAL's page cache (NORMAL).
    def modes(session):
        connection = session.connection()
        return (connection.exec_driver_sql("PRAGMA synchronous").scalar(),
                connection.exec_driver_sql("PRAGMA journal_mode").scalar())
    assert await sqlite_store.run(modes) == (2, "wal")
