"""cap_messages: every CAP document received, aired or refused, with the Ack or Error sent
back

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 14:00:00
"""
import sqlalchemy as sa
from alembic import op

import controller.db.types

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'cap_messages',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('received_at', controller.db.types.UTCDateTime(timezone=True),
                  nullable=False),
        sa.Column('username', sa.String(length=64), nullable=True),
        sa.Column('area_id', sa.String(length=64), nullable=True),
        sa.Column('identifier', sa.String(length=512), nullable=True),
        sa.Column('sender', sa.String(length=512), nullable=True),
        sa.Column('sent', sa.String(length=64), nullable=True),
        sa.Column('msg_type', sa.String(length=16), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=True),
        sa.Column('event', sa.String(length=512), nullable=True),
        sa.Column('http_status', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=64), nullable=True),
        sa.Column('outcome', sa.JSON(), nullable=True),
        sa.Column('reply', sa.Text(), nullable=True),
    )
    op.create_index('ix_cap_messages_received_at', 'cap_messages', ['received_at'])
    op.create_index('ix_cap_messages_area_id', 'cap_messages', ['area_id'])


def downgrade() -> None:
    op.drop_index('ix_cap_messages_area_id', table_name='cap_messages')
    op.drop_index('ix_cap_messages_received_at', table_name='cap_messages')
    op.drop_table('cap_messages')
