"""Conductor membership on each backend: register, heartbeat, stale detection, refusal
of a live name, concurrent registration, and concurrent migrations of a fresh database."""
from __future__ import annotations

import datetime
import threading

import pytest
import sqlalchemy as sa

from conductor import config, errors
from conductor.cluster.membership import Membership
from conductor.db import migrate
from conductor.db.conductors import ConductorRows
from conductor.db.engine import make_engine

T0 = datetime.datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=datetime.UTC)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += datetime.timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def member(store, tmp_path, clock):
    """``member(name, group="", data_dir=...)``: a Membership over the test database."""
    made = []

    def make(name, group="", data_dir=None, changed=None, **options):
        settings = config.from_options({"conductor.host": name,
                                        "conductor.conductor_group": group,
                                        **{f"conductor.{k}": v for k, v in options.items()}})
        folder = data_dir or tmp_path / f"{name}-{len(made)}"
        folder.mkdir(parents=True, exist_ok=True)
        one = Membership(ConductorRows(store.engine), settings.conductor, folder,
                         clock=clock, on_change=changed)
        made.append(one)
        return one
    yield make
    for one in made:
        one._file.release()


def names(rows, clock, timeout=60):
    return [r.hostname for r in rows.alive(clock() - datetime.timedelta(seconds=timeout))]


def test_register_heartbeat_and_stale_detection(store, member, clock):
    rows = ConductorRows(store.engine)
    one = member("c1", group="rack-1")
    one.register()
    row = rows.get("c1")
    assert (row.conductor_group, row.online) == ("rack-1", True)
    assert row.hardware_types == ["fake-hardware", "ipmi", "redfish"]
    clock.advance(59)
    assert names(rows, clock) == ["c1"]
    clock.advance(2)                       # 61 s without a heartbeat: dead
    assert names(rows, clock) == [] and not rows.get("c1").alive(one.stale_before())
    one.beat()                             # a heartbeat brings it back
    assert names(rows, clock) == ["c1"]
    assert rows.get("c1").created_at == row.created_at


def test_a_live_name_is_refused_until_its_heartbeat_is_stale(store, member, clock):
    member("shared").register()
    other = member("shared")               # another data dir: another machine
    with pytest.raises(errors.ConductorAlreadyRegistered) as caught:
        other.register()
    assert "shared" in str(caught.value) and "[DEFAULT] host" in str(caught.value)
    assert caught.value.status_code == 409
    clock.advance(60.5)
    other.register()                       # the first one stopped beating: taken over
    assert ConductorRows(store.engine).get("shared").updated_at is not None


def test_a_cleanly_stopped_name_is_free_at_once(store, member, clock):
    first = member("c1")
    first.start()
    first.stop()
    assert not ConductorRows(store.engine).get("c1").online
    assert names(ConductorRows(store.engine), clock) == []
    member("c1").register()


def test_a_killed_conductor_restarts_at_once_from_its_own_data_dir(store, member, clock,
                                                                   tmp_path):
    home = tmp_path / "home"
    first = member("c1", data_dir=home)
    first.register()
    first.beat()
    first._file.release()                  # the process died: its flock is gone
    clock.advance(1)
    member("c1", data_dir=home).register()  # its own ghost: no wait
    with pytest.raises(errors.ConductorAlreadyRegistered):
        member("c1", data_dir=tmp_path / "elsewhere").register()


def test_two_processes_of_one_data_dir_cannot_share_a_name(store, member, tmp_path):
    home = tmp_path / "home"
    member("c1", data_dir=home).register()
    with pytest.raises(errors.ConductorAlreadyRegistered):
        member("c1", data_dir=home).register()


def test_a_stale_record_elsewhere_is_not_taken_for_our_ghost(store, member, clock, tmp_path):
    home = tmp_path / "home"
    first = member("c1", data_dir=home)
    first.register()
    first._file.release()
    clock.advance(61)
    second = member("c1", data_dir=tmp_path / "b")   # took over the stale name
    second.register()
    clock.advance(1)
    with pytest.raises(errors.ConductorAlreadyRegistered):
        member("c1", data_dir=home).register()       # the old beats are not the holder's


