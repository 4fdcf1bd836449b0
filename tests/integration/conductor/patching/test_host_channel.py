"""Host-mode lookup and heartbeat (conductor/patching/host_channel.py) through Flask's test client,
over a real SQLite store: active nodes only, the separate one-time token, a new token
for a new stay in active, reports reaching the patch controller under the node name,
and refusals that record nothing."""
import json

import pytest

from api import create_app
from conductor import config
from conductor.appliance import Appliance

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
AGENT = {"X-OpenStack-Ironic-API-Version": "1.68"}
REPORT = {"nodetype": "worker", "subfunctions": ["worker"], "sw_version": "1.0",
          "out_of_date": True, "installed": {"tool": "1.0-1@noarch"}, "to_remove": [],
          "missing_pkgs": [], "duplicated_pkgs": {}, "state": "idle",
          "node_is_patched": False, "patch_failed": False, "install_request": None}
URL = "https://192.0.2.7:9999"


@pytest.fixture
def app(tmp_path):
    settings = config.from_options({"data_dir": str(tmp_path / "d"), "conductor.host": "test",
                                    "pxe.enabled": False, "agent.max_command_attempts": 1,
                                    "agent.command_timeout": 2.0})
    # The update repo exists already: no createrepo_c in unit tests.
    (tmp_path / "d" / "httpboot" / "updates" / "rel-1.0" / "repodata").mkdir(parents=True)
    appliance = Appliance(settings)
    appliance.start()
    yield create_app(appliance.service).test_client(), appliance
    appliance.stop()


def provision(client, uuid, *targets):
    for target in targets:
        response = client.put(f"/v1/nodes/{uuid}/states/provision", json={"target": target},
                              headers=LATEST)
        assert response.status_code == 202, response.get_json()
        for _ in range(500):
            node = client.get(f"/v1/nodes/{uuid}", headers=LATEST).get_json()
            if node["reservation"] is None and node["provision_state"] in (
                    "manageable", "active", "available", "enroll"):
                break


def active_node(client, name="compute-0"):
    node = client.post("/v1/nodes", json={"driver": "fake-hardware", "name": name,
                                          "automated_clean": False},
                       headers=LATEST).get_json()
    provision(client, node["uuid"], "manage", "adopt")
    return node["uuid"]


def lookup(client, uuid, mode="host"):
    return client.get(f"/v1/lookup?node_uuid={uuid}&agent_mode={mode}", headers=AGENT)


def beat(client, uuid, token, **extra):
    body = {"callback_url": URL, "agent_token": token, "agent_version": "1",
            "agent_mode": "host", "patching": REPORT, **extra}
    return client.post(f"/v1/heartbeat/{uuid}", json=body, headers=AGENT)


def test_lookup_only_for_active_nodes_and_token_once(app):
    client, appliance = app
    uuid = active_node(client)
    assert client.get(f"/v1/lookup?node_uuid={uuid}", headers=AGENT).status_code == 404
    first = lookup(client, uuid)
    assert first.status_code == 200
    token = first.get_json()["config"]["agent_token"]
    assert token and token != "******"
    assert lookup(client, uuid).get_json()["config"]["agent_token"] == "******"
    node = client.get(f"/v1/nodes/{uuid}", headers=LATEST).get_json()
    assert node["driver_internal_info"]["host_agent_token"] == "******"
    assert "agent_secret_token" not in node["driver_internal_info"]
    assert lookup(client, uuid, "guest").status_code == 400
    enrolled = client.post("/v1/nodes", json={"driver": "fake-hardware"},
                           headers=LATEST).get_json()
    assert lookup(client, enrolled["uuid"]).status_code == 404


def test_new_stay_in_active_gets_a_new_token(app):
    client, _ = app
    uuid = active_node(client)
    old = lookup(client, uuid).get_json()["config"]["agent_token"]
    provision(client, uuid, "deleted", "active")
    new = lookup(client, uuid).get_json()["config"]["agent_token"]
    assert new not in ("******", old)
    assert beat(client, uuid, old).status_code == 400
    assert beat(client, uuid, new).status_code == 202


