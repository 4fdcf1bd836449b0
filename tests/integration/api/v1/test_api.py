"""The v1 API through Flask's test client, over a real SQLite store and fake hardware."""
import json

import bcrypt
import pytest

from tests.waiting import wait_until

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}


@pytest.fixture
def client(make_app):
    return make_app()[0]


def error_of(response) -> dict:
    return json.loads(response.get_json()["error_message"])


def create(client, **body):
    body.setdefault("driver", "fake-hardware")
    response = client.post("/v1/nodes", json=body, headers=LATEST)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def wait_state(client, ident, state, timeout=10):
    seen = {}

    def reached():
        seen.update(client.get(f"/v1/nodes/{ident}", headers=LATEST).get_json())
        return seen if seen["provision_state"] == state else None
    return wait_until(reached, timeout, 0.02, lambda: f"node {ident} to reach {state}; stuck "
                      f"in {seen.get('provision_state')}: {seen.get('last_error')}")


def act(client, ident, target, **extra):
    return client.put(f"/v1/nodes/{ident}/states/provision", json=dict(extra, target=target),
                      headers=LATEST)


def node_count(client):
    return len(client.get("/v1/nodes", headers=LATEST).get_json()["nodes"])


# -- discovery and microversions ------------------------------------------------
def test_root_documents(client):
    root = client.get("/").get_json()
    assert root["default_version"]["version"] == "1.115"
    assert root["default_version"]["min_version"] == "1.1"
    assert root["versions"][0]["id"] == "v1"
    v1 = client.get("/v1/")
    assert v1.get_json()["version"]["status"] == "CURRENT"
    assert {"nodes", "ports", "links", "media_types"} <= set(v1.get_json())
    assert v1.headers["X-OpenStack-Ironic-API-Maximum-Version"] == "1.115"


def test_version_headers_on_every_response_including_errors(client):
    response = client.get("/v1/nodes/missing", headers={"X-OpenStack-Ironic-API-Version": "1.80"})
    assert response.status_code == 404
    assert response.headers["X-OpenStack-Ironic-API-Version"] == "1.80"
    assert response.headers["X-OpenStack-Ironic-API-Minimum-Version"] == "1.1"
    assert response.headers["X-OpenStack-Ironic-API-Maximum-Version"] == "1.115"
    assert error_of(response)["faultstring"] == "Node missing could not be found."


def test_generic_openstack_version_header_and_latest(client):
    response = client.get("/v1/nodes", headers={"OpenStack-API-Version": "baremetal 1.60"})
    assert response.headers["X-OpenStack-Ironic-API-Version"] == "1.60"
    response = client.get("/v1/nodes", headers=LATEST)
    assert response.headers["OpenStack-API-Version"] == "baremetal 1.115"


def test_missing_header_means_1_1(client):
    response = client.get("/v1/nodes")
    assert response.headers["X-OpenStack-Ironic-API-Version"] == "1.1"


@pytest.mark.parametrize("version", ["1.116", "2.0", "1.0"])
def test_unsupported_version_is_406_with_range(client, version):
    response = client.get("/v1/nodes", headers={"X-OpenStack-Ironic-API-Version": version})
    assert response.status_code == 406
    body = error_of(response)
    assert body["code"] == 406 and body["title"] == "Not Acceptable"
    assert "[1.1, 1.115]" in body["description"]
    assert response.headers["X-OpenStack-Ironic-API-Maximum-Version"] == "1.115"
    # discovery still answers, so ironicclient can read our maximum and retry
    assert client.get("/v1", headers={"X-OpenStack-Ironic-API-Version": version}).status_code == 200


def test_malformed_version_is_400(client):
    response = client.get("/v1/nodes", headers={"X-OpenStack-Ironic-API-Version": "one"})
    assert response.status_code == 400


def test_node_created_at_1_1_is_legacy_available_and_deployable(client):
    response = client.post("/v1/nodes", json={"driver": "fake-hardware"})
    node = response.get_json()
    assert response.status_code == 201 and node["provision_state"] is None
    assert "name" not in node                      # added in 1.5
    assert act(client, node["uuid"], "active").status_code == 202
    assert wait_state(client, node["uuid"], "active")["power_state"] == "power on"


def test_fields_newer_than_the_request_are_hidden_and_refused(client):
    node = client.post("/v1/nodes", json={"driver": "fake-hardware"},
                       headers={"X-OpenStack-Ironic-API-Version": "1.20"}).get_json()
    assert "network_interface" in node and "resource_class" not in node
    response = client.post("/v1/nodes", json={"driver": "fake-hardware", "owner": "x"},
                           headers={"X-OpenStack-Ironic-API-Version": "1.20"})
    assert response.status_code == 406


