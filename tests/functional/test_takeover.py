"""Three ``metalcast serve`` conductors on one PostgreSQL: a deploy requested through
one of them runs on each node's conductor by the hash ring (handed over through the
database); one conductor is frozen with work handed to it, then SIGKILLed mid-deploy:
the survivors release its locks, fail its nodes naming it, and a redeploy of those
succeeds on them; a node of a conductor group no conductor serves is a clear 400."""
from __future__ import annotations

import signal

import pytest
import requests

from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import HEADERS, WAIT, api_call, provision
from tests.functional.test_conductors import cluster_db  # noqa: F401 - a fixture
from tests.waiting import wait_until

NAMES = ("pg-c1", "pg-c2", "pg-c3")
#: Heartbeat every second, dead after 10 s: long enough to hand work to a frozen
#: conductor before the others see it dead, short enough for a quick takeover.
MEMBERSHIP = {"heartbeat_interval": 1, "heartbeat_timeout": 10,
              "hash_ring_reset_interval": 1, "check_provision_state_interval": 1}
COUNT = 45


def _alive(server) -> dict[str, bool]:
    body = api_call(server.url, "GET", "/v1/conductors")
    return {c["hostname"]: c["alive"] for c in body["conductors"]}


def _nodes(server) -> dict[str, dict]:
    body = api_call(server.url, "GET", "/v1/nodes?detail=true&limit=1000")
    return {n["uuid"]: n for n in body["nodes"]}


@pytest.fixture
def conductors(cluster_db, tmp_path):  # noqa: F811 - the fixture imported above
    made = {name: start_server(tmp_path / name, {
        "database": {"connection": cluster_db}, "conductor": {"host": name, **MEMBERSHIP}})
        for name in NAMES}
    yield made
    for server in made.values():
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
            stop_server(server.process)


def test_a_conductor_killed_mid_deploy_is_taken_over(conductors):
    c1, c2, c3 = (conductors[name] for name in NAMES)
    wait_until(lambda: _alive(c1) == dict.fromkeys(NAMES, True), 60, 0.2,
               "the three conductors to register")
    uuids = [api_call(c1.url, "POST", "/v1/nodes", {"driver": "fake-hardware"},
                      ok=(201,))["uuid"] for _ in range(COUNT + 1)]
    for uuid in uuids:                     # verify and clean, each on its own conductor
        provision(c2.url, uuid, "manage", "manageable")
        provision(c2.url, uuid, "provide", "available")
    spare = uuids.pop()
    owners = {u: n["conductor"] for u, n in _nodes(c1).items() if u in uuids}
    assert set(owners.values()) == set(NAMES)
    on_c3 = {u for u, owner in owners.items() if owner == "pg-c3"}

    c3.process.send_signal(signal.SIGSTOP)          # alive by its row, doing nothing
    for uuid in uuids:
        api_call(c1.url, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "active"},
                 ok=(202,))
    rows = _nodes(c1)
    for uuid in on_c3:                             # handed to pg-c3, never started
        assert (rows[uuid]["provision_state"], rows[uuid]["reservation"]) == \
            ("deploying", "pg-c3"), rows[uuid]
    c3.process.send_signal(signal.SIGKILL)
    c3.process.wait(10)

    def settled():
        nodes = _nodes(c1)
        return nodes if all(nodes[u]["reservation"] is None and nodes[u]["provision_state"]
                            in ("active", "deploy failed") for u in uuids) else None
    final = wait_until(settled, WAIT, 0.5, "every node stable with no lock after the kill")
    failed = {u for u in uuids if final[u]["provision_state"] == "deploy failed"}
    assert failed == on_c3
    for uuid in failed:
        assert "Conductor pg-c3 died" in final[uuid]["last_error"], final[uuid]
    assert {final[u]["conductor"] for u in uuids} <= {"pg-c1", "pg-c2"}

    for uuid in failed:                            # redeployed on the survivors
        node = provision(c2.url, uuid, "active", "active")
        assert node["conductor"] in ("pg-c1", "pg-c2") and not node["last_error"]

    # A conductor group no live conductor serves: a clear 400, nothing changes.
    api_call(c1.url, "PATCH", f"/v1/nodes/{spare}", [
        {"op": "replace", "path": "/conductor_group", "value": "rack9"}])
    refused = requests.put(f"{c1.url}/v1/nodes/{spare}/states/provision", headers=HEADERS,
                           json={"target": "active"}, timeout=30)
    assert refused.status_code == 400, refused.text
    assert "rack9" in refused.text and "conductor" in refused.text
    assert api_call(c1.url, "GET", f"/v1/nodes/{spare}")["provision_state"] == "available"
