"""``metalcast db upgrade``: bring the configured database to the newest schema."""
from __future__ import annotations

from types import ModuleType

from conductor.cmd import command, load_settings
from conductor.db import migrate
from conductor.db.engine import make_engine


@command
def upgrade(args, output: ModuleType) -> int:
    engine = make_engine(load_settings(args).db_url)
    try:
        migrate.upgrade(engine)
        print(f"Database at revision {migrate.current(engine)} (head {migrate.head()})")
    finally:
        engine.dispose()
    return 0
