"""``metalcast serve`` on PostgreSQL: migrations at start, the full flow, and
two conductors sharing the database without stealing each other's locks (the node's
work runs on the conductor the hash ring names, whichever process took the request)."""

import requests

from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import api_call as _call
from tests.functional.helpers import provision as _drive
from tests.waiting import wait_until

HEADERS = {"X-OpenStack-Ironic-API-Version": "latest"}


def test_two_conductors_on_one_postgresql(postgres_url, tmp_path):
    database = {"connection": postgres_url}
    first = start_server(tmp_path / "a", {"database": database, "conductor": {"host": "pg-a"}})
    second = start_server(tmp_path / "b", {"database": database, "conductor": {"host": "pg-b"}})
    try:
        node = _call(first.url, "POST", "/v1/nodes",
                     {"driver": "fake-hardware", "name": "on-postgres"}, ok=(201,))
        _call(first.url, "POST", "/v1/ports",
              {"address": "52:54:00:77:00:01", "node_uuid": node["uuid"]}, ok=(201,))
        _drive(first.url, node["uuid"], "manage", "manageable")
        _drive(second.url, node["uuid"], "provide", "available")   # either API serves any node
        _call(first.url, "PATCH", f"/v1/nodes/{node['uuid']}",
              [{"op": "add", "path": "/driver_info/fake_delay", "value": 1}])
        _call(first.url, "PUT", f"/v1/nodes/{node['uuid']}/states/provision",
              {"target": "active"}, ok=(202,))
        # The hash ring names the node's conductor (either one); the deploy runs there,
        # under a lock row in its name, whichever API process took the request.
        owner = _call(second.url, "GET", f"/v1/nodes/{node['uuid']}")["conductor"]
        assert owner in ("pg-a", "pg-b")
        busy = requests.put(f"{second.url}/v1/nodes/{node['uuid']}/states/power",
                            json={"target": "power off"}, headers=HEADERS, timeout=10)
        assert busy.status_code == 409 and owner in busy.text      # the lock is a row
        wait_until(lambda: _call(second.url, "GET", f"/v1/nodes/{node['uuid']}")[
            "provision_state"] == "active", 20, 0.1, "the deploy to end, seen by pg-b")
        drivers = _call(second.url, "GET", "/v1/drivers")["drivers"]
        assert drivers[0]["hosts"] == ["pg-a", "pg-b"]
        _drive(second.url, node["uuid"], "deleted", "available")
        _call(second.url, "DELETE", f"/v1/nodes/{node['uuid']}", ok=(204,))
    finally:
        stop_server(first.process)
        stop_server(second.process)
