"""The image-update tables on both databases: catalogue rows, instances and their
capped history, grants counted per period, and the reboot lease semaphore (two racing
acquirers on two engines never exceed the maximum)."""
from __future__ import annotations

import datetime
import threading

import pytest
import sqlalchemy as sa

from conductor.db import updates as update_db
from conductor.db.leases import LeaseRows
from conductor.db.queries import utcnow
from conductor.db.schema import update_lease_groups
from conductor.db.update_events import EventRows, StatusChange
from conductor.db.updates import UpdateRows
from conductor.db.write_turns import WriteTurns

APP = "{7d6a52c5-3e0b-4a5c-9a8e-6d6574616c63}"


@pytest.fixture
def rows(engines):
    return UpdateRows(engines())


def _image(rows, version, channel="stable"):
    assert rows.add_image(dict(appid=APP, version=version, channel=channel,
                               sha256=version.replace(".", "")[:1] * 64, size=10,
                               signature="c2ln"))


def test_delete_is_refused_while_a_channel_points_at_the_image(rows):
    _image(rows, "1.0.0")
    assert not rows.add_image(dict(appid=APP, version="1.0.0", sha256="a" * 64, size=1,
                                   signature="x"))     # one row per appid+version
    rows.ensure_channel(APP, "stable")
    rows.ensure_channel(APP, "stable")                 # idempotent, group made once
    assert [g["name"] for g in rows.groups()] == ["stable"]
    rows.set_channel(APP, "stable", "1.0.0")
    assert rows.delete_image(APP, "1.0.0") == (False, ["stable"])
    assert rows.image(APP, "1.0.0") is not None
    rows.set_channel(APP, "stable", None)
    assert rows.delete_image(APP, "1.0.0") == (True, [])
    assert rows.image(APP, "1.0.0") is None


def test_instance_history_is_capped(rows, monkeypatch):
    monkeypatch.setattr(update_db, "HISTORY", 5)
    instance = rows.add_instance(dict(machineid="m1", appid=APP, group_name="stable",
                                      version="1.0.0", status="new"))
    assert rows.add_instance(dict(machineid="m1", appid=APP, group_name="stable",
                                  version="1.0.0", status="new")).id == instance.id
    reports = EventRows(rows.engine, WriteTurns().normal)
    for n in range(12):
        reports.record([StatusChange(instance.id, "downloading", f"1.0.{n}")])
    history = rows.history(instance.id)
    assert [h["version"] for h in history] == [f"1.0.{n}" for n in range(7, 12)]


def test_a_grant_is_not_given_twice_while_the_update_runs(rows):
    instance = rows.add_instance(dict(machineid="m1", appid=APP, group_name="stable",
                                      version="1.0.0", status="new"))
    now = utcnow()
    assert rows.grant(instance, "2.0.0", 3600, now)
    EventRows(rows.engine, WriteTurns().normal).record(
        [StatusChange(instance.id, "downloading", "2.0.0")])
    assert not rows.grant(instance, "2.0.0", 3600, now)
    later = now + datetime.timedelta(seconds=3601)      # timed out: granted again
    assert rows.grant(instance, "2.0.0", 3600, later)


def test_grants_per_period_stop_at_the_maximum(rows):
    rows.ensure_channel(APP, "stable")
    group = rows.groups()[0]
    now = utcnow()
    assert [rows.take_grant(group["id"], 2, 60, now) for _ in range(3)] == \
        [True, True, False]
    assert rows.take_grant(group["id"], 2, 60, now + datetime.timedelta(seconds=61))


def test_lease_acquire_renew_release_and_expiry(engines):
    leases = LeaseRows(engines())
    a = leases.acquire("default", "node-a", 300)
    assert (a.held, a.holders, a.max) == (True, 1, 1)
    full = leases.acquire("default", "node-b", 300)
    assert (full.held, full.holders) == (False, 1) and full.retry_after > 0
    assert leases.acquire("default", "node-a", 300).held          # a renew
    assert not leases.acquire("default", "node-b", 300, renew_only=True).held
    assert leases.release("default", "node-a").holders == 0
    assert leases.acquire("default", "node-b", -1).held           # expires at once
    assert leases.acquire("default", "node-c", 300).held          # b's lease is gone
    assert [h.holder for h in leases.status()[0][2]] == ["node-c"]


def test_a_poll_of_a_full_group_is_refused_by_one_read(engines):
    """What most polls of a waiting fleet meet: refused without a write, with the
    group's max, its live holders and the seconds until the first lease runs out;
    a holder's own poll, and one after a lease ran out, go on to the write."""
    engine = engines()
    leases = LeaseRows(engine)
    leases.set_max("g", 2)
    assert leases.acquire("g", "a", 100).held and leases.acquire("g", "b", 300).held
    generation = sa.select(update_lease_groups.c.generation).where(
        update_lease_groups.c.name == "g")      # + 1 in each lease write transaction
    with engine.connect() as conn:
        before = conn.execute(generation).scalar_one()
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cur, sql, *args: statements.append(sql))
    refused = leases.acquire("g", "c", 300)
    assert len(statements) == 1 and statements[0].lstrip().startswith("SELECT")
    assert (refused.held, refused.max, refused.holders) == (False, 2, 2)
    assert 90 < refused.retry_after <= 100       # a's lease runs out first
    assert leases.acquire("g", "a", 100).held    # a holder renews
    assert leases.acquire("g", "b", -1).held     # b's lease runs out at once ...
    assert leases.acquire("g", "c", 300).held    # ... so c gets its slot
    with engine.connect() as conn:
        assert conn.execute(generation).scalar_one() == before + 3


@pytest.mark.parametrize("maximum", [1, 3])
def test_racing_acquirers_on_two_engines_never_exceed_max(engines, maximum):
    one, two = LeaseRows(engines()), LeaseRows(engines())
    one.set_max("race", maximum)
    held, lock = [], threading.Lock()

    def contend(rows, n):
        for i in range(8):
            outcome = rows.acquire("race", f"node-{n}-{i}", 300)
            with lock:
                held.append(outcome)
    threads = [threading.Thread(target=contend, args=(rows, n))
               for n, rows in enumerate([one, two, one, two])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in held if o.held]
    assert len(winners) == maximum
    assert all(o.holders <= maximum for o in held)
    assert len(one.status()[0][2]) == maximum


def test_check_in_reads_and_writes_only_a_changed_version_and_touch_batches(rows):
    instance = rows.add_instance(dict(machineid="m1", appid=APP, group_name="stable",
                                      version="1.0.0", status="new"))
    assert rows.check_in("nobody", APP, "1.0.0", "stable") is None
    assert rows.check_in("m1", APP, "1.0.0", "stable").version == "1.0.0"
    assert rows.check_in("m1", APP, "2.0.0", "beta").version == "1.0.0"   # as it was
    now = rows.instance("m1", APP)
    assert (now.version, now.group_name) == ("2.0.0", "beta")
    other = rows.add_instance(dict(machineid="m2", appid=APP, group_name="stable",
                                   version="1.0.0", status="new"))
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    rows.touch({instance.id: when, other.id: when})
    for machineid in ("m1", "m2"):
        seen = rows.instance(machineid, APP).last_check_at
        assert seen.replace(tzinfo=datetime.UTC) == when
