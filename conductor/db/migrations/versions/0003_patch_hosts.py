"""patch_hosts: installed hosts' patch state, shared by every conductor

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('patch_hosts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('ip', sa.String(length=255), nullable=False),
    sa.Column('nodetype', sa.String(length=64), nullable=False),
    sa.Column('subfunctions', sa.JSON(), nullable=True),
    sa.Column('sw_version', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('out_of_date', sa.Boolean(), nullable=False),
    sa.Column('node_is_patched', sa.Boolean(), nullable=False),
    sa.Column('patch_failed', sa.Boolean(), nullable=False),
    sa.Column('installed', sa.JSON(), nullable=True),
    sa.Column('to_remove', sa.JSON(), nullable=True),
    sa.Column('missing_pkgs', sa.JSON(), nullable=True),
    sa.Column('duplicated_pkgs', sa.JSON(), nullable=True),
    sa.Column('interim', sa.JSON(), nullable=True),
    sa.Column('install_request', sa.String(length=64), nullable=True),
    sa.Column('install_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revision', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patch_hosts')),
    sa.UniqueConstraint('hostname', name=op.f('uq_patch_hosts_hostname'))
    )


def downgrade() -> None:
    op.drop_table('patch_hosts')
