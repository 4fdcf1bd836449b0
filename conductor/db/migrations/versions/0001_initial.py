"""initial schema: nodes, ports, conductors

Revision ID: 0001
Revises:
Create Date: 2026-11-23 09:03:38.409462
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('conductors',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('conductor_group', sa.String(length=255), nullable=False),
    sa.Column('online', sa.Boolean(), nullable=False),
    sa.Column('hardware_types', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conductors')),
    sa.UniqueConstraint('hostname', name=op.f('uq_conductors_hostname'))
    )
    op.create_table('nodes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('driver', sa.String(length=255), nullable=False),
    sa.Column('bios_interface', sa.String(length=255), nullable=True),
    sa.Column('boot_interface', sa.String(length=255), nullable=True),
    sa.Column('console_interface', sa.String(length=255), nullable=True),
    sa.Column('deploy_interface', sa.String(length=255), nullable=True),
    sa.Column('firmware_interface', sa.String(length=255), nullable=True),
    sa.Column('inspect_interface', sa.String(length=255), nullable=True),
    sa.Column('management_interface', sa.String(length=255), nullable=True),
    sa.Column('network_interface', sa.String(length=255), nullable=True),
    sa.Column('power_interface', sa.String(length=255), nullable=True),
    sa.Column('raid_interface', sa.String(length=255), nullable=True),
    sa.Column('rescue_interface', sa.String(length=255), nullable=True),
    sa.Column('storage_interface', sa.String(length=255), nullable=True),
    sa.Column('vendor_interface', sa.String(length=255), nullable=True),
    sa.Column('provision_state', sa.String(length=15), nullable=True),
    sa.Column('target_provision_state', sa.String(length=15), nullable=True),
    sa.Column('provision_updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('power_state', sa.String(length=15), nullable=True),
    sa.Column('target_power_state', sa.String(length=15), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('maintenance', sa.Boolean(), nullable=False),
    sa.Column('maintenance_reason', sa.Text(), nullable=True),
    sa.Column('fault', sa.String(length=255), nullable=True),
    sa.Column('reservation', sa.String(length=255), nullable=True),
    sa.Column('conductor_affinity', sa.String(length=255), nullable=True),
    sa.Column('conductor_group', sa.String(length=255), nullable=False),
    sa.Column('resource_class', sa.String(length=80), nullable=True),
    sa.Column('owner', sa.String(length=255), nullable=True),
    sa.Column('lessee', sa.String(length=255), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('instance_uuid', sa.String(length=36), nullable=True),
    sa.Column('instance_name', sa.String(length=255), nullable=True),
    sa.Column('chassis_uuid', sa.String(length=36), nullable=True),
    sa.Column('allocation_uuid', sa.String(length=36), nullable=True),
    sa.Column('shard', sa.String(length=255), nullable=True),
    sa.Column('parent_node', sa.String(length=36), nullable=True),
    sa.Column('properties', sa.JSON(), nullable=True),
    sa.Column('instance_info', sa.JSON(), nullable=True),
    sa.Column('driver_info', sa.JSON(), nullable=True),
    sa.Column('driver_internal_info', sa.JSON(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('clean_step', sa.JSON(), nullable=True),
    sa.Column('deploy_step', sa.JSON(), nullable=True),
    sa.Column('service_step', sa.JSON(), nullable=True),
    sa.Column('raid_config', sa.JSON(), nullable=True),
    sa.Column('target_raid_config', sa.JSON(), nullable=True),
    sa.Column('traits', sa.JSON(), nullable=True),
    sa.Column('network_data', sa.JSON(), nullable=True),
    sa.Column('automated_clean', sa.Boolean(), nullable=True),
    sa.Column('protected', sa.Boolean(), nullable=False),
    sa.Column('protected_reason', sa.Text(), nullable=True),
    sa.Column('retired', sa.Boolean(), nullable=False),
    sa.Column('retired_reason', sa.Text(), nullable=True),
    sa.Column('boot_mode', sa.String(length=16), nullable=True),
    sa.Column('secure_boot', sa.Boolean(), nullable=True),
    sa.Column('console_enabled', sa.Boolean(), nullable=False),
    sa.Column('disable_power_off', sa.Boolean(), nullable=False),
    sa.Column('inspection_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('inspection_finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_nodes')),
    sa.UniqueConstraint('instance_uuid', name=op.f('uq_nodes_instance_uuid')),
    sa.UniqueConstraint('name', name=op.f('uq_nodes_name')),
    sa.UniqueConstraint('uuid', name=op.f('uq_nodes_uuid'))
    )
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nodes_conductor_affinity'), ['conductor_affinity'], unique=False)
        batch_op.create_index(batch_op.f('ix_nodes_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_nodes_provision_state'), ['provision_state'], unique=False)
        batch_op.create_index(batch_op.f('ix_nodes_reservation'), ['reservation'], unique=False)
        batch_op.create_index(batch_op.f('ix_nodes_resource_class'), ['resource_class'], unique=False)

    op.create_table('ports',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('address', sa.String(length=18), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('pxe_enabled', sa.Boolean(), nullable=False),
    sa.Column('physical_network', sa.String(length=64), nullable=True),
    sa.Column('is_smartnic', sa.Boolean(), nullable=False),
    sa.Column('local_link_connection', sa.JSON(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('internal_info', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], name=op.f('fk_ports_node_id_nodes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ports')),
    sa.UniqueConstraint('address', name=op.f('uq_ports_address')),
    sa.UniqueConstraint('uuid', name=op.f('uq_ports_uuid'))
    )
    with op.batch_alter_table('ports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ports_node_id'), ['node_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('ports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ports_node_id'))

    op.drop_table('ports')
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nodes_resource_class'))
        batch_op.drop_index(batch_op.f('ix_nodes_reservation'))
        batch_op.drop_index(batch_op.f('ix_nodes_provision_state'))
        batch_op.drop_index(batch_op.f('ix_nodes_owner'))
        batch_op.drop_index(batch_op.f('ix_nodes_conductor_affinity'))

    op.drop_table('nodes')
    op.drop_table('conductors')
