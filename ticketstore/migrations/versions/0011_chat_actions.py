"""What a messenger's customer can do besides writing: the ticket their messages go to
when several are open (remembered on their identity), a rating of a resolved ticket, the
buttons a bot message offers, and customer companies' group chats.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 21:45:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table('identities') as batch:
        # The ticket the person chose for their chat messages (a button, or /new).
        batch.add_column(sa.Column('ticket_id', BigId, nullable=True))
        batch.create_foreign_key('fk_identities_ticket_id_tickets', 'tickets',
                                 ['ticket_id'], ['id'], ondelete='SET NULL')
        # kind "company": a customer company's group chat with the bot.
        batch.add_column(sa.Column('company_id', BigId, nullable=True))
        batch.create_foreign_key('fk_identities_company_id_companies', 'companies',
                                 ['company_id'], ['id'], ondelete='CASCADE')
        # An email address the person typed in the chat, bound once they type the code
        # mailed to it (a digest of it), before the time given.
        batch.add_column(sa.Column('pending_email', sa.String(320), nullable=True))
        batch.add_column(sa.Column('pending_code', sa.String(64), nullable=True))
        batch.add_column(sa.Column('pending_until', sa.DateTime(timezone=True),
                                   nullable=True))
    with op.batch_alter_table('tickets') as batch:
        batch.add_column(sa.Column('rating', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('rated_at', sa.DateTime(timezone=True), nullable=True))
        # The group chat the ticket lives in, when it is not the contact's private chat.
        batch.add_column(sa.Column('chat', sa.String(100), nullable=True))
    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('buttons', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('buttons')
    with op.batch_alter_table('tickets') as batch:
        batch.drop_column('chat')
        batch.drop_column('rated_at')
        batch.drop_column('rating')
    with op.batch_alter_table('identities') as batch:
        batch.drop_column('pending_until')
        batch.drop_column('pending_code')
        batch.drop_column('pending_email')
        batch.drop_constraint('fk_identities_company_id_companies', type_='foreignkey')
        batch.drop_column('company_id')
        batch.drop_constraint('fk_identities_ticket_id_tickets', type_='foreignkey')
        batch.drop_column('ticket_id')
