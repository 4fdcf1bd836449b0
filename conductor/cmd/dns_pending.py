"""``metalcast dns pending|forget``: DNS removals of deleted nodes still queued.

They are read from the database directly, as ``metalcast db upgrade`` does: the list
matters most when something is down, and this works whether the server runs or not.
``forget`` is for a removal an operator has done by hand (or given up on): it drops
the row, and the alarm clears at the next sweep.
"""
from __future__ import annotations

import datetime
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa

from conductor import config as config_mod
from conductor import errors
from conductor.cmd import command
from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.queries import Store

COLUMNS = ["id", "node_uuid", "node_name", "records", "attempts", "last_error",
           "next_attempt_at", "created_at"]


def _store(args):
    """The Store of the configured database; ConfigError when there is none at head."""
    settings = config_mod.load(args.config_file, {"data_dir": args.data_dir})
    url = settings.db_url
    shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    path = sa.engine.make_url(url).database if url.startswith("sqlite") else None
    if path and not Path(path).is_file():
        raise errors.ConfigError(reason=f"no database at {path} (check --data-dir or "
                                        "--config-file)")
    engine = make_engine(url)
    current, head = migrate.current(engine), migrate.head()
    if current != head:
        engine.dispose()
        raise errors.ConfigError(reason=f"the database {shown} is at revision {current}, "
                                        f"not {head}: run `metalcast db upgrade`")
    return Store(engine)


def _row(removal) -> dict:
    values = {column: getattr(removal, column) for column in COLUMNS}
    for key in ("next_attempt_at", "created_at"):
        stamp = values[key]
        if stamp is not None and stamp.tzinfo is None:  # SQLite drops the zone: UTC
            stamp = stamp.replace(tzinfo=datetime.UTC)
        values[key] = stamp.isoformat(timespec="seconds") if stamp is not None else None
    return values


@command
def cmd_dns_pending(args, output: ModuleType) -> int:
    store = _store(args)
    try:
        rows = [_row(removal) for removal in store.list_dns_removals()]
    finally:
        store.engine.dispose()
    output.FORMATTERS[args.format](rows, COLUMNS)
    return 0


@command
def cmd_dns_forget(args, output: ModuleType) -> int:
    store = _store(args)
    try:
        known = {removal.id: removal for removal in store.list_dns_removals()}
        missing = [ident for ident in args.ids if ident not in known]
        if missing:
            raise errors.NotFound(f"No pending DNS removal with id "
                                  f"{', '.join(map(str, missing))} (see `metalcast dns "
                                  "pending`); nothing was forgotten.")
        for ident in args.ids:
            store.delete_dns_removal(ident)
            print(f"Forgot DNS removal {ident} of deleted node {known[ident].node_uuid}")
    finally:
        store.engine.dispose()
    return 0
