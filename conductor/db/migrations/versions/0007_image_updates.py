"""image updates: images, deltas, channels, groups (rollout policy), instances and
their history, reboot lease groups and leases (conductor/updates/)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 14:40:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table('update_images',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('appid', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('signature', sa.String(length=128), nullable=False),
    _ts('created_at', False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_update_images')),
    sa.UniqueConstraint('appid', 'version', name=op.f('uq_update_images_appid'))
    )
    op.create_table('update_deltas',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('appid', sa.String(length=64), nullable=False),
    sa.Column('from_version', sa.String(length=64), nullable=False),
    sa.Column('to_version', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    _ts('created_at', False),
    _ts('updated_at'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_update_deltas')),
    sa.UniqueConstraint('appid', 'from_version', 'to_version',
                        name=op.f('uq_update_deltas_appid'))
    )
    op.create_table('update_channels',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('appid', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=True),
    _ts('created_at', False),
    _ts('updated_at'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_update_channels')),
    sa.UniqueConstraint('appid', 'name', name=op.f('uq_update_channels_appid'))
    )
    op.create_table('update_groups',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('appid', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('updates_enabled', sa.Boolean(), nullable=False),
    sa.Column('safe_mode', sa.Boolean(), nullable=False),
    sa.Column('max_updates_per_period', sa.Integer(), nullable=False),
    sa.Column('period_interval', sa.Integer(), nullable=False),
    sa.Column('update_timeout', sa.Integer(), nullable=False),
    sa.Column('office_hours', sa.Boolean(), nullable=False),
    sa.Column('window_start', sa.String(length=16), nullable=True),
    sa.Column('window_length', sa.Integer(), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('rollout_percent', sa.Integer(), nullable=False),
    sa.Column('floors', sa.JSON(), nullable=True),
    sa.Column('halted_reason', sa.Text(), nullable=True),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('period_grants', sa.Integer(), nullable=False),
    _ts('created_at', False),
    _ts('updated_at'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_update_groups')),
    sa.UniqueConstraint('appid', 'name', name=op.f('uq_update_groups_appid'))
    )
    op.create_table('update_instances',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('machineid', sa.String(length=64), nullable=False),
    sa.Column('appid', sa.String(length=64), nullable=False),
    sa.Column('group_name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('node_uuid', sa.String(length=36), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('target_version', sa.String(length=64), nullable=True),
    sa.Column('error_code', sa.BigInteger(), nullable=True),
    sa.Column('error_text', sa.Text(), nullable=True),
    _ts('granted_at'),
    _ts('last_check_at'),
    _ts('created_at', False),
    _ts('updated_at'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_update_instances')),
    sa.UniqueConstraint('machineid', 'appid', name=op.f('uq_update_instances_machineid'))
    )
    with op.batch_alter_table('update_instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_update_instances_group_name'), ['group_name'],
                              unique=False)
    op.create_table('update_instance_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('error_code', sa.BigInteger(), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    _ts('created_at', False),
    sa.ForeignKeyConstraint(['instance_id'], ['update_instances.id'],
                            name=op.f('fk_update_instance_events_instance_id_update_instances'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_update_instance_events'))
    )
    with op.batch_alter_table('update_instance_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_update_instance_events_instance_id'),
                              ['instance_id'], unique=False)
    op.create_table('update_lease_groups',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('max_holders', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    _ts('updated_at'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_update_lease_groups')),
    sa.UniqueConstraint('name', name=op.f('uq_update_lease_groups_name'))
    )
    op.create_table('update_leases',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('group_name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=36), nullable=False),
    _ts('acquired_at', False),
    _ts('expires_at', False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_update_leases')),
    sa.UniqueConstraint('group_name', 'holder', name=op.f('uq_update_leases_group_name'))
    )


def downgrade() -> None:
    op.drop_table('update_leases')
    op.drop_table('update_lease_groups')
    with op.batch_alter_table('update_instance_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_update_instance_events_instance_id'))
    op.drop_table('update_instance_events')
    with op.batch_alter_table('update_instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_update_instances_group_name'))
    op.drop_table('update_instances')
    op.drop_table('update_groups')
    op.drop_table('update_channels')
    op.drop_table('update_deltas')
    op.drop_table('update_images')
