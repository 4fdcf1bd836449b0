"""identity_tokens: Identity v3 tokens (their SHA-256), shared by every API process

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('identity_tokens',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('audit_id', sa.String(length=32), nullable=False),
    sa.Column('user_name', sa.String(length=255), nullable=False),
    sa.Column('project_name', sa.String(length=255), nullable=True),
    sa.Column('methods', sa.JSON(), nullable=True),
    sa.Column('credential', sa.String(length=64), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_identity_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_identity_tokens_token_hash'))
    )
    with op.batch_alter_table('identity_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_identity_tokens_expires_at'), ['expires_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('identity_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_identity_tokens_expires_at'))
    op.drop_table('identity_tokens')
