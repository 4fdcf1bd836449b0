"""node_history: Ironic's per-node event history (provision state changes, errors)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 14:35:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('node_history',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('conductor', sa.String(length=255), nullable=True),
    sa.Column('event_type', sa.String(length=255), nullable=True),
    sa.Column('severity', sa.String(length=255), nullable=True),
    sa.Column('event', sa.Text(), nullable=True),
    sa.Column('user', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'],
                            name=op.f('fk_node_history_node_id_nodes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node_history')),
    sa.UniqueConstraint('uuid', name=op.f('uq_node_history_uuid'))
    )
    with op.batch_alter_table('node_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_node_history_node_id'), ['node_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('node_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_node_history_node_id'))
    op.drop_table('node_history')
