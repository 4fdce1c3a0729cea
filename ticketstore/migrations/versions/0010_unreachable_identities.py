"""Identities a channel refused to deliver to (a blocked bot): passed over until the
person writes from that channel again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 19:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('identities', sa.Column('unreachable_since', sa.DateTime(timezone=True),
                                          nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('identities') as batch:
        batch.drop_column('unreachable_since')
