"""The console's updates and conductors pages over a real in-process appliance: images
uploaded through the operator REST, instances made by Omaha checks rendered with the
host agent's wire code, a reboot lease taken with a host agent token. The actions need
the CSRF token (replays without it are refused and change nothing), pausing and
releasing are confirmed first, a bad lease maximum gets a clear message, no agent
token is rendered, and the change publisher tells open pages when instances or leases
change."""
from __future__ import annotations

import hashlib
import re

import pytest

from ramdisk_agent.wire import omaha
from tests.integration.updates.test_update_server import (
    BASE,
    _active_node_with_token,
    check,
    image_bytes,
    upload,
)

TOKEN_RE = re.compile(rb'name="csrf-token" content="([0-9a-f]*)"')
ALERT_RE = re.compile(rb'role="alert"[^>]*>([^<]*)')
A, B, C = "a" * 32, "b" * 32, "c" * 32


def _token(response) -> str:
    return TOKEN_RE.search(response.data).group(1).decode()


@pytest.fixture
def fleet(make_app):
    client, appliance = make_app({"updates.cache_ttl": 0.0})
    v1, v2 = image_bytes(1), image_bytes(2)
    upload(client, v1, "1.0.0")
    for machine in (A, B, C):
        check(client, "1.0.0", machine=machine)
    upload(client, v2, "2.0.0")
    assert check(client, "1.0.0", machine=A).updatecheck.status == "ok"
    check(client, "2.0.0", machine=A, updatecheck=False,
          events=[omaha.Event(3, 2, previous_version="1.0.0")])
    assert check(client, "1.0.0", machine=B).updatecheck.status == "ok"
    check(client, "1.0.0", machine=B, updatecheck=False,
          events=[omaha.Event(3, 0, error_code=44)])
    uuid, token = _active_node_with_token(client, appliance)
    held = client.post(f"{BASE}/leases", json={"node": uuid, "agent_token": token,
                                               "action": "acquire"})
    assert held.get_json()["held"] is True
    return client, appliance, {"v2": hashlib.sha256(v2).hexdigest(), "node": uuid,
                               "token": token}


def test_the_updates_page_shows_what_the_update_server_holds(fleet):
    client, _, seen = fleet
    page = client.get("/ui/updates")
    assert page.status_code == 200
    html = page.data
    assert seen["v2"].encode() in html                       # the image's sha256
    assert b'data-channel="stable"' in html and b"<td>2.0.0</td>" in html
    assert re.search(rb'id="counts-version">.*?1\.0\.0</span> <span class="n">2<', html, re.S)
    assert re.search(rb'id="counts-status">.*?complete</span> <span class="n">1<', html, re.S)
    assert b"44" in re.search(rb'data-instance="' + B.encode() + rb'".*?</tr>', html,
                              re.S).group(0)
    assert b'<svg id="rollout-chart"' in html and html.count(b"<polygon") >= 2
    assert b'data-lease="default/' + seen["node"].encode() in html   # the holder
    assert seen["token"].encode() not in html                        # never its token
    assert b'class="badge ok">enabled' in html
    assert re.search(rb'data-delta="1\.0\.0-2\.0\.0"', html)
    filtered = client.get("/ui/updates?status=complete&version=2.0.0")
    assert re.findall(rb'data-instance="(\w+)"', filtered.data) == [A.encode()]
    assert b"No instance matches" in client.get("/ui/updates?page=2").data


@pytest.mark.parametrize("query, words", [
    ("group=%3Cscript%3E", b"Invalid group"), ("status=" + "x" * 65, b"Invalid status"),
    ("page=0", b"page must be a whole number"), ("page=abc", b"page must be a whole")])
def test_a_bad_instance_filter_gets_a_clear_message(fleet, query, words):
    client, _, _ = fleet
    page = client.get(f"/ui/updates?{query}")
    assert page.status_code == 400 and words in ALERT_RE.search(page.data).group(1)
    assert b"<script>" not in page.data


def test_pausing_a_group_needs_the_token_and_its_confirmation(fleet):
    client, appliance, _ = fleet
    url = "/ui/updates/groups/" + appliance.updates.groups()[0]["appid"] + "/stable/pause"
    enabled = lambda: appliance.updates.group("stable")["updates_enabled"]  # noqa: E731
    for data, headers in (({}, {}), ({"csrf_token": "0" * 64}, {}),
                          ({"csrf_token": _token(client.get("/ui/updates")), "confirm": "yes"},
                           {"Origin": "http://evil.example"})):
        refused = client.post(url, data=data, headers=headers)
        assert refused.status_code == 403 and b"CSRF" in refused.data
    assert enabled() is True
    token = _token(client.get("/ui/updates"))
    asked = client.post(url, data={"csrf_token": token})
    assert asked.status_code == 200 and b'id="confirm-yes"' in asked.data
    assert b"Pausing stops new updates" in asked.data and enabled() is True
    done = client.post(url, data={"csrf_token": token, "confirm": "yes"})
    assert done.status_code == 303 and enabled() is False
    shown = client.get(done.headers["Location"])       # the page, not the POST, is re-read
    assert b'class="badge warn">paused' in shown.data
    assert b"Group stable: paused." in ALERT_RE.search(shown.data).group(1)
    assert check(client, "1.0.0", machine=C).status == "error-updatesDisabled"
    resumed = client.post(url.replace("/pause", "/resume"), data={"csrf_token": token})
    assert resumed.status_code == 303 and enabled() is True
    unknown = client.post(url.replace("/pause", "/wipe"), data={"csrf_token": token})
    assert unknown.status_code == 400 and b"Unknown action" in unknown.data
    missing = client.post(url.replace("/stable/", "/nosuch/"), data={"csrf_token": token})
    assert missing.status_code == 404


