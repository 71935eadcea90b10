"""referrals to communes, programme order, volume, content revisions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 03:10:00
"""
import sqlalchemy as sa
from alembic import op

import controller.db.types

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('broadcasts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('commune_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('decided_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('decided_at', controller.db.types.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('decision_note', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('position', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('volume_pct', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('revision', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_index(batch_op.f('ix_broadcasts_parent_id'), ['parent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_broadcasts_commune_id'), ['commune_id'], unique=False)
        batch_op.create_foreign_key('fk_broadcasts_parent_id', 'broadcasts', ['parent_id'], ['id'])

    with op.batch_alter_table('occurrences', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('revision', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_foreign_key('fk_occurrences_content_id', 'contents', ['content_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('occurrences', schema=None) as batch_op:
        batch_op.drop_constraint('fk_occurrences_content_id', type_='foreignkey')
        batch_op.drop_column('revision')
        batch_op.drop_column('content_id')

    with op.batch_alter_table('broadcasts', schema=None) as batch_op:
        batch_op.drop_constraint('fk_broadcasts_parent_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_broadcasts_commune_id'))
        batch_op.drop_index(batch_op.f('ix_broadcasts_parent_id'))
        for col in ('revision', 'volume_pct', 'position', 'decision_note', 'decided_at',
                    'decided_by', 'commune_id', 'parent_id'):
            batch_op.drop_column(col)
