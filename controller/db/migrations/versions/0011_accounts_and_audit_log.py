"""accounts: disabled, failed logins and lockout, when the password last changed; token
kinds (access, refresh); the append-only audit log

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 06:10:00
"""
import sqlalchemy as sa
from alembic import op

import controller.db.types

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disabled', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('failed_logins', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('locked_until',
                                      controller.db.types.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('password_changed_at',
                                      controller.db.types.UTCDateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=8), nullable=False,
                                      server_default='access'))
    op.create_table(
        'audit_log',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('at', controller.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('username', sa.String(length=64), nullable=True),
        sa.Column('role', sa.String(length=16), nullable=True),
        sa.Column('area_id', sa.String(length=64), nullable=True),
        sa.Column('client', sa.String(length=64), nullable=True),
        sa.Column('action', sa.String(length=200), nullable=False),
        sa.Column('target', sa.String(length=200), nullable=True),
        sa.Column('status', sa.Integer(), nullable=True),
        sa.Column('detail', sa.JSON(), nullable=True),
    )
    op.create_index('ix_audit_log_at', 'audit_log', ['at'])
    op.create_index('ix_audit_log_username', 'audit_log', ['username'])


def downgrade() -> None:
    op.drop_index('ix_audit_log_username', table_name='audit_log')
    op.drop_index('ix_audit_log_at', table_name='audit_log')
    op.drop_table('audit_log')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('password_changed_at')
        batch_op.drop_column('locked_until')
        batch_op.drop_column('failed_logins')
        batch_op.drop_column('disabled')