# -- nodes ------------------------------------------------------------------------
def test_create_returns_full_node_and_location(client):
    response = client.post("/v1/nodes", json={"driver": "fake-hardware", "name": "n1"},
                           headers=LATEST)
    node = response.get_json()
    assert response.status_code == 201
    assert response.headers["Location"].endswith(f"/v1/nodes/{node['uuid']}")
    assert node["provision_state"] == "enroll" and node["target_provision_state"] is None
    assert node["power_interface"] == "fake" and node["bios_interface"] == "no-bios"
    assert len(node) >= 67 and node["properties"] == {} and node["traits"] == []


def test_get_by_name_and_uuid_and_fields(client):
    node = create(client, name="by-name")
    assert client.get("/v1/nodes/by-name", headers=LATEST).get_json()["uuid"] == node["uuid"]
    short = client.get(f"/v1/nodes/{node['uuid']}?fields=uuid,provision_state",
                       headers=LATEST).get_json()
    assert set(short) == {"uuid", "provision_state", "links"}
    bad = client.get(f"/v1/nodes/{node['uuid']}?fields=uuid,nope", headers=LATEST)
    assert bad.status_code == 400 and "nope" in error_of(bad)["faultstring"]


def test_list_short_detail_and_filters(client):
    a = create(client, name="a")
    create(client, name="b")
    act(client, a["uuid"], "manage")
    wait_state(client, a["uuid"], "manageable")
    short = client.get("/v1/nodes", headers=LATEST).get_json()["nodes"]
    assert set(short[0]) == {"uuid", "name", "instance_uuid", "power_state",
                             "provision_state", "maintenance", "links"}
    for path in ("/v1/nodes/detail", "/v1/nodes?detail=True"):
        detail = client.get(path, headers=LATEST).get_json()["nodes"]
        assert len(detail) == 2 and "driver_info" in detail[0]
    managed = client.get("/v1/nodes?provision_state=manageable", headers=LATEST).get_json()
    assert [n["uuid"] for n in managed["nodes"]] == [a["uuid"]]
    assert client.get("/v1/nodes?maintenance=maybe", headers=LATEST).status_code == 400


def test_pagination_next_link_walks_all(make_app):
    client, _ = make_app({"api.max_limit": 2})
    uuids = [create(client, name=f"p{i}")["uuid"] for i in range(5)]
    seen, url = [], "/v1/nodes"
    while url:
        body = client.get(url, headers=LATEST).get_json()
        seen += [n["uuid"] for n in body["nodes"]]
        url = body.get("next", "").replace("http://localhost", "") or None
    assert seen == uuids
    bad = client.get("/v1/nodes?marker=00000000-0000-0000-0000-000000000000", headers=LATEST)
    assert bad.status_code == 400


def test_patch_instance_info_and_readonly_fields(client):
    node = create(client, name="patchme", driver_info={"ipmi_password": "s3cret", "x": 1})
    patched = client.patch(f"/v1/nodes/{node['uuid']}", headers=LATEST, json=[
        {"op": "add", "path": "/instance_info/image_source", "value": "http://img"},
        {"op": "replace", "path": "/driver_info/x", "value": 2}]).get_json()
    assert patched["instance_info"] == {"image_source": "http://img"}
    assert patched["driver_info"] == {"ipmi_password": "******", "x": 2}
    bad = client.patch(f"/v1/nodes/{node['uuid']}", headers=LATEST,
                       json=[{"op": "replace", "path": "/provision_state", "value": "active"}])
    assert bad.status_code == 400 and "internal attribute" in error_of(bad)["faultstring"]


def test_secrets_masked_but_kept(make_app):
    client, appliance = make_app()
    node = create(client, driver_info={"ipmi_password": "s3cret", "ipmi_username": "admin"})
    assert node["driver_info"] == {"ipmi_password": "******", "ipmi_username": "admin"}
    client.patch(f"/v1/nodes/{node['uuid']}", headers=LATEST,
                 json=[{"op": "add", "path": "/driver_info/ipmi_port", "value": 623}])
    stored = appliance.store.get_node(node["uuid"]).driver_info
    assert stored["ipmi_password"] != "s3cret" and stored["ipmi_port"] == 623  # encrypted
    assert appliance.cipher.decrypt_dict(stored)["ipmi_password"] == "s3cret"


