"""A conductor killed mid-deploy: on restart no node stays locked or stuck."""
import signal
import time

import requests

from tests.functional.conftest import start_server, stop_server

HEADERS = {"X-OpenStack-Ironic-API-Version": "latest"}
CONDUCTOR = {"conductor": {"host": "restart-conductor"}}


def _call(url, method, path, body=None, ok=(200,)):
    response = requests.request(method, url + path, json=body, headers=HEADERS, timeout=10)
    assert response.status_code in ok, response.text
    return response.json() if response.content else None


def _wait(url, uuid, state, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = _call(url, "GET", f"/v1/nodes/{uuid}")
        if node["provision_state"] == state:
            return node
        time.sleep(0.1)
    raise AssertionError(f"{uuid} is {node['provision_state']}, not {state}")


def test_killed_conductor_releases_lock_and_fails_deploy_on_restart(tmp_path):
    data_dir = tmp_path / "data"
    server = start_server(data_dir, CONDUCTOR)
    try:
        node = _call(server.url, "POST", "/v1/nodes", {"driver": "fake-hardware",
                                                      "name": "crashy"}, ok=(201,))
        uuid = node["uuid"]
        for target, state in (("manage", "manageable"), ("provide", "available")):
            _call(server.url, "PUT", f"/v1/nodes/{uuid}/states/provision",
                  {"target": target}, ok=(202,))
            _wait(server.url, uuid, state)
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
        _call(server.url, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "active"},
              ok=(202,))
        assert _wait(server.url, uuid, "active")["last_error"] is None
    finally:
        stop_server(server.process)
