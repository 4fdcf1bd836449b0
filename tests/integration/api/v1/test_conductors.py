"""GET /v1/conductors and a node's conductor through the app, over a real SQLite store."""
import datetime

import pytest

from conductor.db.conductors import ConductorRows
from tests.waiting import wait_until

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
V149 = {"X-OpenStack-Ironic-API-Version": "1.49"}


@pytest.fixture
def app(make_app):
    return make_app({"conductor.conductor_group": ""})


def wait_state(client, ident, state):
    return wait_until(lambda: client.get(f"/v1/nodes/{ident}", headers=LATEST).get_json()[
        "provision_state"] == state, 20, 0.02, f"node {ident} to reach {state}")


def _ghost(appliance, name, group="", alive=True, types=("fake-hardware",)):
    """Another conductor's row, alive (a fresh heartbeat) or dead (two timeouts old)."""
    now = datetime.datetime.now(datetime.UTC)
    seen = now if alive else now - datetime.timedelta(seconds=121)
    ConductorRows(appliance.engine).register(name, group, list(types), seen,
                                             seen - datetime.timedelta(seconds=60))


def test_list_shows_this_conductor_alive(app):
    client, appliance = app
    body = client.get("/v1/conductors", headers=LATEST).get_json()
    assert [c["hostname"] for c in body["conductors"]] == ["test-conductor"]
    only = body["conductors"][0]
    assert set(only) == {"hostname", "conductor_group", "alive", "links"}
    assert only["alive"] is True and only["conductor_group"] == ""
    assert only["links"][0]["href"].endswith("/v1/conductors/test-conductor")
    assert "next" not in body


def test_detail_and_show_have_every_field(app):
    client, _ = app
    detail = client.get("/v1/conductors?detail=true", headers=LATEST).get_json()
    show = client.get("/v1/conductors/test-conductor", headers=LATEST).get_json()
    for one in (detail["conductors"][0], show):
        assert set(one) == {"hostname", "conductor_group", "alive", "drivers",
                            "created_at", "updated_at", "links"}
        assert one["drivers"] == ["fake-hardware", "ipmi", "redfish"]
        assert one["created_at"].endswith("+00:00")


def test_fields_and_paging(app):
    client, appliance = app
    for name in ("c-b", "c-a", "c-c"):
        _ghost(appliance, name)
    body = client.get("/v1/conductors?fields=hostname&limit=2&sort_key=hostname",
                      headers=LATEST).get_json()
    assert [c["hostname"] for c in body["conductors"]] == ["c-a", "c-b"]
    assert set(body["conductors"][0]) == {"hostname", "links"}
    assert "marker=c-b" in body["next"]
    rest = client.get(body["next"].split("://", 1)[1].split("/", 1)[1].join(["/", ""]),
                      headers=LATEST).get_json()
    assert [c["hostname"] for c in rest["conductors"]] == ["c-c", "test-conductor"]
    desc = client.get("/v1/conductors?sort_key=hostname&sort_dir=desc", headers=LATEST)
    assert [c["hostname"] for c in desc.get_json()["conductors"]][0] == "test-conductor"


def test_a_dead_conductor_is_listed_not_alive_and_maps_no_node(app):
    client, appliance = app
    _ghost(appliance, "dead-one", alive=False)
    appliance.ring.invalidate()
    body = client.get("/v1/conductors", headers=LATEST).get_json()
    assert {c["hostname"]: c["alive"] for c in body["conductors"]} == {
        "test-conductor": True, "dead-one": False}
    for i in range(20):
        client.post("/v1/nodes", json={"driver": "fake-hardware", "name": f"n{i}"},
                    headers=LATEST)
    nodes = client.get("/v1/nodes/detail", headers=LATEST).get_json()["nodes"]
    assert {n["conductor"] for n in nodes} == {"test-conductor"}


def test_node_conductor_is_the_ring_choice_and_none_without_a_live_one(app):
    client, appliance = app
    _ghost(appliance, "other-live")
    appliance.ring.invalidate()
    made = [client.post("/v1/nodes", json={"driver": "fake-hardware"},
                        headers=LATEST).get_json() for _ in range(40)]
    seen = {n["conductor"] for n in made}
    assert seen == {"test-conductor", "other-live"}      # 40 nodes: both get some
    for node in made:
        one = client.get(f"/v1/nodes/{node['uuid']}?fields=conductor", headers=LATEST)
        assert one.get_json()["conductor"] == node["conductor"]
    grouped = client.post("/v1/nodes", json={"driver": "fake-hardware",
                                             "conductor_group": "rack9"},
                          headers=LATEST).get_json()
    assert grouped["conductor"] is None
    old = client.get(f"/v1/nodes/{grouped['uuid']}", headers={
        "X-OpenStack-Ironic-API-Version": "1.48"}).get_json()
    assert "conductor" not in old


