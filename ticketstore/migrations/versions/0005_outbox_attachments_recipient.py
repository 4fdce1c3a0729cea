"""Outbox: the attachments a message carries, and an index for the acknowledgement cap.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 15:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox') as batch_op:
        batch_op.add_column(sa.Column('attachments', sa.JSON(), nullable=True))
    op.create_index('ix_outbox_recipient_time', 'outbox', ['recipient', 'created_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_recipient_time', table_name='outbox')
    with op.batch_alter_table('outbox') as batch_op:
        batch_op.drop_column('attachments')
