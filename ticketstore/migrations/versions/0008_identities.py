"""Identities: a person's ids on channels other than mail, one table for every channel.

The Telegram and VK ids that contacts and employees had as columns move into it, so that
a new channel needs no new column.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 19:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    bind = op.get_bind()
    # Read before the columns go, written once the new table is there.
    ids = []
    for table, kind, column, channel in (("contacts", "contact", "telegram_id", "telegram"),
                                         ("contacts", "contact", "vk_id", "vk"),
                                         ("employees", "employee", "telegram_id", "telegram")):
        ids += [{"kind": kind, "channel": channel, "external_id": str(value),
                 "contact_id": person if kind == "contact" else None,
                 "employee_id": person if kind == "employee" else None, "created_at": at}
                for person, value, at in bind.execute(sa.text(
                    f"SELECT id, {column}, created_at FROM {table} "
                    f"WHERE {column} IS NOT NULL ORDER BY id"))]
    with op.batch_alter_table('contacts') as batch:
        batch.drop_column('telegram_id')
        batch.drop_column('vk_id')
    with op.batch_alter_table('employees') as batch:
        batch.drop_column('telegram_id')
    op.create_table('identities',
    sa.Column('id', BigId, nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('contact_id', BigId, nullable=True),
    sa.Column('employee_id', BigId, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['employee_id'], ['employees.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'channel', 'external_id')
    )
    op.create_index(op.f('ix_identities_contact_id'), 'identities', ['contact_id'], unique=False)
    op.create_index(op.f('ix_identities_employee_id'), 'identities', ['employee_id'], unique=False)
    if ids:
        # As text: each value goes back the way it was read (SQLite keeps dates as text).
        bind.execute(sa.text(
            "INSERT INTO identities (kind, channel, external_id, contact_id, employee_id, "
            "created_at) VALUES (:kind, :channel, :external_id, :contact_id, :employee_id, "
            ":created_at)"), ids)


def downgrade() -> None:
    with op.batch_alter_table('employees') as batch:
        batch.add_column(sa.Column('telegram_id', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('contacts') as batch:
        batch.add_column(sa.Column('telegram_id', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('vk_id', sa.BigInteger(), nullable=True))
    op.drop_index(op.f('ix_identities_employee_id'), table_name='identities')
    op.drop_index(op.f('ix_identities_contact_id'), table_name='identities')
    op.drop_table('identities')