def test_interfaces_validated_against_hardware_type(client):
    bad = client.post("/v1/nodes", json={"driver": "fake-hardware", "power_interface": "ipmitool"},
                      headers=LATEST)
    assert bad.status_code == 400 and "power interface" in error_of(bad)["faultstring"]
    bad = client.post("/v1/nodes", json={"driver": "nonexistent"}, headers=LATEST)
    assert bad.status_code == 400 and "nonexistent" in error_of(bad)["faultstring"]
    node = create(client, rescue_interface="fake")
    patched = client.patch(f"/v1/nodes/{node['uuid']}", headers=LATEST, json=[
        {"op": "replace", "path": "/bios_interface", "value": "fake"}]).get_json()
    assert patched["rescue_interface"] == "fake" and patched["bios_interface"] == "fake"


def test_validate(client):
    node = create(client)
    result = client.get(f"/v1/nodes/{node['uuid']}/validate", headers=LATEST).get_json()
    assert set(result) == {"bios", "boot", "console", "deploy", "firmware", "inspect",
                           "management", "network", "power", "raid", "rescue", "storage"}
    assert result["power"] == {"result": True, "reason": None}


# -- bad input: clear error, nothing written ----------------------------------------
@pytest.mark.parametrize("body,content_type,message", [
    ('{"driver": "fake-hardware",', "application/json", "Malformed JSON"),
    ("", "application/json", "required"),
    ('{"driver": "fake-hardware", "unknown_field": 1}', "application/json", "unknown_field"),
    ('{"driver": "fake-hardware", "name": "bad name!"}', "application/json", "node name"),
    ('{"driver": "fake-hardware", "uuid": "not-a-uuid"}', "application/json", "UUID"),
    ('{"name": "nodriver"}', "application/json", "driver"),
    ('["driver"]', "application/json", "JSON object"),
])
def test_bad_node_bodies(client, body, content_type, message):
    response = client.post("/v1/nodes", data=body, content_type=content_type, headers=LATEST)
    assert response.status_code == 400
    assert message in error_of(response)["faultstring"]
    assert node_count(client) == 0


def test_duplicate_name_is_409(client):
    create(client, name="dup")
    response = client.post("/v1/nodes", json={"driver": "fake-hardware", "name": "dup"},
                           headers=LATEST)
    assert response.status_code == 409 and "dup" in error_of(response)["faultstring"]
    assert node_count(client) == 1


def test_invalid_transition_and_unknown_verb(client):
    node = create(client)
    response = act(client, node["uuid"], "active")
    assert response.status_code == 400
    assert 'while it is in state "enroll"' in error_of(response)["faultstring"]
    assert act(client, node["uuid"], "explode").status_code == 400
    assert client.put(f"/v1/nodes/{node['uuid']}/states/provision", data="{",
                      content_type="application/json", headers=LATEST).status_code == 400
    assert client.get(f"/v1/nodes/{node['uuid']}", headers=LATEST).get_json()[
        "provision_state"] == "enroll"


def test_verb_gated_by_version(client):
    node = create(client)
    response = client.put(f"/v1/nodes/{node['uuid']}/states/provision",
                          json={"target": "manage"},
                          headers={"X-OpenStack-Ironic-API-Version": "1.3"})
    assert response.status_code == 406


def test_manual_clean_needs_steps(client):
    node = create(client)
    act(client, node["uuid"], "manage")
    wait_state(client, node["uuid"], "manageable")
    assert act(client, node["uuid"], "clean").status_code == 400
    steps = [{"interface": "deploy", "step": "erase_devices_metadata"}]
    assert act(client, node["uuid"], "clean", clean_steps=steps).status_code == 202
    wait_state(client, node["uuid"], "manageable")


# -- ports ----------------------------------------------------------------------------
def test_port_lifecycle_and_filters(client):
    node = create(client, name="withport")
    response = client.post("/v1/ports", json={"address": "52:54:00:AA:BB:01",
                                              "node_uuid": node["uuid"]}, headers=LATEST)
    port = response.get_json()
    assert response.status_code == 201 and port["address"] == "52:54:00:aa:bb:01"
    assert port["pxe_enabled"] is True and port["node_uuid"] == node["uuid"]
    for query in ("node=withport", f"node_uuid={node['uuid']}", "address=52:54:00:aa:bb:01"):
        found = client.get(f"/v1/ports/?{query}", headers=LATEST).get_json()["ports"]
        assert [p["uuid"] for p in found] == [port["uuid"]], query
    assert client.delete(f"/v1/ports/{port['uuid']}", headers=LATEST).status_code == 204
    assert client.get(f"/v1/ports/{port['uuid']}", headers=LATEST).status_code == 404