def test_report_reaches_the_controller_under_the_node_name(app):
    client, appliance = app
    uuid = active_node(client, "storage-1")
    token = lookup(client, uuid).get_json()["config"]["agent_token"]
    assert beat(client, uuid, token).status_code == 202
    [host] = appliance.service.patching.query_hosts()
    assert (host["hostname"], host["ip"], host["nodetype"]) == ("storage-1", "192.0.2.7",
                                                                 "worker")
    assert host["patch_current"] is False
    info = appliance.store.get_node(uuid).driver_internal_info
    assert info["host_agent_url"] == URL
    # A restarted agent (new port) is accepted on its token and replaces the URL.
    assert beat(client, uuid, token, callback_url="https://192.0.2.7:10000").status_code \
        == 202
    assert appliance.store.get_node(uuid).driver_internal_info["host_agent_url"] == \
        "https://192.0.2.7:10000"


@pytest.mark.parametrize("change, message", [
    ({"agent_token": "wrong"}, "Invalid or missing agent token"),
    ({"callback_url": "http://192.0.2.7:9999"}, "require_tls"),
    ({"patching": dict(REPORT, installed=["x"])}, '"installed"'),
    ({"patching": dict(REPORT, out_of_date="yes")}, '"out_of_date"'),
    ({"patching": dict(REPORT, state="sleeping")}, "unknown host state"),
    ({"patching": "text"}, '"patching" has the wrong type'),
    ({"agent_mode": "ramdisk"}, '"agent_mode": "host"'),
    ({"agent_version": None}, '"agent_version" is required'),
])
def test_refused_heartbeats_record_nothing(app, change, message):
    client, appliance = app
    uuid = active_node(client)
    token = lookup(client, uuid).get_json()["config"]["agent_token"]
    extra = {k: v for k, v in change.items() if k != "agent_token"}
    response = beat(client, uuid, change.get("agent_token", token), **extra)
    assert response.status_code == 400
    assert message in json.loads(response.get_json()["error_message"])["faultstring"]
    assert appliance.service.patching.query_hosts() == []
    assert "host_agent_url" not in appliance.store.get_node(uuid).driver_internal_info


def test_install_errors_are_clear_and_leave_the_host_state(app):
    client, appliance = app
    uuid = active_node(client, "controller-1")
    token = lookup(client, uuid).get_json()["config"]["agent_token"]
    # An agent that does not answer (nothing listens on port 1): the install fails
    # with the reason, and the host is not left showing "installing".
    assert beat(client, uuid, token, callback_url="https://127.0.0.1:1").status_code == 202
    ctl = appliance.service.patching
    result = ctl.host_install_async("controller-1")
    assert "Failed to send the installation request to controller-1" in result.error
    assert "cannot reach the agent" in result.error
    assert ctl.query_hosts()[0]["state"] == "idle"
    node = appliance.store.get_node(uuid)
    info = dict(node.driver_internal_info)
    del info["host_agent_url"]
    appliance.store.update_node(node.id, {"driver_internal_info": info})
    result = ctl.host_install_async("controller-1")
    assert "has no host agent yet" in result.error
    assert "Unknown host specified: compute-7" in ctl.host_install_async("compute-7").error


def test_operator_reset_issues_a_new_token(app):
    client, appliance = app
    uuid = active_node(client, "storage-0")
    old = lookup(client, uuid).get_json()["config"]["agent_token"]
    assert beat(client, uuid, old).status_code == 202
    response = client.delete("/v1/nodes/storage-0/host_agent_token", headers=LATEST)
    assert response.status_code == 204
    info = appliance.store.get_node(uuid).driver_internal_info
    assert "host_agent_token" not in info and "host_agent_url" not in info
    assert beat(client, uuid, old).status_code == 400
    new = lookup(client, uuid).get_json()["config"]["agent_token"]
    assert new not in ("******", old)
    assert beat(client, uuid, new).status_code == 202
    assert client.delete("/v1/nodes/nope/host_agent_token",
                         headers=LATEST).status_code == 404
