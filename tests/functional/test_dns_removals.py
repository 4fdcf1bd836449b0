"""A deleted node's DNS records are removed even when BIND is down at delete time.

Real BIND 9 (tests/functional/dns_peers.py), real ``metalcast serve``, ``dig`` to read
what BIND serves and ``metalcast dns pending`` to read the queue: the delete returns
at once, the removal waits in the database across a conductor restart, and the
periodic retry removes the A, AAAA and PTR records once BIND is back.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from conductor.db.engine import make_engine
from conductor.db.queries import Store
from conductor.dns.removals import ALARM_AFTER, ALARM_ID
from tests.functional.conftest import BIN_DIR, start_server, stop_server
from tests.functional.dns_peers import LOCKED_ZONE, Named
from tests.functional.helpers import api_call, unique
from tests.functional.test_dns import _active_node, _wait_log, _wait_records, fqdn
from tests.waiting import wait_until

V4, V6 = "10.77.6.6", "fd77::6:6"
#: DNS timeout of these servers: a delete that waited on DNS would take at least this.
DNS_TIMEOUT = 8


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    server = Named(tmp_path_factory.mktemp("named"))
    yield server
    server.stop()


def _serve(named: Named, data_dir):
    return start_server(data_dir, {
        "dns": named.settings(retry_interval=1, timeout=DNS_TIMEOUT),
        "conductor": {"sync_power_state_interval": 0}})


def _cli(data_dir, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN_DIR / "metalcast"), "dns", *args, "--data-dir",
                             str(data_dir), "--config-file", str(data_dir / "test.conf")],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    return result


def _pending(data_dir, uuid: str) -> list[dict]:
    rows = json.loads(_cli(data_dir, "pending", "--format", "json").stdout)
    return [row for row in rows if row["node_uuid"] == uuid]


def _wait_pending(data_dir, uuid: str, check, what: str, timeout: float = 60) -> list[dict]:
    seen: list = []

    def matched() -> bool:
        seen[:] = [_pending(data_dir, uuid)]
        return bool(check(seen[0]))
    wait_until(matched, timeout, 0.3, lambda: f"pending removal of {uuid} to be {what}: "
               f"{seen[0]}")
    return seen[0]


def test_removal_survives_a_dns_outage_and_a_restart(named, tmp_path):
    data_dir = tmp_path / "metalcast"
    server = _serve(named, data_dir)
    try:
        name = unique("deleted")
        uuid = _active_node(server.url, name, ip_address=V4, ipv6_address=V6)
        present = {"A": [V4], "AAAA": [V6], V4: [fqdn(name)], V6: [fqdn(name)]}
        assert named.records(fqdn(name), V4, V6) == present

        named.stop()
        api_call(server.url, "PUT", f"/v1/nodes/{uuid}/maintenance", {"reason": "gone"},
                 ok=(202,))
        started = time.monotonic()
        api_call(server.url, "DELETE", f"/v1/nodes/{uuid}", ok=(204,))
        elapsed = time.monotonic() - started
        assert elapsed < DNS_TIMEOUT - 2, f"the delete waited on DNS: {elapsed:.1f}s"
        api_call(server.url, "GET", f"/v1/nodes/{uuid}", ok=(404,))

        (row,) = _pending(data_dir, uuid)
        assert row["node_name"] == name
        assert row["records"] == [{"label": name, "fqdn": fqdn(name),
                                   "addresses": [V4, V6]}]
        (row,) = _wait_pending(data_dir, uuid, lambda rows: rows and rows[0]["attempts"],
                               "failed once")
        assert f"did not answer within {DNS_TIMEOUT}s" in row["last_error"]
        line = _wait_log(server, f"Node {uuid} (deleted): DNS removal of {fqdn(name)} -> "
                         f"{V4}, {V6} failed (attempt 1; next in 1s)")
        assert " WARNING conductor.dns.removals [" in line   # [request ID]
        stop_server(server.process)

        named.start()
        assert named.records(fqdn(name), V4, V6) == present   # nobody removed them
        assert len(_pending(data_dir, uuid)) == 1           # read with the server down

        server = _serve(named, data_dir)   # the restarted conductor finds the row
        _wait_records(named, name, {"A": [], "AAAA": [], V4: [], V6: []})
        _wait_pending(data_dir, uuid, lambda rows: rows == [], "went away")
        line = _wait_log(server, f"Node {uuid} (deleted): DNS records removed: "
                         f"{fqdn(name)} -> {V4}, {V6}")
        assert " INFO conductor.dns.removals [" in line
        assert named.secret not in server.output()
    finally:
        stop_server(server.process)
        if named.process is None:
            named.start()


def test_refused_removal_stays_listed_and_raises_an_alarm(named, tmp_path):
    """BIND refuses every update of the zone: the removal is never dropped, and after
    ALARM_AFTER attempts the node's alarm is active (GET /fm/v1/alarms)."""
    data_dir = tmp_path / "metalcast"
    server = start_server(data_dir, {
        "dns": named.settings(retry_interval=1, zone=LOCKED_ZONE),
        "conductor": {"sync_power_state_interval": 0}})
    try:
        name = unique("refused")
        uuid = _active_node(server.url, name, ip_address=V4)   # its registration failed
        api_call(server.url, "PUT", f"/v1/nodes/{uuid}/maintenance", {"reason": "gone"},
                 ok=(202,))
        api_call(server.url, "DELETE", f"/v1/nodes/{uuid}", ok=(204,))
        (alarm,) = wait_until(lambda: [
            a for a in api_call(server.url, "GET", "/fm/v1/alarms")["alarms"]
            if a["entity_instance_id"] == f"node={uuid}"], 60, 0.3,
            lambda: f"the alarm of node {uuid}; server output:\n{server.output()}")
        assert (alarm["alarm_id"], alarm["severity"]) == (ALARM_ID, "minor")
        assert f"DNS records of deleted node {uuid} not removed" in alarm["reason_text"]
        assert "(REFUSED)" in alarm["reason_text"]
        (row,) = _pending(data_dir, uuid)
        assert row["attempts"] >= ALARM_AFTER and "(REFUSED)" in row["last_error"]
        assert row["records"] == [{"label": name, "fqdn": f"{name}.{LOCKED_ZONE}.",
                                   "addresses": [V4]}]
    finally:
        stop_server(server.process)


