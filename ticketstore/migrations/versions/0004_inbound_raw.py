"""Raw inbound bytes in a table of their own (inbound_raw), written once.

A message's row changes as it is decided; SQLite rewrites a whole record on every
update, so a 40 MB mail kept in that row was copied (twice, in memory) with each change of
state. In inbound_raw the bytes are inserted once, large ones in chunks through SQLite's
incremental blob I/O (ticketstore/repository.py, write_blob).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 16:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbound_raw',
    sa.Column('inbound_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['inbound_id'], ['inbound_messages.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('inbound_id')
    )
    op.execute("INSERT INTO inbound_raw (inbound_id, raw) SELECT id, raw FROM inbound_messages")
    # SQLite 3.35+ and PostgreSQL both drop a plain column in place.
    op.execute("ALTER TABLE inbound_messages DROP COLUMN raw")


def downgrade() -> None:
    op.add_column('inbound_messages', sa.Column('raw', sa.LargeBinary(), nullable=True))
    op.execute("UPDATE inbound_messages SET raw = (SELECT raw FROM inbound_raw "
               "WHERE inbound_raw.inbound_id = inbound_messages.id)")
    op.drop_table('inbound_raw')
