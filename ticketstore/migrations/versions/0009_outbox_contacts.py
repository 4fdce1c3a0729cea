"""Outbox rows addressed to a customer: the contact, and the words without the mail's
frame, so that the channel can be chosen again when the row is sent.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 19:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # SQLite adds a column with a foreign key only by rebuilding the table: batch mode.
    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('content', sa.Text(), nullable=True))
        batch.add_column(sa.Column('contact_id', BigId, nullable=True))
        batch.create_foreign_key('fk_outbox_contact_id_contacts', 'contacts',
                                 ['contact_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.drop_constraint('fk_outbox_contact_id_contacts', type_='foreignkey')
        batch.drop_column('contact_id')
        batch.drop_column('content')
