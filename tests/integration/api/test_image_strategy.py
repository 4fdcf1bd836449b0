"""metalcast's rolling re-image strategy (image-update) on a real appliance with
fake-hardware nodes: stages of max-parallel hosts rebuilt one stage after the other
by the runner thread, the first failure stopping and aborting the strategy with the
host and the reason; one strategy of any type at a time."""
from __future__ import annotations

import pytest

from tests.waiting import wait_until

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
IMAGE = "/api/orchestration/image-update/strategy"
PATCH = "/api/orchestration/sw-patch/strategy"
SUM = "sha256:" + "ab" * 32
CREATE = {"image": "http://images.example/v2.img", "image-checksum": SUM,
          "worker-apply-type": "parallel", "max-parallel-worker-hosts": 2}


@pytest.fixture
def app_defaults():
    return {"pxe.enabled": False, "orchestration.audit_interval": 0.05,
            "orchestration.stabilize_factor": 0}


@pytest.fixture
def client(make_app):
    client = make_app()[0]
    for name in ("node-a", "node-b", "node-c"):
        node = client.post("/v1/nodes", json={
            "driver": "fake-hardware", "name": name, "driver_info": {"fake_delay": 0.1},
            "instance_info": {"image_source": "http://images.example/v1.img",
                              "image_os_hash_algo": "sha512", "image_os_hash_value": "0" * 128,
                              "image_delta_url": "http://images.example/v0-v1.delta"}},
            headers=LATEST).get_json()
        for target in ("manage", "adopt"):
            assert client.put(f"/v1/nodes/{node['uuid']}/states/provision",
                              json={"target": target}, headers=LATEST).status_code == 202
            wait_until(lambda n=name: client.get(f"/v1/nodes/{n}", headers=LATEST)
                       .get_json()["reservation"] is None, timeout=30)
    return client


def node(client, name):
    return client.get(f"/v1/nodes/{name}", headers=LATEST).get_json()


def state_of(client):
    return client.get(IMAGE).get_json()["strategy"]["state"]


def test_rolling_reimage_in_stages_of_max_parallel(client):
    created = client.post(IMAGE, json=CREATE).get_json()["strategy"]
    assert created["name"] == "image-update" and created["state"] == "ready-to-apply"
    groups = [[n for s in stage["steps"] if s["step-name"] == "rebuild-hosts"
               for n in s["entity-names"]] for stage in created["apply-phase"]["stages"]]
    assert groups == [["node-a", "node-b"], ["node-c"]]
    # one strategy of any type: sw-patch's path sees none and may not create one
    assert client.get(PATCH).get_json() == {"strategy": None}
    refused = client.post(PATCH, json={"controller-apply-type": "serial",
                                       "storage-apply-type": "serial",
                                       "worker-apply-type": "serial",
                                       "default-instance-action": "migrate"})
    assert refused.status_code == 409 and created["uuid"] in refused.get_json()["faultstring"]
    assert client.post(IMAGE + "/actions", json={"action": "apply-all"}).status_code == 202
    wait_until(lambda: state_of(client) == "applied", timeout=60,
               message=lambda: str(client.get(IMAGE).get_json()))
    for name in ("node-a", "node-b", "node-c"):
        shown = node(client, name)
        assert shown["provision_state"] == "active"
        # the strategy's image and checksum replace every checksum form and old delta
        assert shown["instance_info"] == {"image_source": CREATE["image"],
                                          "image_checksum": SUM,
                                          "metalcast_strategy": created["uuid"]}, \
            shown["instance_info"]
    strategy = client.get(IMAGE).get_json()["strategy"]
    assert strategy["current-phase-completion-percentage"] == 100
    assert client.delete(IMAGE, json={"force": False}).status_code == 200


def test_first_failure_stops_and_aborts_naming_the_host(client):
    # a protected node refuses its rebuild, as the API would refuse it
    assert client.patch("/v1/nodes/node-b", json=[
        {"op": "replace", "path": "/protected", "value": True}],
        headers=LATEST).status_code == 200
    client.post(IMAGE, json=CREATE)
    client.post(IMAGE + "/actions", json={"action": "apply-all"})
    wait_until(lambda: state_of(client) == "aborted", timeout=60)
    strategy = client.get(IMAGE).get_json()["strategy"]
    reason = strategy["apply-phase"]["reason"]
    assert reason.startswith("re-image failed to start on host node-b:") and \
        "protected" in reason, reason
    assert node(client, "node-c")["instance_info"]["image_source"].endswith("v1.img")
    assert node(client, "node-b")["provision_state"] == "active"


@pytest.mark.parametrize("body, text", [
    ({**CREATE, "image-checksum": "nothex"}, "image-checksum"),
    ({k: v for k, v in CREATE.items() if k != "image"}, "image"),
    ({**CREATE, "worker-apply-type": "ignore"}, "worker-apply-type"),
    ({**CREATE, "delta-url": 5}, "delta-url"),
    ({**CREATE, "controller-apply-type": "serial"}, "Unknown strategy option"),
])
def test_bad_image_strategies_are_400(client, body, text):
    response = client.post(IMAGE, json=body)
    assert response.status_code == 400 and text in response.get_json()["faultstring"]
    assert client.get(IMAGE).get_json() == {"strategy": None}


def test_unknown_strategy_type_is_404(client):
    response = client.get("/api/orchestration/kube-upgrade/strategy")
    assert response.status_code == 404 and response.get_json()["faultstring"]


def test_a_rebuild_sent_before_a_crash_is_not_sent_again(make_app):
    """The window the SIGKILL test can hit: the rebuild was sent, the conductor died
    before the strategy recorded it, and the restart failed the deploy. The restarted
    strategy sends to the host again; the node names the strategy and has left
    ``active``, so it is not re-imaged a second time and the step reads its failure."""
    client, appliance = make_app({"pxe.enabled": False})
    made = client.post("/v1/nodes", json={
        "driver": "fake-hardware", "name": "node-x", "driver_info": {"fake_delay": 0.1}},
        headers=LATEST).get_json()
    for target in ("manage", "adopt"):
        client.put(f"/v1/nodes/{made['uuid']}/states/provision", json={"target": target},
                   headers=LATEST)
        wait_until(lambda: node(client, "node-x")["reservation"] is None, timeout=30)
    fleet = appliance.orchestration.fleet
    info = {"image_source": "http://images.example/v2.img", "image_checksum": SUM}
    assert fleet.rebuild("node-x", info, "strategy-1") == ""
    wait_until(lambda: node(client, "node-x")["provision_state"] == "active", timeout=30)
    assert node(client, "node-x")["instance_info"]["metalcast_strategy"] == "strategy-1"
    # the restart failed the deploy it could not resume
    appliance.store.update_node(appliance.store.get_node("node-x").id,
                                {"provision_state": "deploy failed",
                                 "last_error": "Conductor c restarted"})
    assert fleet.rebuild("node-x", info, "strategy-1") == ""      # not sent again
    assert node(client, "node-x")["provision_state"] == "deploy failed"
    # another strategy (or an active node) is re-imaged as before
    assert fleet.rebuild("node-x", info, "strategy-2") == ""
    wait_until(lambda: node(client, "node-x")["provision_state"] == "active", timeout=30)
