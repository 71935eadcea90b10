"""deliveries.stream: what a cluster heard of a live or relayed stream (played_ms, gaps,
gap_ms, joined_late)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 15:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stream', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('stream')
