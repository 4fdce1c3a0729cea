"""Staff reply tokens: the secret in a staff member's per-ticket reply address.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 15:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('staff_tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('ticket_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('employee_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['employee_id'], ['employees.id'], ),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token')
    )
    op.create_index('ix_staff_tokens_ticket_employee', 'staff_tokens',
                    ['ticket_id', 'employee_id'], unique=False)
    op.create_index(op.f('ix_staff_tokens_employee_id'), 'staff_tokens', ['employee_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_staff_tokens_employee_id'), table_name='staff_tokens')
    op.drop_index('ix_staff_tokens_ticket_employee', table_name='staff_tokens')
    op.drop_table('staff_tokens')