@pytest.mark.parametrize("body,status,message", [
    ({"address": "not-a-mac"}, 400, "MAC"),
    ({"address": "52:54:00:aa:bb:02", "node_uuid": "withport"}, 400, "UUID"),
    ({"address": "52:54:00:aa:bb:02", "node_uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"},
     404, "could not be found"),
    ({"address": "52:54:00:aa:bb:01"}, 409, "already exists"),
    ({"address": "52:54:00:aa:bb:03", "colour": "red"}, 400, "colour"),
])
def test_bad_ports(client, body, status, message):
    node = create(client, name="withport")
    client.post("/v1/ports", json={"address": "52:54:00:aa:bb:01", "node_uuid": node["uuid"]},
                headers=LATEST)
    body = dict(body)
    body.setdefault("node_uuid", node["uuid"])
    response = client.post("/v1/ports", json=body, headers=LATEST)
    assert response.status_code == status and message in error_of(response)["faultstring"]
    assert len(client.get("/v1/ports", headers=LATEST).get_json()["ports"]) == 1


# -- the whole flow, locks, limits ------------------------------------------------------
def test_full_flow_and_delete_rules(client):
    node = create(client, name="flow")
    uuid = node["uuid"]
    for target, state in (("manage", "manageable"), ("provide", "available")):
        assert act(client, uuid, target).status_code == 202
        wait_state(client, uuid, state)
    client.patch(f"/v1/nodes/{uuid}", headers=LATEST, json=[
        {"op": "add", "path": "/instance_info/image_source", "value": "http://i"}])
    response = act(client, uuid, "active")
    assert response.status_code == 202 and response.headers["Location"].endswith("/states")
    active = wait_state(client, uuid, "active")
    assert active["power_state"] == "power on" and active["last_error"] is None
    refused = client.delete(f"/v1/nodes/{uuid}", headers=LATEST)
    assert refused.status_code == 409 and "Can not delete node" in error_of(refused)["faultstring"]
    assert client.put(f"/v1/nodes/{uuid}/states/power", json={"target": "power off"},
                      headers=LATEST).status_code == 202
    wait_until(lambda: client.get(f"/v1/nodes/{uuid}", headers=LATEST).get_json()[
        "power_state"] == "power off", 5, 0.02, "power off")
    act(client, uuid, "deleted")
    done = wait_state(client, uuid, "available")
    assert done["instance_info"] == {} and done["power_state"] == "power off"
    assert client.delete(f"/v1/nodes/{uuid}", headers=LATEST).status_code == 204
    assert client.get(f"/v1/nodes/{uuid}", headers=LATEST).status_code == 404


def test_maintenance_allows_delete_of_active_node(client):
    node = create(client)
    act(client, node["uuid"], "manage")
    wait_state(client, node["uuid"], "manageable")
    act(client, node["uuid"], "provide")
    wait_state(client, node["uuid"], "available")
    act(client, node["uuid"], "active")
    wait_state(client, node["uuid"], "active")
    client.put(f"/v1/nodes/{node['uuid']}/maintenance", json={"reason": "broken"},
               headers=LATEST)
    assert client.get(f"/v1/nodes/{node['uuid']}", headers=LATEST).get_json()[
        "maintenance_reason"] == "broken"
    assert client.delete(f"/v1/nodes/{node['uuid']}", headers=LATEST).status_code == 204


def _act_retrying(client, ident, target):
    """As Ironic clients do: retry 503/409 (a worker slot is freed just after the
    state change a waiter sees, so a request right behind it can find none free)."""
    answers = []

    def accepted():
        answers.append(act(client, ident, target))
        return answers[-1].status_code not in (409, 503)
    wait_until(accepted, 10, 0.02, lambda: f"{target} of {ident} to be accepted; last "
               f"answer {answers[-1].status_code}")
    return answers[-1]


def _available(client, **body):
    node = create(client, **body)
    assert _act_retrying(client, node["uuid"], "manage").status_code == 202
    wait_state(client, node["uuid"], "manageable")
    assert _act_retrying(client, node["uuid"], "provide").status_code == 202
    wait_state(client, node["uuid"], "available")
    return node


def test_locked_node_is_409_and_released_after(client):
    node = _available(client, driver_info={"fake_delay": 0.5})
    assert act(client, node["uuid"], "active").status_code == 202
    busy = client.patch(f"/v1/nodes/{node['uuid']}", headers=LATEST,
                        json=[{"op": "add", "path": "/extra/x", "value": 1}])
    assert busy.status_code == 409 and "locked" in error_of(busy)["faultstring"]
    power = client.put(f"/v1/nodes/{node['uuid']}/states/power", json={"target": "power off"},
                       headers=LATEST)
    assert power.status_code == 409
    wait_state(client, node["uuid"], "active")
    assert client.get(f"/v1/nodes/{node['uuid']}", headers=LATEST).get_json()[
        "reservation"] is None


