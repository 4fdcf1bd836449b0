"""The update check's read on the DBAPI cursor (conductor/db/raw_select.py) gives what
SQLAlchemy's own execution gives, on SQLite and on a real PostgreSQL: the same values
(timestamps included), None for no row, and SQLAlchemy's error classes."""
from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

from conductor.db.engine import make_engine
from conductor.db.raw_select import RawSelect
from conductor.db.schema import update_instances as instances
from conductor.db.updates import _INSTANCE, UpdateRows

APPID = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"
WHEN = datetime.datetime(2026, 12, 7, 17, 50, 43, 123456, tzinfo=datetime.UTC)


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        for row in (dict(machineid="a" * 32, group_name="stable", version="1.0.0",
                         status="complete", last_check_at=WHEN),
                    dict(machineid="b" * 32, group_name="beta", version="2.0.0",
                         node_uuid="5e2b0000-0000-4000-8000-000000000001", status="error",
                         target_version="2.1.0", error_code=(1 << 32) - 4,
                         error_text="rollback", granted_at=WHEN, updated_at=WHEN)):
            conn.execute(instances.insert().values(appid=APPID, created_at=WHEN, **row))
    yield engine
    engine.dispose()


def _through_sqlalchemy(engine, machineid: str) -> dict | None:
    with engine.connect() as conn:
        row = conn.execute(_INSTANCE, {"b_machineid": machineid, "b_appid": APPID}).first()
    return None if row is None else dict(row._mapping)


def test_same_rows_as_sqlalchemy(engine):
    read = RawSelect(engine, _INSTANCE)
    for machineid in ("a" * 32, "b" * 32):
        row = read.first(b_machineid=machineid, b_appid=APPID)
        assert row == _through_sqlalchemy(engine, machineid)
        assert row["machineid"] == machineid and isinstance(row["created_at"],
                                                            datetime.datetime)
    assert read.first(b_machineid="b" * 32, b_appid=APPID)["error_code"] == (1 << 32) - 4
    assert read.first(b_machineid="c" * 32, b_appid=APPID) is None
    assert read.first(b_machineid="a" * 32, b_appid="{other}") is None


def test_check_in_reads_and_moves_the_instance(engine):
    rows = UpdateRows(engine)
    assert rows.check_in("a" * 32, APPID, "1.0.0", "stable") == rows.instance("a" * 32, APPID)
    assert rows.check_in("c" * 32, APPID, "1.0.0", "stable") is None
    before = rows.check_in("a" * 32, APPID, "1.1.0", "beta")   # the row as it was
    assert (before.version, before.group_name) == ("1.0.0", "stable")
    after = rows.instance("a" * 32, APPID)
    assert (after.version, after.group_name) == ("1.1.0", "beta")


def test_driver_errors_become_sqlalchemy_errors(engine):
    read = RawSelect(engine, _INSTANCE)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE update_instance_events"))
        conn.execute(sa.text("DROP TABLE update_instances"))
    with pytest.raises(sa.exc.DBAPIError) as caught:
        read.first(b_machineid="a" * 32, b_appid=APPID)
    assert "update_instances" in str(caught.value)


def test_parameters_that_need_conversion_are_refused(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    try:   # SQLite stores a datetime as text: its bind processor would be skipped
        with pytest.raises(ValueError, match="b_when"):
            RawSelect(engine, sa.select(instances).where(
                instances.c.granted_at == sa.bindparam("b_when", type_=sa.DateTime)))
    finally:
        engine.dispose()
