"""Staff topics and chat messages: each ticket's topic in the Telegram staff group, and
the messenger messages of a ticket by (chat, message id), both ways.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 21:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table('staff_topics',
    sa.Column('id', BigId, nullable=False),
    sa.Column('ticket_id', BigId, nullable=False),
    sa.Column('chat_id', sa.BigInteger(), nullable=False),
    sa.Column('thread_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id']),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ticket_id'),
    sa.UniqueConstraint('chat_id', 'thread_id')
    )
    op.create_table('chat_messages',
    sa.Column('id', BigId, nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('chat_id', sa.BigInteger(), nullable=False),
    sa.Column('message_id', sa.BigInteger(), nullable=False),
    sa.Column('ticket_id', BigId, nullable=False),
    sa.Column('comment_id', BigId, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['comment_id'], ['comments.id']),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id']),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('channel', 'chat_id', 'message_id')
    )
    op.create_index(op.f('ix_chat_messages_ticket_id'), 'chat_messages', ['ticket_id'],
                    unique=False)
    op.create_index(op.f('ix_chat_messages_comment_id'), 'chat_messages', ['comment_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_chat_messages_comment_id'), table_name='chat_messages')
    op.drop_index(op.f('ix_chat_messages_ticket_id'), table_name='chat_messages')
    op.drop_table('chat_messages')
    op.drop_table('staff_topics')
