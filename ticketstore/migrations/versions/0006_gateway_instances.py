"""Gateway instances with heartbeats, and the instance that claimed each outbox row.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 15:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gateway_instances',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.add_column('outbox', sa.Column('claimed_by', sa.String(length=64), nullable=True))


def downgrade() -> None:
    # SQLite drops a column only by rebuilding the table: batch mode does that.
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('claimed_by')
    op.drop_table('gateway_instances')
