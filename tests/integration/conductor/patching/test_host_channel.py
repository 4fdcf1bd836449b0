"""Host agents (conductor/patching/host_channel.py) through Flask's test client, over a
real SQLite store: the token issued by the node vendor passthru (active nodes only,
a new one revokes the old), no host-mode lookup, a stale token after a new stay in
active, the binding to host and certificate, reports reaching the patch controller
under the node name, and refusals that record nothing."""
import json

import pytest

from api import create_app
from conductor import config
from conductor.appliance import Appliance
from ramdisk_agent import selfsigned

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
AGENT = {"X-OpenStack-Ironic-API-Version": "1.68"}
REPORT = {"nodetype": "worker", "subfunctions": ["worker"], "sw_version": "1.0",
          "out_of_date": True, "installed": {"tool": "1.0-1@noarch"}, "to_remove": [],
          "missing_pkgs": [], "duplicated_pkgs": {}, "state": "idle",
          "node_is_patched": False, "patch_failed": False, "install_request": None}
URL = "https://192.0.2.7:9999"
PEM = selfsigned.certificate("192.0.2.7")[0].decode()


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


def issue(client, ident):
    response = client.post(f"/v1/nodes/{ident}/vendor_passthru?method=issue_host_agent_token",
                           headers=LATEST)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["token"]


def beat(client, uuid, token, **extra):
    body = {"callback_url": URL, "agent_token": token, "agent_version": "1",
            "agent_mode": "host", "agent_verify_ca": PEM, "patching": REPORT, **extra}
    return client.post(f"/v1/heartbeat/{uuid}", json=body, headers=AGENT)


def error(response):
    return json.loads(response.get_json()["error_message"])["faultstring"]


def test_token_from_the_vendor_passthru_for_active_nodes_only(app):
    client, appliance = app
    uuid = active_node(client)
    response = client.post(f"/v1/nodes/{uuid}/vendor_passthru/issue_host_agent_token",
                           json={}, headers=LATEST)       # ironicclient's form
    assert response.status_code == 200
    first = response.get_json()
    assert first["node_uuid"] == uuid and len(first["token"]) >= 43
    second = issue(client, "compute-0")                   # openstacksdk's form, by name
    assert second != first["token"]
    assert beat(client, uuid, first["token"]).status_code == 400   # revoked by the new one
    assert beat(client, uuid, second).status_code == 202
    node = client.get(f"/v1/nodes/{uuid}", headers=LATEST).get_json()
    assert node["driver_internal_info"]["host_agent_token_hash"] == "******"
    assert "agent_secret_token" not in node["driver_internal_info"]
    stored = json.dumps(appliance.store.get_node(uuid).driver_internal_info)
    assert second not in stored and first["token"] not in stored
    methods = client.get(f"/v1/nodes/{uuid}/vendor_passthru/methods", headers=LATEST)
    assert methods.get_json()["issue_host_agent_token"]["http_methods"] == ["POST"]
    enrolled = client.post("/v1/nodes", json={"driver": "fake-hardware"},
                           headers=LATEST).get_json()
    refused = client.post(f"/v1/nodes/{enrolled['uuid']}/vendor_passthru"
                          "?method=issue_host_agent_token", headers=LATEST)
    assert refused.status_code == 409 and "active nodes only" in error(refused)
    assert "host_agent_token_hash" not in appliance.store.get_node(
        enrolled["uuid"]).driver_internal_info


@pytest.mark.parametrize("method, query, body, named", [
    ("POST", "", None, '"method"'),
    ("POST", "?method=reboot_the_world", None, "No handler for method"),
    ("GET", "?method=issue_host_agent_token", None, "takes HTTP POST"),
    ("POST", "?method=issue_host_agent_token", {"ttl": 5}, "takes no arguments"),
])
def test_bad_passthru_calls_are_refused(app, method, query, body, named):
    client, appliance = app
    uuid = active_node(client)
    response = client.open(f"/v1/nodes/{uuid}/vendor_passthru{query}", method=method,
                           json=body, headers=LATEST)
    assert response.status_code == 400 and named in error(response)
    assert "host_agent_token_hash" not in appliance.store.get_node(uuid).driver_internal_info
    missing = client.post("/v1/nodes/nope/vendor_passthru?method=issue_host_agent_token",
                          headers=LATEST)
    assert missing.status_code == 404


def test_host_mode_lookup_answers_as_an_unknown_node(app):
    client, appliance = app
    uuid = active_node(client)
    before = appliance.store.get_node(uuid).driver_internal_info
    unknown = client.get("/v1/lookup?node_uuid=no-such-node", headers=AGENT)
    for query in (f"node_uuid={uuid}&agent_mode=host", "node_uuid=compute-0&agent_mode=host",
                  f"node_uuid={uuid}", f"node_uuid={uuid}&agent_mode=guest"):
        response = client.get(f"/v1/lookup?{query}", headers=AGENT)
        assert (response.status_code, response.get_json()) == (404, unknown.get_json())
    assert appliance.store.get_node(uuid).driver_internal_info == before


