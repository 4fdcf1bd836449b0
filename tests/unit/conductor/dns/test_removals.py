"""DNS removals of deleted nodes (conductor/dns/removals.py): queue, backoff, bad rows,
alarms, the claim between conductors. The DNS server is the recording twin of
tests/unit/conductor/dns/test_registration.py; tests/functional/test_dns_removals.py runs a
real BIND; tests/integration/conductor/dns/test_removals.py deletes through the service."""
from __future__ import annotations

import datetime
import logging

import pytest

from conductor.alarms import AlarmTable
from conductor.config import Settings
from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.queries import Store, utcnow
from conductor.dns import registration as reg
from conductor.dns import removals as rem
from conductor.drivers.context import DriverContext
from conductor.drivers.registry import DriverRegistry
from tests.unit.conductor.dns.test_registration import RecordingDns, _opener, _settings

INTERVAL = 10.0


@pytest.fixture
def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate.upgrade(engine)
    yield Store(engine)
    engine.dispose()


def _retry(store, client, alarms=None):
    settings = _settings({"conductor.host": "test-host", "dns.retry_interval": INTERVAL})
    # The twin stands in for the RFC 2136 adapter.
    drivers = DriverRegistry(DriverContext.create(settings, dns=client))
    return reg.DnsRetry.for_settings(store, settings, client, _opener(store, drivers),
                                      alarms)


def _records(name, *addresses):
    return {"label": name, "fqdn": f"{name}.lab.test.", "addresses": list(addresses)}


def _deleted(store, name, *addresses, records=..., attempts=0):
    """A node with DNS records, deleted as the service deletes it; the row's id."""
    info = {reg.RECORDS_KEY: _records(name, *addresses)}
    node = store.create_node({"driver": "fake-hardware", "name": name,
                              "driver_internal_info": info})
    values = reg.on_delete(node, DriverContext.create(Settings()))
    if records is not ...:   # a row as a bug or a hand edit may have left it
        values["records"] = records
    store.delete_node(node.id, dns_removal=dict(values, attempts=attempts))
    return node.uuid, store.list_dns_removals()[-1].id


def _row(store, uuid):
    rows = [row for row in store.list_dns_removals() if row.node_uuid == uuid]
    return rows[0] if rows else None


def _make_due(store):
    for row in store.list_dns_removals():
        store.update_dns_removal(row.id, {"next_attempt_at": utcnow()})


def _seconds_until(row) -> float:
    stamp = row.next_attempt_at
    if stamp.tzinfo is None:  # SQLite keeps no zone; the store writes UTC
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return (stamp - utcnow()).total_seconds()


@pytest.mark.parametrize("attempts, interval, expected", [
    (0, 60, 60), (1, 60, 60), (2, 60, 120), (3, 60, 240), (7, 60, 3600), (10**6, 60, 3600),
    (5, 1, 16), (3, 7200, 7200),   # an interval above the cap is never shortened
])
def test_backoff_doubles_up_to_the_cap(attempts, interval, expected):
    assert rem.backoff(attempts, interval) == expected


def test_delete_queues_the_removal_with_the_node_row(store):
    uuid, _ = _deleted(store, "web", "10.0.0.1", "fd00::1")
    row = _row(store, uuid)
    assert (row.node_name, row.attempts, row.last_error) == ("web", 0, None)
    assert row.records == [_records("web", "10.0.0.1", "fd00::1")]
    assert store.list_nodes({"uuid": uuid}) == []
    bare = store.create_node({"driver": "fake-hardware", "name": "bare",
                              "driver_internal_info": {}})
    assert reg.on_delete(bare, DriverContext.create(Settings())) is None   # nothing in DNS


def test_removal_deletes_the_row_and_uses_the_stored_fqdn(store, caplog):
    caplog.set_level(logging.INFO, logger="conductor.dns.removals")
    client = RecordingDns()
    uuid, _ = _deleted(store, "web", "10.0.0.1")
    assert _retry(store, client).sweep() == {uuid: True}
    assert client.calls == [("unregister", "web.lab.test.", ("10.0.0.1",))]
    assert store.list_dns_removals() == []
    assert f"Node {uuid} (deleted): DNS records removed: web.lab.test. -> 10.0.0.1" \
        in caplog.text