@pytest.mark.parametrize("given", ["abc", "-1", "", "1.5", "100001", "9" * 40, "1e3"])
def test_a_bad_lease_maximum_gets_a_clear_message_and_changes_nothing(fleet, given):
    client, appliance, _ = fleet
    token = _token(client.get("/ui/updates"))
    page = client.post("/ui/updates/leases/default/max", data={"csrf_token": token,
                                                                "max": given})
    assert page.status_code == 400
    assert b"must be a whole number 0-100000" in ALERT_RE.search(page.data).group(1)
    assert appliance.updates.leases.status()[0]["max"] == 1


def test_setting_the_lease_maximum_and_releasing_a_lease(fleet):
    client, appliance, seen = fleet
    url = "/ui/updates/leases/default/max"
    assert client.post(url, data={"max": "3"}).status_code == 403     # no token
    token = _token(client.get("/ui/updates"))
    done = client.post(url, data={"csrf_token": token, "max": "3"})
    assert done.status_code == 303 and appliance.updates.leases.status()[0]["max"] == 3
    release = f"/ui/updates/leases/default/holders/{seen['node']}/release"
    assert client.post(release, data={"confirm": "yes"}).status_code == 403
    asked = client.post(release, data={"csrf_token": token})
    assert b'id="confirm-yes"' in asked.data
    assert appliance.updates.leases.status()[0]["holders"]
    done = client.post(release, data={"csrf_token": token, "confirm": "yes"},
                       follow_redirects=True)
    assert done.status_code == 200 and appliance.updates.leases.status()[0]["holders"] == []
    assert b"was released" in done.data
    forged = client.get("/ui/updates?done=pause&what=%3Cb%3Ex")   # no reflected markup
    assert b"<b>x" not in forged.data and b"Group" not in ALERT_RE.search(
        forged.data + b'role="alert">').group(1)


def test_instance_and_lease_changes_reach_the_open_pages(fleet):
    client, appliance, seen = fleet
    feed = appliance.service.changes
    page = feed.subscribe()
    try:
        check(client, "1.0.0", machine="d" * 32)          # a new instance
        assert _wait_for(page, "updates")
        appliance.updates.leases.release("default", seen["node"])   # a lease let go
        assert _wait_for(page, "updates")
        assert not _wait_for(page, "updates", tries=3)     # nothing changed: no event
    finally:
        page.close()


def _wait_for(subscription, kind: str, tries: int = 40) -> bool:
    for _ in range(tries):
        if any(e["kind"] == kind for e in subscription.wait(0.25)):
            return True
    return False


def test_the_conductors_page_counts_the_nodes_the_ring_maps(fleet):
    client, appliance, _ = fleet
    appliance.service.create_node({"name": "far", "driver": "fake-hardware",
                                   "conductor_group": "nobody-serves-this"})
    page = client.get("/ui/conductors")
    assert page.status_code == 200
    row = re.search(rb'data-conductor="test-conductor">.*?</tr>', page.data, re.S).group(0)
    assert b"alive" in row and b"fake-hardware" in row
    assert re.search(rb'class="nodes-mapped">1<', row)
    assert b"1 node served by no live conductor" in page.data
    nav = client.get("/ui/fleet").data
    assert b'href="/ui/updates"' in nav and b'href="/ui/conductors"' in nav


@pytest.mark.parametrize("path, status, words", [
    ("/ui/updates/leases/default/holders/%3Cscript%3E/release", 404, b"&lt;script&gt;"),
    ("/ui/updates/leases/%3Cg%3E/holders/h1/release", 400, b"Invalid lease group"),
    ("/ui/updates/leases/" + "g" * 65 + "/max", 400, b"Invalid lease group"),
    ("/ui/updates/groups/%3Capp%3E/stable/resume", 400, b"Invalid app ID"),
    ("/ui/updates/groups/x/stable/resume", 404, b"No group"),
])
def test_hostile_action_paths_are_refused_and_change_nothing(fleet, path, status, words):
    client, appliance, seen = fleet
    token = _token(client.get("/ui/updates"))
    before = appliance.updates.leases.status(), appliance.updates.groups()
    answer = client.post(path, data={"csrf_token": token, "confirm": "yes", "max": "5"})
    assert answer.status_code == status, answer.data
    assert words in answer.data and b"<script>" not in answer.data
    assert (appliance.updates.leases.status(), appliance.updates.groups()) == before


def test_two_conductors_share_the_nodes_as_the_api_shows_them(make_app, tmp_path):
    shared = {"database.connection": f"sqlite:///{tmp_path / 'shared.sqlite'}"}
    client, first = make_app(shared)
    make_app({**shared, "conductor.host": "second-conductor"})
    made = [first.service.create_node({"name": f"n{i}", "driver": "fake-hardware"})
            for i in range(30)]
    shown = {}
    for node in made:   # each node's conductor as GET /v1/nodes/<node> names it
        body = client.get(f"/v1/nodes/{node.uuid}",
                          headers={"X-OpenStack-Ironic-API-Version": "latest"}).get_json()
        shown[body["conductor"]] = shown.get(body["conductor"], 0) + 1
    assert set(shown) == {"test-conductor", "second-conductor"}, shown
    page = client.get("/ui/conductors").data
    for host, count in shown.items():
        row = re.search(rb'data-conductor="' + host.encode() + rb'">.*?</tr>', page,
                        re.S).group(0)
        assert re.search(rb'class="nodes-mapped">' + str(count).encode() + rb'<', row), host
    assert b"0 nodes served by no live conductor" in page