@pytest.mark.parametrize("query, status", [
    ("?sort_key=alive", 400), ("?sort_key=drivers", 400), ("?sort_key=nope", 400),
    ("?sort_dir=sideways", 400), ("?fields=password", 400), ("?limit=-1", 400),
    ("?limit=abc", 400), ("?detail=maybe", 400), ("?detail=true&fields=hostname", 400),
    ("?marker=no-such-conductor", 404), ("?sort_key=hostname%00", 400),
    ("?marker=" + "x" * 5000, 404),
])
def test_hostile_queries_are_clear_errors(app, query, status):
    client, _ = app
    response = client.get(f"/v1/conductors{query}", headers=LATEST)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["error_message"]


def test_unknown_and_hostile_names_are_404(app):
    client, _ = app
    for name in ("nope", "..%2F..%2Fetc", "%27%20OR%201%3D1--", "x" * 3000, "%E2%80%AE"):
        response = client.get(f"/v1/conductors/{name}", headers=LATEST)
        assert response.status_code == 404, name
        if "%2F" not in name:       # a slash is no conductor route at all
            assert "baremetal conductor list" in response.get_data(as_text=True)


def test_below_149_the_resource_does_not_exist(app):
    client, _ = app
    for path in ("/v1/conductors", "/v1/conductors/test-conductor"):
        assert client.get(path, headers={"X-OpenStack-Ironic-API-Version": "1.48"}
                          ).status_code == 404
        assert client.get(path, headers=V149).status_code == 200


def test_deploy_in_a_group_without_a_live_conductor_is_a_clear_400(app):
    client, _ = app
    node = client.post("/v1/nodes", json={"driver": "fake-hardware", "name": "lonely",
                                          "conductor_group": "rack-7"},
                       headers=LATEST).get_json()
    for target, state in (("manage", "manageable"), ("provide", "available")):
        assert client.put(f"/v1/nodes/{node['uuid']}/states/provision",
                          json={"target": target}, headers=LATEST).status_code == 202
        wait_state(client, node["uuid"], state)
    refused = client.put(f"/v1/nodes/{node['uuid']}/states/provision",
                         json={"target": "active"}, headers=LATEST)
    assert refused.status_code == 400
    text = refused.get_data(as_text=True)
    assert "No valid host" in text and "rack-7" in text and "fake-hardware" in text
    after = client.get(f"/v1/nodes/{node['uuid']}", headers=LATEST).get_json()
    assert (after["provision_state"], after["reservation"]) == ("available", None)
    # the default group keeps working exactly as before
    plain = client.post("/v1/nodes", json={"driver": "fake-hardware"},
                        headers=LATEST).get_json()
    for target, state in (("manage", "manageable"), ("provide", "available"),
                          ("active", "active")):
        assert client.put(f"/v1/nodes/{plain['uuid']}/states/provision",
                          json={"target": target}, headers=LATEST).status_code == 202
        wait_state(client, plain["uuid"], state)


def test_the_conductor_filter_is_the_ring_choice_and_pages_without_gaps(app):
    client, appliance = app
    _ghost(appliance, "other-live")
    appliance.ring.invalidate()
    made = [client.post("/v1/nodes", json={"driver": "fake-hardware"},
                        headers=LATEST).get_json() for _ in range(30)]
    expected = {name: {n["uuid"] for n in made if n["conductor"] == name}
                for name in ("test-conductor", "other-live")}
    for name, uuids in expected.items():
        whole = client.get(f"/v1/nodes?conductor={name}", headers=LATEST).get_json()
        assert {n["uuid"] for n in whole["nodes"]} == uuids
        seen, url = [], f"/v1/nodes?conductor={name}&limit=4"
        while url:
            page = client.get(url, headers=LATEST).get_json()
            seen += [n["uuid"] for n in page["nodes"]]
            url = page.get("next", "").partition("localhost")[2] or None
        assert sorted(seen) == sorted(uuids) and len(seen) == len(set(seen))
    assert client.get("/v1/nodes?conductor=nobody", headers=LATEST).get_json()["nodes"] == []
    old = client.get("/v1/nodes?conductor=other-live",
                     headers={"X-OpenStack-Ironic-API-Version": "1.48"})
    assert old.status_code == 406
