"""Engine set-up: SQLite (WAL) by default, PostgreSQL when the URL says so.

The SQLite file holds every node's (encrypted) BMC secrets and the hashed tokens: it
is created 0600 before SQLite opens it, and SQLite gives its ``-wal``, ``-shm`` and
``-journal`` files the database file's mode. A looser existing file is tightened.
"""
from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from conductor import errors

LOG = logging.getLogger(__name__)

#: The database file and its companions: readable and writable by the owner only.
FILE_MODE = 0o600
#: What SQLite adds to the database file name for its companion files.
COMPANIONS = ("", "-wal", "-shm", "-journal")


def _sqlite_pragmas(dbapi_conn: Any, _record: object) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _json_loads(text: str | bytes) -> Any:
    # Most JSON columns of a node hold "{}" (Ironic shows empty dicts, never null);
    # skipping the parser for them saves ~10 ms on a 1000-node detail page. sqlite3
    # hands text, psycopg bytes: compared with "{}" alone, bytes never matched, and
    # on PostgreSQL every one of a page's 12,000 columns went through json.loads
    # (and its detect_encoding), ~40% of the API's CPU for the page.
    if isinstance(text, bytes):
        if text == b"{}":
            return {}
        return json.loads(text.decode())
    return {} if text == "{}" else json.loads(text)


def private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (its directory 0700 if it is new), whatever the
    umask, before SQLite does (0644); tighten an existing file and its companions."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         FILE_MODE))
        return
    except FileExistsError:
        pass
    for suffix in COMPANIONS:
        companion = Path(f"{path}{suffix}")
        try:
            mode = stat.S_IMODE(companion.stat().st_mode)
        except FileNotFoundError:
            continue
        if not mode & 0o077:
            continue
        LOG.warning("Database file %s was accessible by other users (mode %04o); "
                    "restricting it to its owner (%04o)", companion, mode, FILE_MODE)
        try:
            os.chmod(companion, FILE_MODE)
        except OSError as exc:
            LOG.warning("Cannot restrict %s: %s; chmod 600 it", companion, exc.strerror)


#: SQLite's SQLITE_FULL (primary code) and PostgreSQL's disk_full SQLSTATE.
SQLITE_FULL = 13
PG_DISK_FULL = "53100"


def _disk_full(exc: BaseException | None) -> bool:
    """Whether a DBAPI error says the disk is full (sqlite3 or psycopg)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == SQLITE_FULL:
        return True
    if PG_DISK_FULL in (getattr(exc, "sqlstate", None), getattr(exc, "pgcode", None)):
        return True
    return "database or disk is full" in str(exc)


def _on_disk_full(where: str) -> Any:
    """An engine ``handle_error`` hook: a full disk is InsufficientStorage (507)
    naming ``where`` to free space, not a generic OperationalError (500)."""
    def handle_error(context: sa.engine.ExceptionContext) -> None:
        if _disk_full(context.original_exception):
            raise errors.InsufficientStorage(path=where) from context.original_exception
    return handle_error


def make_engine(url: str) -> sa.Engine:
    """Create the engine for ``url``; a SQLite file's directory is created first."""
    compact = dict(json_serializer=lambda v: json.dumps(v, separators=(",", ":")),
                   json_deserializer=_json_loads)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:" and not path.startswith("file:"):
            private_sqlite_file(Path(path))
        engine = sa.create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=20, max_overflow=20, **compact)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        where = str(Path(path).parent) if path and path != ":memory:" else "the database"
        sa.event.listen(engine, "handle_error", _on_disk_full(where))
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    engine = sa.create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True,
                              **compact)
    sa.event.listen(engine, "handle_error",
                    _on_disk_full("the PostgreSQL server's data directory"))
    return engine