def test_membership_changes_are_heard(store, member, clock):
    heard = []
    watcher = member("w", changed=lambda: heard.append(1))
    watcher.register()
    assert heard == [1]                    # it joined: a ring built before is stale
    assert watcher.check_members() is False
    member("c2").register()
    watcher.beat()
    assert heard == [1, 1]
    watcher.beat()
    assert heard == [1, 1]                 # no change, no call
    clock.advance(61)
    watcher.beat()                         # c2 went stale
    assert heard == [1, 1, 1]


def test_concurrent_registration_of_one_name_has_one_winner(store, member):
    racers = [member("contested") for _ in range(8)]
    results: list[str] = []
    start = threading.Barrier(len(racers))

    def race(one):
        start.wait()
        try:
            one.register()
            results.append("won")
        except errors.ConductorAlreadyRegistered:
            results.append("refused")
    threads = [threading.Thread(target=race, args=(one,)) for one in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["refused"] * 7 + ["won"]


def test_the_listing_pages_by_any_sort_key(store, member, clock):
    for name in ("b", "c", "a"):
        member(name).register()
        clock.advance(1)
    rows = ConductorRows(store.engine)
    assert [r.hostname for r in rows.page(sort_key="hostname")] == ["a", "b", "c"]
    assert [r.hostname for r in rows.page(limit=2)] == ["b", "c"]
    assert [r.hostname for r in rows.page(marker="c")] == ["a"]
    assert [r.hostname for r in rows.page(sort_key="hostname", sort_dir="desc",
                                          marker="c")] == ["b", "a"]
    with pytest.raises(errors.ConductorNotFound):
        rows.page(marker="zzz")


def test_concurrent_migrations_of_one_fresh_postgresql(request, tmp_path):
    """Eight conductors start at once on an empty PostgreSQL database: one migrates,
    the others wait on the advisory lock, find head and do nothing; none fails."""
    url = request.getfixturevalue("postgres_url")
    from tests.conftest import _admin
    fresh = sa.engine.make_url(url).set(database="metalcast_race").render_as_string(
        hide_password=False)
    _admin(url, "DROP DATABASE IF EXISTS metalcast_race", "CREATE DATABASE metalcast_race")
    engines = [make_engine(fresh) for _ in range(8)]
    failures: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def migrate_now(engine):
        start.wait()
        try:
            migrate.upgrade(engine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
    threads = [threading.Thread(target=migrate_now, args=(e,)) for e in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert {migrate.current(e) for e in engines} == {migrate.head()}
    finally:
        for engine in engines:
            engine.dispose()
        _admin(url, "DROP DATABASE metalcast_race")


def test_a_paused_conductor_does_not_beat_over_the_one_that_took_its_name(store, member,
                                                                            clock, caplog):
    rows = ConductorRows(store.engine)
    paused = member("c1")
    paused.register()
    clock.advance(61)                       # paused past the timeout: taken over
    taker = member("c1")
    taker.register()
    taken = rows.get("c1").updated_at
    clock.advance(1)
    with pytest.raises(errors.ConductorAlreadyRegistered):
        paused.beat()
    assert rows.get("c1").updated_at == taken          # the taker's beat stands
    assert "another process took this name over" in caplog.text
    taker.beat()                                       # the taker goes on beating
    assert rows.get("c1").updated_at != taken


def test_an_unregistered_row_is_registered_again_on_the_next_beat(store, member, clock):
    rows = ConductorRows(store.engine)
    one = member("c1")
    one.register()
    rows.unregister("c1", clock())          # an operator, or a clean stop of a twin
    clock.advance(1)
    one.beat()
    assert rows.get("c1").online and names(rows, clock) == ["c1"]


def test_stopping_a_refused_conductor_leaves_the_holder_alive(store, member, clock):
    holder = member("c1")
    holder.register()
    refused = member("c1")
    with pytest.raises(errors.ConductorAlreadyRegistered):
        refused.start()
    refused.stop()                          # e.g. the appliance's stop after a failed start
    assert names(ConductorRows(store.engine), clock) == ["c1"]
