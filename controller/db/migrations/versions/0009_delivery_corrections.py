"""deliveries: the controller's assumed final state, and the report that corrected it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 19:30:00
"""
import sqlalchemy as sa
from alembic import op

import controller.db.types

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('assumed', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('corrected_from', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('corrected_at', controller.db.types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('corrected_at')
        batch_op.drop_column('corrected_from')
        batch_op.drop_column('assumed')
