"""Node history (API 1.78) through the API, over a real store and fake hardware: a row per
provision state change and per error, written by the engine and the facade alike."""
import base64
import uuid

import bcrypt
import pytest
import sqlalchemy as sa

from tests.integration.api.v1.test_api import LATEST, act, create, wait_state
from tests.waiting import wait_until


@pytest.fixture
def client(make_app):
    return make_app()[0]


def history(client, node, **args):
    response = client.get(f"/v1/nodes/{node}/history", headers=LATEST, query_string=args)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["history"]


def available(client):
    node = create(client)
    act(client, node["uuid"], "manage")
    wait_state(client, node["uuid"], "manageable")
    act(client, node["uuid"], "provide")
    wait_state(client, node["uuid"], "available")
    return node


def test_deploy_leaves_one_row_per_state_change_in_order(client):
    node = available(client)
    act(client, node["uuid"], "active")
    wait_state(client, node["uuid"], "active")
    events = history(client, node["uuid"], detail="true")
    texts = [e["event"] for e in events]
    assert texts == [
        "Provision state changed from enroll to verifying.",
        "Provision state changed from verifying to manageable.",
        "Provision state changed from manageable to cleaning.",
        "Provision state changed from cleaning to available.",
        "Provision state changed from available to deploying.",
        "Provision state changed from deploying to active.",
    ], texts
    assert {(e["severity"], e["event_type"], e["conductor"]) for e in events} == {
        ("INFO", "provisioning", "test-conductor")}
    one = client.get(f"/v1/nodes/{node['name'] or node['uuid']}/history/{events[-1]['uuid']}",
                     headers=LATEST).get_json()
    assert one["event"] == texts[-1] and one["links"][0]["href"].endswith(
        f"/v1/nodes/{node['uuid']}/history/{events[-1]['uuid']}")
    short = history(client, node["uuid"])
    assert set(short[0]) == {"uuid", "created_at", "severity", "event", "links"}


def test_failure_is_an_error_row_with_the_message(client):
    node = available(client)
    client.patch(f"/v1/nodes/{node['uuid']}", headers=LATEST,
                 json=[{"op": "add", "path": "/driver_info/fake_delay", "value": "soon"}])
    act(client, node["uuid"], "manage")
    wait_state(client, node["uuid"], "manageable")
    act(client, node["uuid"], "provide")
    failed = wait_state(client, node["uuid"], "clean failed")
    last = history(client, node["uuid"])[-1]
    assert last["severity"] == "ERROR"
    assert last["event"].startswith("Provision state changed from cleaning to clean failed: ")
    assert failed["last_error"] in last["event"]


def test_paging_with_limit_and_marker(client):
    node = available(client)
    every = history(client, node["uuid"])
    first = client.get(f"/v1/nodes/{node['uuid']}/history?limit=2", headers=LATEST).get_json()
    assert [e["uuid"] for e in first["history"]] == [e["uuid"] for e in every[:2]]
    assert f"marker={every[1]['uuid']}" in first["next"]
    rest = history(client, node["uuid"], marker=every[1]["uuid"])
    assert [e["uuid"] for e in rest] == [e["uuid"] for e in every[2:]]


def test_hostile_and_unknown_requests(client):
    node = create(client)
    other = create(client)
    old = client.get(f"/v1/nodes/{node['uuid']}/history",
                     headers={"X-OpenStack-Ironic-API-Version": "1.77"})
    assert old.status_code == 404 and "1.78" in old.get_data(as_text=True)
    assert client.get(f"/v1/nodes/{uuid.uuid4()}/history", headers=LATEST).status_code == 404
    assert client.get(f"/v1/nodes/{node['uuid']}/history/{uuid.uuid4()}",
                      headers=LATEST).status_code == 404
    assert client.get(f"/v1/nodes/{node['uuid']}/history?marker=x' OR 1=1 --",
                      headers=LATEST).status_code == 400
    assert client.get(f"/v1/nodes/{node['uuid']}/history?limit=-1",
                      headers=LATEST).status_code == 400
    assert client.get(f"/v1/nodes/{node['uuid']}/history?detail=maybe",
                      headers=LATEST).status_code == 400
    # One node's event is not reachable through another node's URL.
    act(client, node["uuid"], "manage")
    wait_state(client, node["uuid"], "manageable")
    event = history(client, node["uuid"])[0]["uuid"]
    assert client.get(f"/v1/nodes/{other['uuid']}/history/{event}",
                      headers=LATEST).status_code == 404
    assert client.get(f"/v1/nodes/{other['uuid']}/history?marker={event}",
                      headers=LATEST).status_code == 400


def test_history_goes_with_the_node(make_app):
    client, appliance = make_app()
    node = create(client)
    act(client, node["uuid"], "manage")
    wait_state(client, node["uuid"], "manageable")
    assert appliance.service.node_history(node["uuid"])
    assert client.delete(f"/v1/nodes/{node['uuid']}", headers=LATEST).status_code == 204
    with appliance.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from node_history")).scalar() == 0


def test_rows_name_the_user_whose_request_caused_them(make_app, tmp_path):
    htpasswd = tmp_path / "htpasswd"
    name = "operator-with-a-name-longer-than-32-chars"
    htpasswd.write_text(f"{name}:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    client, _ = make_app({"api.auth_strategy": "http_basic",
                          "api.htpasswd_file": str(htpasswd)})
    auth = {"Authorization": "Basic " + base64.b64encode(f"{name}:pw".encode()).decode()}
    node = client.post("/v1/nodes", json={"driver": "fake-hardware"},
                       headers=dict(LATEST, **auth)).get_json()
    act_as = dict(LATEST, **auth)
    client.put(f"/v1/nodes/{node['uuid']}/states/provision", json={"target": "manage"},
               headers=act_as)
    wait_until(lambda: client.get(f"/v1/nodes/{node['uuid']}", headers=act_as).get_json()[
        "provision_state"] == "manageable", 10, 0.02, "the node to be manageable")
    events = client.get(f"/v1/nodes/{node['uuid']}/history?detail=true",
                        headers=act_as).get_json()["history"]
    # Both rows: the API thread's (to verifying) and the worker's (to manageable).
    assert [e["user"] for e in events] == [name[:32]] * 2
