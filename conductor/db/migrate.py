"""Schema migrations through Alembic, run from code (``metalcast db upgrade``).

Several conductors may start at the same moment on one fresh PostgreSQL database:
each upgrade runs in one transaction that first takes a transaction-level advisory
lock (``pg_advisory_xact_lock``), so the others wait, then find the schema at head
and do nothing. PostgreSQL's DDL is transactional: a failed upgrade leaves nothing.
SQLite serialises writers itself (and is one process's database).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).with_name("migrations")
#: The advisory lock key of migrations: the first 8 bytes of sha256("metalcast-migrate")
#: as a signed 64-bit integer (any other user of advisory locks picks its own).
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"metalcast-migrate").digest()[:8], "big", signed=True)


def _config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":   # released when this transaction ends
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                         {"key": MIGRATION_LOCK_KEY})
        command.upgrade(_config(conn), revision)


def current(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str:
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None, "no migration in conductor/db/migrations"
    return revision
