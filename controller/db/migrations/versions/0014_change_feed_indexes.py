"""deliveries.updated_at and action_results.updated_at indexed: the console's change feed
reads their latest value every 2 s (a full scan of a million deliveries took ~70 ms)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 14:30:00
"""
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_deliveries_updated_at', 'deliveries', ['updated_at'])
    op.create_index('ix_action_results_updated_at', 'action_results', ['updated_at'])


def downgrade() -> None:
    op.drop_index('ix_action_results_updated_at', table_name='action_results')
    op.drop_index('ix_deliveries_updated_at', table_name='deliveries')
