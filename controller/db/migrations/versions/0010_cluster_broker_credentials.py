"""clusters: each board's broker credential (its Mosquitto password hash), issued at
provisioning and revoked on retire or replace

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 06:00:00
"""
import sqlalchemy as sa
from alembic import op

import controller.db.types

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('credential_hash', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('credential_issued_at',
                                      controller.db.types.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_column('credential_issued_at')
        batch_op.drop_column('credential_hash')
