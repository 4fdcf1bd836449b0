"""A full disk is InsufficientStorage (507, "no space left on device: free space in
<data dir>") on every query, not a generic OperationalError (500)."""
from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa

from conductor import errors
from conductor.db import engine as db_engine


def test_sqlite_full_becomes_insufficient_storage(tmp_path):
    """SQLITE_FULL, as a full disk gives it (max_page_count gives the same error)."""
    engine = db_engine.make_engine(f"sqlite:///{tmp_path / 'metalcast.sqlite'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x TEXT)"))
    with pytest.raises(errors.InsufficientStorage) as caught:
        with engine.begin() as conn:
            conn.execute(sa.text("PRAGMA max_page_count = 4"))
            for _ in range(100):
                conn.execute(sa.text("INSERT INTO t VALUES (:x)"), {"x": "a" * 4000})
    assert str(caught.value) == f"no space left on device: free space in {tmp_path}"
    assert caught.value.status_code == 507
    with engine.connect() as conn:  # the failed transaction left nothing behind
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 0
    engine.dispose()


class FakePsycopgError(Exception):
    sqlstate = "53100"


@pytest.mark.parametrize("exc, full", [
    (FakePsycopgError("could not extend file"), True),
    (sqlite3.OperationalError("database or disk is full"), True),
    (sqlite3.OperationalError("database is locked"), False),
    (ValueError("x"), False), (None, False)])
def test_disk_full_is_recognised_for_both_backends(exc, full):
    assert db_engine._disk_full(exc) is full