def test_concurrent_deploy_limit_is_503(make_app):
    client, _ = make_app({"conductor.max_concurrent_deploy": 1})
    first = _available(client, name="first", driver_info={"fake_delay": 0.5})
    second = _available(client, name="second")
    assert act(client, first["uuid"], "active").status_code == 202
    refused = act(client, second["uuid"], "active")
    assert refused.status_code == 503 and "limit" in error_of(refused)["faultstring"]
    assert client.get(f"/v1/nodes/{second['uuid']}", headers=LATEST).get_json()[
        "provision_state"] == "available"


def test_no_free_worker_is_503_and_nothing_changes(make_app):
    client, _ = make_app({"conductor.workers": 1, "conductor.max_queued": 0})
    slow = _available(client, name="slow", driver_info={"fake_delay": 0.5})
    other = _available(client, name="other")
    assert act(client, slow["uuid"], "active").status_code == 202
    refused = act(client, other["uuid"], "active")
    assert refused.status_code == 503
    assert client.get(f"/v1/nodes/{other['uuid']}", headers=LATEST).get_json()[
        "provision_state"] == "available"


def _break_fake_delay(client, node):
    """Give the node a driver_info value its fake deploy interface rejects."""
    client.patch(f"/v1/nodes/{node['uuid']}", headers=LATEST,
                 json=[{"op": "add", "path": "/driver_info/fake_delay", "value": "soon"}])


def test_deploy_refused_when_an_interface_does_not_validate(client):
    node = _available(client)
    _break_fake_delay(client, node)
    refused = act(client, node["uuid"], "active")
    assert refused.status_code == 400 and "deploy interface" in error_of(refused)["faultstring"]
    assert client.get(f"/v1/nodes/{node['uuid']}", headers=LATEST).get_json()[
        "provision_state"] == "available"


def test_failing_action_sets_last_error_and_frees_lock(client):
    node = _available(client)
    _break_fake_delay(client, node)
    act(client, node["uuid"], "manage")
    wait_state(client, node["uuid"], "manageable")
    act(client, node["uuid"], "provide")
    failed = wait_state(client, node["uuid"], "clean failed")
    assert "fake_delay" in failed["last_error"] and failed["reservation"] is None
    client.patch(f"/v1/nodes/{node['uuid']}", headers=LATEST,
                 json=[{"op": "replace", "path": "/driver_info/fake_delay", "value": 0}])
    act(client, node["uuid"], "manage")
    wait_state(client, node["uuid"], "manageable")
    act(client, node["uuid"], "provide")
    assert wait_state(client, node["uuid"], "available")["last_error"] is None


# -- authentication -------------------------------------------------------------------
def test_http_basic_auth(make_app, tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("admin:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    client, _ = make_app({"api.auth_strategy": "http_basic", "api.htpasswd_file": str(htpasswd)})
    assert client.get("/").status_code == 200              # discovery stays public
    missing = client.get("/v1/nodes", headers=LATEST)
    assert missing.status_code == 401 and "Basic" in missing.headers["WWW-Authenticate"]
    wrong = client.get("/v1/nodes", headers=LATEST, auth=("admin", "nope"))
    assert wrong.status_code == 401
    assert client.get("/v1/nodes", headers=LATEST, auth=("admin", "pw")).status_code == 200
    assert client.post("/v1/nodes", json={"driver": "fake-hardware"},
                       headers=LATEST).status_code == 401


def test_drivers_list_the_hardware_types_this_conductor_serves(client):
    drivers = client.get("/v1/drivers", headers=LATEST).get_json()["drivers"]
    served = {d["name"]: d["hosts"] for d in drivers}
    assert served["fake-hardware"] == served["ipmi"] == ["test-conductor"]
    detail = client.get("/v1/drivers/fake-hardware", headers=LATEST).get_json()
    assert detail["default_power_interface"] == "fake"
    assert "no-rescue" in detail["enabled_rescue_interfaces"]
    ipmi = client.get("/v1/drivers/ipmi", headers=LATEST).get_json()
    assert ipmi["default_power_interface"] == "ipmitool"
    assert ipmi["enabled_management_interfaces"] == ["ipmitool", "fake"]
    assert client.get("/v1/drivers/nonexistent", headers=LATEST).status_code == 404
