"""Migrations bring an empty database to head, and running them again changes nothing."""
from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.schema import metadata


def test_upgrade_reaches_head_and_is_idempotent(db_url):
    engine = make_engine(db_url)
    try:
        assert migrate.current(engine) == migrate.head()
        migrate.upgrade(engine)
        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.head()
        tables = set(sa.inspect(engine).get_table_names())
        assert {"nodes", "ports", "conductors", "alembic_version"} <= tables
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_table_definitions(db_url):
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == []
