"""sw_update_strategies: the one orchestration strategy (sw-manager), persisted

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 11:40:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sw_update_strategies',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('document', sa.JSON(), nullable=True),
    sa.Column('revision', sa.String(length=32), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=True),
    sa.Column('owner_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sw_update_strategies')),
    sa.UniqueConstraint('slot', name=op.f('uq_sw_update_strategies_slot')),
    sa.UniqueConstraint('uuid', name=op.f('uq_sw_update_strategies_uuid'))
    )


def downgrade() -> None:
    op.drop_table('sw_update_strategies')
