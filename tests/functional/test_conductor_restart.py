"""A conductor killed mid-deploy: on restart no node stays locked or stuck."""
import signal

from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import api_call as _call
from tests.functional.helpers import provision

CONDUCTOR = {"conductor": {"host": "restart-conductor"}}


def test_killed_conductor_releases_lock_and_fails_deploy_on_restart(tmp_path):
    data_dir = tmp_path / "data"
    server = start_server(data_dir, CONDUCTOR)
    try:
        node = _call(server.url, "POST", "/v1/nodes", {"driver": "fake-hardware",
                                                      "name": "crashy"}, ok=(201,))
        uuid = node["uuid"]
        for target, state in (("manage", "manageable"), ("provide", "available")):
            provision(server.url, uuid, target, state)
        _call(server.url, "PATCH", f"/v1/nodes/{uuid}",
              [{"op": "add", "path": "/driver_info/fake_delay", "value": 60}])
        _call(server.url, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "active"},
              ok=(202,))
        locked = _call(server.url, "GET", f"/v1/nodes/{uuid}")
        assert locked["provision_state"] == "deploying"
        assert locked["reservation"] == "restart-conductor"
        server.process.send_signal(signal.SIGKILL)      # the worker dies with it
        server.process.wait(10)
    finally:
        stop_server(server.process)

    server = start_server(data_dir, CONDUCTOR)
    try:
        node = _call(server.url, "GET", f"/v1/nodes/{uuid}")
        assert node["provision_state"] == "deploy failed"
        assert node["reservation"] is None
        assert "restarted" in node["last_error"] and "deploying" in node["last_error"]
        _call(server.url, "PATCH", f"/v1/nodes/{uuid}",
              [{"op": "replace", "path": "/driver_info/fake_delay", "value": 0}])
        assert provision(server.url, uuid, "active", "active")["last_error"] is None
    finally:
        stop_server(server.process)
