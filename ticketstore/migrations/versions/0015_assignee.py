"""A ticket's assignee (the employee responsible for it) and the history of its
assignments: who was assigned, by whom, when.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 00:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # SQLite adds a column with a foreign key only by rebuilding the table: batch mode.
    with op.batch_alter_table('tickets') as batch:
        batch.add_column(sa.Column('assignee_id', BigId, nullable=True))
        batch.create_foreign_key('fk_tickets_assignee_id_employees', 'employees',
                                 ['assignee_id'], ['id'])
        batch.create_index('ix_tickets_assignee_id', ['assignee_id'], unique=False)
    op.create_table('assignment_history',
    sa.Column('id', BigId, nullable=False),
    sa.Column('ticket_id', BigId, nullable=False),
    sa.Column('from_employee_id', BigId, nullable=True),
    sa.Column('to_employee_id', BigId, nullable=True),
    sa.Column('by_employee_id', BigId, nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id']),
    sa.ForeignKeyConstraint(['from_employee_id'], ['employees.id']),
    sa.ForeignKeyConstraint(['to_employee_id'], ['employees.id']),
    sa.ForeignKeyConstraint(['by_employee_id'], ['employees.id']),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_assignment_history_ticket_id'), 'assignment_history',
                    ['ticket_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_assignment_history_ticket_id'), table_name='assignment_history')
    op.drop_table('assignment_history')
    with op.batch_alter_table('tickets') as batch:
        batch.drop_index('ix_tickets_assignee_id')
        batch.drop_constraint('fk_tickets_assignee_id_employees', type_='foreignkey')
        batch.drop_column('assignee_id')