def test_failures_back_off_and_keep_the_row(store, caplog):
    client, retry = RecordingDns(), None
    client.failing = "DNS server 127.0.0.1:53 did not answer within 5s"
    uuid, _ = _deleted(store, "web", "10.0.0.1")
    retry = _retry(store, client)
    assert retry.sweep() == {uuid: False}
    row = _row(store, uuid)
    assert row.attempts == 1 and "did not answer within 5s" in row.last_error
    assert INTERVAL - 5 < _seconds_until(row) <= INTERVAL
    assert retry.sweep() == {}           # not due yet: no attempt, no change
    assert _row(store, uuid).attempts == 1
    _make_due(store)
    retry.sweep()
    assert 2 * INTERVAL - 5 < _seconds_until(_row(store, uuid)) <= 2 * INTERVAL
    assert f"Node {uuid} (deleted): DNS removal of web.lab.test. -> 10.0.0.1 failed " \
           f"(attempt 2; next in {2 * INTERVAL:g}s)" in caplog.text
    client.failing = None
    _make_due(store)
    assert retry.sweep() == {uuid: True}
    assert store.list_dns_removals() == []


def test_server_failure_ends_the_pass_fewest_attempts_first(store):
    client = RecordingDns()
    client.failing = "timeout"
    stubborn, _ = _deleted(store, "stubborn", "10.0.0.1", attempts=9)
    fresh, _ = _deleted(store, "fresh", "10.0.0.2", attempts=1)
    assert _retry(store, client).sweep() == {fresh: False}
    assert _row(store, fresh).attempts == 2
    assert _row(store, stubborn).attempts == 9


OK_CALL = ("unregister", "ok.lab.test.", ("10.0.0.7",))


@pytest.mark.parametrize("records, kept, usable", [
    (None, [None], []),
    ("not a list", ["not a list"], []),
    ([{"fqdn": "x.lab.test.", "addresses": ["10.0.0.1"]}],      # no label
     [{"fqdn": "x.lab.test.", "addresses": ["10.0.0.1"]}], []),
    ([_records("ok", "10.0.0.7"), _records("bad", "10.0.0.8", "300.1.1.1")],
     [_records("bad", "10.0.0.8", "300.1.1.1")], [OK_CALL]),  # the good part goes
    ([{"label": "rel", "fqdn": "rel", "addresses": ["10.0.0.9"]}],  # not absolute
     [{"label": "rel", "fqdn": "rel", "addresses": ["10.0.0.9"]}], []),
])
def test_bad_rows_stay_listed_and_do_not_stop_the_pass(store, records, kept, usable):
    client = RecordingDns()
    bad, _ = _deleted(store, "bad", "10.0.0.8", records=records)
    good, _ = _deleted(store, "good", "10.0.0.5", attempts=5)   # after the bad row
    done = _retry(store, client).sweep()
    assert done == {bad: False, good: True}
    row = _row(store, bad)
    assert row.records == kept and row.attempts == 1
    assert "not DNS records" in row.last_error and "by hand" in row.last_error
    assert client.calls == usable + [("unregister", "good.lab.test.", ("10.0.0.5",))]


def test_alarm_raised_after_repeated_failures_and_cleared_on_success(store):
    client, alarms = RecordingDns(), AlarmTable()
    client.failing = "REFUSED"
    uuid, _ = _deleted(store, "web", "10.0.0.1")
    retry = _retry(store, client, alarms)
    for attempt in range(1, rem.ALARM_AFTER + 2):
        retry.sweep()
        _make_due(store)
        active = alarms.list()
        assert bool(active) == (attempt >= rem.ALARM_AFTER), attempt
    (alarm,) = alarms.list()
    assert (alarm.alarm_id, alarm.entity_instance_id) == (rem.ALARM_ID, f"node={uuid}")
    assert f"not removed after {rem.ALARM_AFTER + 1} attempts" in alarm.reason_text
    assert "REFUSED" in alarm.reason_text
    client.failing = None
    retry.sweep()
    assert alarms.list() == [] and store.list_dns_removals() == []


def test_records_a_live_node_registered_since_are_left_alone(store):
    client = RecordingDns()
    uuid, _ = _deleted(store, "web", "10.0.0.1", "10.0.0.2")
    store.create_node({"driver": "fake-hardware", "name": "web",   # same name again
                       "driver_internal_info": {reg.RECORDS_KEY: _records("web", "10.0.0.2")}})
    assert _retry(store, client).sweep() == {uuid: True}
    assert client.calls == [("unregister", "web.lab.test.", ("10.0.0.1",))]


def test_only_one_claim_wins(store):
    _, row_id = _deleted(store, "web", "10.0.0.1")
    now = utcnow()
    later = now + datetime.timedelta(seconds=60)
    assert store.claim_dns_removal(row_id, now, later) is True
    assert store.claim_dns_removal(row_id, now, later) is False
    assert store.claim_dns_removal(row_id + 100, now, later) is False


