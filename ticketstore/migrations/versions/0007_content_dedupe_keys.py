"""Email dedupe keys with the content digest: "mid:<id>" becomes "mid:<digest>:<id>".

Since a reused Message-ID with other content is a message of its own (issue #14), the
key of an email is its Message-ID behind a digest of its sender, date, subject and text
(channels/mail/parse.py). Keys stored before have the Message-ID alone; without this,
the re-delivery of such a mail (or a second `helpgate import` of a mailbox) would no
longer be recognised as one. Each old key is recomputed from the kept raw bytes by the
parser itself, so old and new keys can never disagree.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:20:00
"""
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None
CHUNK = 500


def upgrade() -> None:
    from helpgate.channels.mail.parse import parse_safely

    bind = op.get_bind()
    now = datetime.now(timezone.utc)
    last = 0
    while True:
        rows = bind.execute(sa.text(
            "SELECT m.id, r.raw FROM inbound_messages m JOIN inbound_raw r "
            "ON r.inbound_id = m.id WHERE m.channel = 'email' AND m.id > :last "
            "AND m.dedupe_key LIKE 'mid:<%' ORDER BY m.id LIMIT :chunk"),
            {"last": last, "chunk": CHUNK}).all()
        if not rows:
            return
        for inbound_id, raw in rows:
            key = parse_safely(bytes(raw), now).dedupe_key[:500]
            bind.execute(sa.text("UPDATE inbound_messages SET dedupe_key = :key "
                                 "WHERE id = :id"), {"key": key, "id": inbound_id})
        last = rows[-1][0]


def downgrade() -> None:
    pass  # the new keys hold the old ones' Message-ID; nothing needs them back
