"""nodes: one index over (provision_state, power_state, maintenance, fault)

The fleet's counts (/metrics' metalcast_nodes, the console's fleet page) group by
these four columns; with the index they are read from it alone (a covering index
scan) instead of every node row: ~1.5 ms instead of ~10 ms at 10,000 nodes on SQLite.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 15:00:00.000000
"""
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.create_index('ix_nodes_states',
                              ['provision_state', 'power_state', 'maintenance', 'fault'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_index('ix_nodes_states')