def test_new_stay_in_active_needs_a_new_token(app):
    client, _ = app
    uuid = active_node(client)
    old = issue(client, uuid)
    provision(client, uuid, "deleted", "active")
    assert beat(client, uuid, old).status_code == 400
    new = issue(client, uuid)
    assert beat(client, uuid, new).status_code == 202


def test_report_reaches_the_controller_under_the_node_name(app):
    client, appliance = app
    uuid = active_node(client, "storage-1")
    token = issue(client, uuid)
    assert beat(client, uuid, token).status_code == 202
    [host] = appliance.service.patching.query_hosts()
    assert (host["hostname"], host["ip"], host["nodetype"]) == ("storage-1", "192.0.2.7",
                                                                "worker")
    assert host["patch_current"] is False
    info = appliance.store.get_node(uuid).driver_internal_info
    assert info["host_agent_url"] == URL
    # A restarted agent (new port, same host and certificate) is accepted.
    assert beat(client, uuid, token, callback_url="https://192.0.2.7:10000").status_code \
        == 202
    assert appliance.store.get_node(uuid).driver_internal_info["host_agent_url"] == \
        "https://192.0.2.7:10000"


def test_the_first_heartbeat_binds_the_token_to_host_and_certificate(app):
    client, appliance = app
    uuid = active_node(client, "storage-2")
    token = issue(client, uuid)
    assert beat(client, uuid, token).status_code == 202
    bound = appliance.store.get_node(uuid).driver_internal_info
    other_pem = selfsigned.certificate("192.0.2.7")[0].decode()
    for change, named in (({"callback_url": "https://192.0.2.66:9999"}, '"callback_url" host'),
                          ({"agent_verify_ca": other_pem}, '"agent_verify_ca"'),
                          ({"agent_verify_ca": None}, '"agent_verify_ca"')):
        response = beat(client, uuid, token, **change)
        assert response.status_code == 400 and named in error(response)
        assert "issue a new token" in error(response)
        assert appliance.store.get_node(uuid).driver_internal_info == bound
    # Rebinding: a new token, and the first heartbeat with it binds the new place.
    new = issue(client, uuid)
    assert beat(client, uuid, new, callback_url="https://192.0.2.66:9999",
                agent_verify_ca=other_pem).status_code == 202
    assert appliance.service.patching.query_hosts()[0]["ip"] == "192.0.2.66"


@pytest.mark.parametrize("change, message", [
    ({"agent_token": "wrong"}, "Invalid or missing agent token"),
    ({"agent_token": None}, "Invalid or missing agent token"),
    ({"callback_url": "http://192.0.2.7:9999"}, "require_tls"),
    ({"agent_verify_ca": "not a certificate"}, "not a PEM certificate"),
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
    token = issue(client, uuid)
    before = appliance.store.get_node(uuid).driver_internal_info
    extra = {k: v for k, v in change.items() if k != "agent_token"}
    response = beat(client, uuid, change.get("agent_token", token), **extra)
    assert response.status_code == 400
    assert message in error(response)
    assert appliance.service.patching.query_hosts() == []
    assert appliance.store.get_node(uuid).driver_internal_info == before   # nothing bound


def test_install_errors_are_clear_and_leave_the_host_state(app):
    client, appliance = app
    uuid = active_node(client, "controller-1")
    token = issue(client, uuid)
    # An agent that does not answer (nothing listens on port 1): the install fails
    # with the reason, and the host is not left showing "installing".
    assert beat(client, uuid, token, callback_url="https://127.0.0.1:1",
                agent_verify_ca=None).status_code == 202
    ctl = appliance.service.patching
    result = ctl.host_install_async("controller-1")
    assert "Failed to send the installation request to controller-1" in result.error
    assert "cannot reach the agent" in result.error
    assert ctl.query_hosts()[0]["state"] == "idle"
    issue(client, uuid)               # a new token: no agent is bound to it yet
    result = ctl.host_install_async("controller-1")
    assert "has no host agent yet" in result.error
    assert "Unknown host specified: compute-7" in ctl.host_install_async("compute-7").error


def test_operator_revocation(app):
    client, appliance = app
    uuid = active_node(client, "storage-0")
    old = issue(client, uuid)
    assert beat(client, uuid, old).status_code == 202
    response = client.delete("/v1/nodes/storage-0/host_agent_token", headers=LATEST)
    assert response.status_code == 204
    info = appliance.store.get_node(uuid).driver_internal_info
    assert not any(key.startswith("host_agent") for key in info)
    assert beat(client, uuid, old).status_code == 400
    new = issue(client, uuid)
    assert beat(client, uuid, new).status_code == 202
    assert client.delete("/v1/nodes/nope/host_agent_token",
                         headers=LATEST).status_code == 404
