"""Canned answers grouped by case (R-OUT-7): a nullable `case_name` on each answer
(None: filed under no case), indexed so staff list one case's answers quickly. A
column rather than a table of cases: a case is only a name staff file answers under,
and it goes away with its last answer. Titles stay unique across every case.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 00:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('canned_answers') as batch:
        batch.add_column(sa.Column('case_name', sa.String(length=100), nullable=True))
        batch.create_index(batch.f('ix_canned_answers_case_name'), ['case_name'],
                           unique=False)


def downgrade() -> None:
    with op.batch_alter_table('canned_answers') as batch:
        batch.drop_index(batch.f('ix_canned_answers_case_name'))
        batch.drop_column('case_name')
