"""clusters: when a board was retired (kept for its history, never targeted again)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 06:20:00
"""
import sqlalchemy as sa
from alembic import op

import controller.db.types

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retired_at',
                                      controller.db.types.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_column('retired_at')
