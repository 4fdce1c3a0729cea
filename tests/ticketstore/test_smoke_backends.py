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
