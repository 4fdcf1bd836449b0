"""dns_pending_removals: DNS records of deleted nodes that are still to be removed

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 17:40:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dns_pending_removals',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('node_uuid', sa.String(length=36), nullable=False),
    sa.Column('node_name', sa.String(length=255), nullable=True),
    sa.Column('zone', sa.String(length=255), nullable=False),
    sa.Column('records', sa.JSON(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dns_pending_removals'))
    )
    with op.batch_alter_table('dns_pending_removals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dns_pending_removals_next_attempt_at'),
                              ['next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_dns_pending_removals_node_uuid'),
                              ['node_uuid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dns_pending_removals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dns_pending_removals_node_uuid'))
        batch_op.drop_index(batch_op.f('ix_dns_pending_removals_next_attempt_at'))

    op.drop_table('dns_pending_removals')