def test_pending_cli_bad_input(named, tmp_path):
    result = _cli(tmp_path, "pending", ok=False)   # no test.conf there
    assert "config file" in result.stderr and "does not exist" in result.stderr
    (tmp_path / "test.conf").write_text("")
    result = _cli(tmp_path, "pending", ok=False)   # no database in this data dir
    assert "no database at" in result.stderr and "--data-dir" in result.stderr
    data_dir = tmp_path / "metalcast"
    server = _serve(named, data_dir)
    stop_server(server.process)
    assert json.loads(_cli(data_dir, "pending", "--format", "json").stdout) == []
    assert "attempts" in _cli(data_dir, "pending").stdout        # the table's header
    result = _cli(data_dir, "forget", "12345", ok=False)
    assert "No pending DNS removal with id 12345" in result.stderr

    engine = make_engine(f"sqlite:///{data_dir / 'metalcast.sqlite'}")
    try:   # a removal an operator has done by hand
        store = Store(engine)
        node = store.create_node({"driver": "fake-hardware", "name": "by-hand"})
        store.delete_node(node.id, dns_removal={"node_uuid": node.uuid, "records": []})
        (row,) = store.list_dns_removals()
        result = _cli(data_dir, "forget", str(row.id), "12345", ok=False)
        assert len(store.list_dns_removals()) == 1       # all or nothing
        result = _cli(data_dir, "forget", str(row.id))
        assert result.stdout == f"Forgot DNS removal {row.id} of deleted node {node.uuid}\n"
        assert store.list_dns_removals() == []
    finally:
        engine.dispose()
