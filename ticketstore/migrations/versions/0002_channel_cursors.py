"""Channel cursors: how far each inbound channel (an IMAP mailbox) has read.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:50:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('channel_cursors',
    sa.Column('key', sa.String(length=500), nullable=False),
    sa.Column('validity', sa.BigInteger(), nullable=True),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )


def downgrade() -> None:
    op.drop_table('channel_cursors')
