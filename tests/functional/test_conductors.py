"""Several ``metalcast serve`` conductors on one PostgreSQL: the real ``baremetal
conductor list|show`` (python-ironicclient) and ``metalcast conductor list|show`` see
them; a SIGKILLed one is listed dead after the heartbeat timeout and the survivor's
ring maps every node to itself; a killed one restarts at once under its own name; a
name alive elsewhere is refused."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest
import sqlalchemy as sa

from tests.conftest import _admin
from tests.functional.conftest import BIN_DIR, start_server, stop_server
from tests.functional.helpers import api_call
from tests.functional.test_baremetal_cli import as_json, baremetal
from tests.functional.test_openstacksdk import connect
from tests.waiting import wait_until

#: Short membership times: a dead conductor shows within seconds (Ironic: 10 s / 60 s).
#: The timeout is ten heartbeats, not three: the test asserts live conductors alive for
#: a minute of CLI runs, and on a loaded 2-core machine a conductor (its heartbeat
#: thread, the file and PostgreSQL writes of a beat) can stall for more than 2 s.
MEMBERSHIP = {"heartbeat_interval": 1, "heartbeat_timeout": 10, "hash_ring_reset_interval": 1}


@pytest.fixture
def cluster_db(postgres_url):
    """A fresh PostgreSQL database of its own (the conductors table starts empty)."""
    _admin(postgres_url, "DROP DATABASE IF EXISTS metalcast_cluster",
           "CREATE DATABASE metalcast_cluster")
    yield sa.engine.make_url(postgres_url).set(database="metalcast_cluster") \
        .render_as_string(hide_password=False)
    _admin(postgres_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
           "WHERE datname = 'metalcast_cluster'", "DROP DATABASE metalcast_cluster")


def _conductor(tmp_path, db, name, folder=None):
    return start_server(tmp_path / (folder or name), {
        "database": {"connection": db}, "conductor": {"host": name, **MEMBERSHIP}})


def metalcast(server, *args):
    proc = subprocess.run([str(BIN_DIR / "metalcast"), "--url", server.url, *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _alive(server) -> dict[str, bool]:
    body = api_call(server.url, "GET", "/v1/conductors")
    return {c["hostname"]: c["alive"] for c in body["conductors"]}


def test_two_conductors_a_kill_and_the_ring(cluster_db, tmp_path):
    first = _conductor(tmp_path, cluster_db, "pg-one")
    second = _conductor(tmp_path, cluster_db, "pg-two")
    servers = [first, second]
    try:
        wait_until(lambda: _alive(first) == {"pg-one": True, "pg-two": True}, 30, 0.1,
                   "both conductors to register")
        listed = as_json(first, "conductor", "list")
        assert {(c["hostname"], c["alive"]) for c in listed} == {
            ("pg-one", True), ("pg-two", True)}
        shown = as_json(second, "conductor", "show", "pg-one")
        assert shown["alive"] is True and shown["conductor_group"] == ""
        assert shown["drivers"] == ["fake-hardware", "ipmi", "redfish"]
        long = as_json(first, "conductor", "list", "--long")
        assert {c["hostname"] for c in long} == {"pg-one", "pg-two"}
        mine = json.loads(metalcast(first, "conductor", "list", "--format", "json"))
        assert {(c["hostname"], c["alive"]) for c in mine} == {
            ("pg-one", True), ("pg-two", True)}
        one = json.loads(metalcast(first, "conductor", "show", "pg-two", "--format", "json"))
        assert one["hostname"] == "pg-two" and one["alive"] is True
        for hostile in ("../v1/nodes", "pg-one?fields=x", "a%2Fb", "pg-one/../pg-two"):
            refused = subprocess.run([str(BIN_DIR / "metalcast"), "--url", first.url,
                                      "conductor", "show", hostile],
                                     capture_output=True, text=True, timeout=60)
            assert refused.returncode != 0 and not refused.stdout and \
                "not found" in refused.stderr.replace("could not be", "not"), \
                (hostile, refused.stdout, refused.stderr)       # a 404, never a listing
        missing = baremetal(first, "conductor", "show", "nope", check=False)
        assert missing.returncode != 0 and "nope" in missing.stderr
        sdk = connect(first.url)                        # openstacksdk, unchanged
        assert {(c.hostname, c.alive) for c in sdk.baremetal.conductors(details=True)} \
            == {("pg-one", True), ("pg-two", True)}
        assert sdk.baremetal.get_conductor("pg-two").drivers == [
            "fake-hardware", "ipmi", "redfish"]
        paged = list(sdk.baremetal.conductors(limit=1))   # follows next, one per page
        assert [c.hostname for c in paged] == ["pg-one", "pg-two"]

        uuids = [api_call(first.url, "POST", "/v1/nodes", {"driver": "fake-hardware"},
                          ok=(201,))["uuid"] for _ in range(30)]
        mapped = {n["uuid"]: n["conductor"] for n in
                  api_call(second.url, "GET", "/v1/nodes?fields=uuid,conductor")["nodes"]}
        assert set(mapped) == set(uuids) and set(mapped.values()) == {"pg-one", "pg-two"}
        by_cli = as_json(first, "node", "list", "--fields", "uuid", "conductor")
        assert {n["uuid"]: n["conductor"] for n in by_cli} == mapped  # both agree

        second.process.send_signal(signal.SIGKILL)
        second.process.wait(10)
        wait_until(lambda: _alive(first) == {"pg-one": True, "pg-two": False}, 90, 0.2,
                   "pg-two to be listed dead after its heartbeat timeout")
        wait_until(lambda: {n["conductor"] for n in api_call(
            first.url, "GET", "/v1/nodes?fields=conductor")["nodes"]} == {"pg-one"},
            60, 0.2, "the survivor's ring to map every node to itself")
        dead = as_json(first, "conductor", "show", "pg-two")
        assert dead["alive"] is False

        # A conductor killed and started again from its own data dir: no wait.
        second = _conductor(tmp_path, cluster_db, "pg-two")
        servers.append(second)
        # (serve prints its ready line before the conductor registers: wait for it)
        wait_until(lambda: _alive(first) == {"pg-one": True, "pg-two": True}, 30, 0.1,
                   lambda: f"the restarted pg-two to register:\n{second.output()}")
        assert "already registered" not in second.output()

        # The name of a live conductor, from another data dir: refused, and why.
        twin = subprocess.run(
            [str(BIN_DIR / "metalcast"), "serve", "--port", "0", "--data-dir",
             str(tmp_path / "twin"), "--config-file", str(first.data_dir / "test.conf")],
            capture_output=True, text=True, timeout=60)
        assert twin.returncode == 1
        assert "pg-one is already registered and alive" in twin.stderr
        assert "listening" not in twin.stdout          # refused before it reports ready
        assert _alive(first) == {"pg-one": True, "pg-two": True}
    finally:
        for server in servers:
            stop_server(server.process)
    with sa.create_engine(cluster_db).connect() as conn:   # a clean stop: offline rows
        assert not conn.execute(sa.text("SELECT count(*) FROM conductors WHERE online"))\
            .scalar()
