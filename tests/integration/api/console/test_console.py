"""The console's pages through Flask's test client over a real SQLite appliance:
server-side filters and paging, hostile input refused with a clear message, CSRF
replayed (no token, another session's token, another origin), secrets never
rendered, destructive actions confirmed, authentication and the change feed."""
from __future__ import annotations

import base64
import datetime
import io
import re

import bcrypt
import pytest

from api import create_app

TOKEN_RE = re.compile(rb'name="csrf-token" content="([0-9a-f]*)"')
ALERT_RE = re.compile(rb'role="alert"[^>]*>([^<]*)')


def _token(response) -> str:
    return TOKEN_RE.search(response.data).group(1).decode()


@pytest.fixture
def console(make_app):
    client, appliance = make_app()
    svc = appliance.service
    for i, (driver, group) in enumerate((("fake-hardware", "rack1"), ("fake-hardware", "rack2"),
                                         ("fake-hardware", "rack1"))):
        svc.create_node({"name": f"web-{i}", "driver": driver, "conductor_group": group,
                         "driver_info": {"ipmi_password": "s3cret-pw", "fake_delay": 0},
                         "instance_info": {"image_source": "http://x/img",
                                           "agent_token": "tok-abc"}})
    return client, appliance


def test_fleet_filters_sorts_and_pages_on_the_server(console):
    client, appliance = console
    appliance.service.set_maintenance("web-1", True, "fan")
    page = client.get("/ui/fleet?group=rack1&sort=name&dir=desc")
    assert page.status_code == 200
    names = re.findall(rb'<td><a [^>]*>(web-\d)</a>', page.data)
    assert names == [b"web-2", b"web-0"]
    page = client.get("/ui/fleet?maintenance=yes")
    assert re.findall(rb'<td><a [^>]*>(web-\d)</a>', page.data) == [b"web-1"]
    page = client.get("/ui/fleet?q=WEB-2")
    assert re.findall(rb'<td><a [^>]*>(web-\d)</a>', page.data) == [b"web-2"]
    page = client.get("/ui/fleet?size=25&page=2")   # past the end: an empty page, no error
    assert b"No node matches" in page.data


@pytest.mark.parametrize("query, words", [
    ("page=abc", b"page must be a whole number"),
    ("page=0", b"page must be a whole number"),
    ("size=1000000", b"size must be one of"),
    ("sort=driver_info", b"Cannot sort by"),
    ("state=%3Cscript%3E", b"Unknown state"),
    ("maintenance=maybe", b"maintenance must be yes, no or any"),
    ("q=" + "a" * 300, b"Search text is at most 255"),
])
def test_a_bad_fleet_query_gets_a_clear_message(console, query, words):
    client, _ = console
    page = client.get(f"/ui/fleet?{query}")
    assert page.status_code == 400
    assert words in page.data
    assert b"<script>" not in page.data      # what was sent is escaped, never markup


def test_no_secret_is_rendered(console):
    client, _ = console
    page = client.get("/ui/nodes/web-0")
    assert page.status_code == 200
    assert b"s3cret-pw" not in page.data and b"tok-abc" not in page.data
    assert b"******" in page.data


def test_csrf_replay_is_refused(console):
    client, appliance = console
    page = client.get("/ui/nodes/web-0")
    token = _token(page)
    url = "/ui/nodes/web-0/actions/maintenance-on"
    # no token; a forged one; the right one from another site (Origin, Sec-Fetch-Site)
    for data, headers in (({}, {}), ({"csrf_token": "0" * 64}, {}),
                          ({"csrf_token": token}, {"Origin": "http://evil.example"}),
                          ({"csrf_token": token}, {"Sec-Fetch-Site": "cross-site"})):
        refused = client.post(url, data=data, headers=headers)
        assert refused.status_code == 403, (data, headers)
        assert b"CSRF" in refused.data
    assert appliance.service.get_node("web-0").maintenance is False
    # the token replayed from another browser (its own cookie) is refused too
    other = create_app(appliance.service).test_client()
    other.get("/ui/fleet")
    assert other.post(url, data={"csrf_token": token}).status_code == 403
    assert appliance.service.get_node("web-0").maintenance is False
    done = client.post(url, data={"csrf_token": token, "reason": "disk"},
                       headers={"Origin": "http://localhost"})
    assert done.status_code == 303
    assert appliance.service.get_node("web-0").maintenance_reason == "disk"


def test_a_destructive_action_needs_its_confirmation(console):
    client, appliance = console
    token = _token(client.get("/ui/nodes/web-0"))
    before = appliance.service.get_node("web-0").target_power_state
    asked = client.post("/ui/nodes/web-0/actions/power-off", data={"csrf_token": token})
    assert asked.status_code == 200 and b'id="confirm-yes"' in asked.data
    assert b"Powering off stops" in asked.data
    assert appliance.service.get_node("web-0").target_power_state == before
    done = client.post("/ui/nodes/web-0/actions/power-off",
                       data={"csrf_token": token, "confirm": "yes"})
    assert done.status_code == 303


def test_bad_action_input_gets_a_clear_message(console):
    client, appliance = console
    token = _token(client.get("/ui/nodes/web-0"))
    long = client.post("/ui/nodes/web-0/actions/maintenance-on",
                       data={"csrf_token": token, "reason": "x" * 300})
    assert long.status_code == 400
    assert b"at most 255 characters (this one has 300)" in long.data
    assert appliance.service.get_node("web-0").maintenance is False
    unknown = client.post("/ui/nodes/web-0/actions/format-disk", data={"csrf_token": token})
    assert unknown.status_code == 400 and b"Unknown action" in unknown.data
    refused = client.post("/ui/nodes/web-0/actions/deploy", data={"csrf_token": token})
    assert refused.status_code == 400 and b"Deploy was refused" in refused.data
    assert b"while it is in state &#34;enroll&#34;" in refused.data
    missing = client.get("/ui/nodes/no-such-node")
    assert missing.status_code == 404 and b"no-such-node" in missing.data


def test_patch_page_refuses_bad_names_and_files(console):
    client, _ = console
    token = _token(client.get("/ui/patches"))
    bad = client.post("/ui/patches/..%2F..%2Fetc/delete", data={"csrf_token": token,
                                                              "confirm": "yes"})
    assert bad.status_code in (400, 404)
    nofile = client.post("/ui/patches/upload", data={"csrf_token": token})
    assert nofile.status_code == 400 and b"Choose a .patch file" in nofile.data
    wrong = client.post("/ui/patches/upload", data={
        "csrf_token": token, "file": (io.BytesIO(b"not a tar"), "../evil.patch")},
        content_type="multipart/form-data")
    assert wrong.status_code == 400
    # the directory part dropped; the controller's own refusal shown as is
    assert b"Patch validation failed for evil:" in wrong.data
    confirm = client.post("/ui/patches/P_1/delete", data={"csrf_token": token})
    assert b'id="confirm-yes"' in confirm.data


def test_the_console_is_behind_basic_auth(make_app, tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("op:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    client, _ = make_app({"api.auth_strategy": "http_basic", "api.htpasswd_file": str(htpasswd)})
    for path in ("/ui/fleet", "/ui/events", "/ui/static/console.js", "/ui/patches"):
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["WWW-Authenticate"].startswith("Basic ")
    good = {"Authorization": "Basic " + base64.b64encode(b"op:pw").decode()}
    page = client.get("/ui/fleet", headers=good)
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_the_feed_publishes_a_node_change_once_for_every_page(console):
    _, appliance = console
    feed = appliance.service.changes
    first, second = feed.subscribe(), feed.subscribe()
    try:
        ticks = feed.ticks
        appliance.service.set_maintenance("web-2", True, "psu")
        seen = []
        for _ in range(50):
            seen += [e for e in first.wait(0.5) if e["kind"] == "node"]
            if any(e["name"] == "web-2" and e["maintenance"] for e in seen):
                break
        assert any(e["name"] == "web-2" and e["maintenance"] for e in seen)
        other = [e for e in second.wait(0.5) if e["kind"] == "node"]
        assert any(e["name"] == "web-2" for e in other)
        assert feed.ticks > ticks   # one publisher looked, not one per page
    finally:
        first.close()
        second.close()


def test_a_change_between_the_page_and_its_stream_is_not_lost(console):
    client, appliance = console
    feed = appliance.service.changes
    page = client.get("/ui/nodes/web-1")            # takes the feed's cursor first
    since = int(re.search(rb'/ui/events\?since=(\d+)', page.data).group(1))
    appliance.service.set_maintenance("web-1", True, "changed before the stream opened")
    for _ in range(50):                              # the publisher has looked meanwhile
        if feed.cursor() > since:
            break
        feed.subscribe().wait(0.2)
    late = feed.subscribe(since)
    try:
        events = late.wait(0.5)
        assert any(e.get("name") == "web-1" and e.get("maintenance") for e in events)
    finally:
        late.close()
    assert client.get("/ui/events?since=abc").status_code == 400


def test_counts_mix_nodes_with_and_without_a_power_state(console):
    client, appliance = console
    node = appliance.service.get_node("web-0")
    appliance.service.store.update_node(node.id, {"power_state": "power on"})
    page = client.get("/ui/fleet")          # None and "power on" in one GROUP BY
    assert page.status_code == 200
    counts = appliance.service.fleet.counts()
    assert counts["power_state"] == {"none": 2, "power on": 1}
    assert counts["maintenance"] == {"no": 3} and counts["total"] == {"all": 3}


def test_the_orchestration_page_shows_phases_stages_steps_and_goes_live(console):
    client, appliance = console
    empty = client.get("/ui/orchestration")
    assert empty.status_code == 200 and b'id="no-strategy"' in empty.data
    watching = appliance.service.changes.subscribe()
    try:
        created = client.post("/api/orchestration/sw-patch/strategy", json={
            "controller-apply-type": "serial", "storage-apply-type": "serial",
            "worker-apply-type": "serial", "default-instance-action": "stop-start",
            "alarm-restrictions": "strict", "swift-apply-type": "ignore"})
        assert created.status_code == 200, created.data
        kinds = set()
        for _ in range(50):
            kinds |= {e["kind"] for e in watching.wait(0.2)}
            if "strategy" in kinds:
                break
        assert "strategy" in kinds        # the page re-reads itself on this event
    finally:
        watching.close()
    page = client.get("/ui/orchestration")
    assert page.status_code == 200
    for words in (b"sw-patch strategy", b"build-failed", b"query-alarms",
                  b"no software patches found", b'id="live-region"'):
        assert words in page.data, words


def test_hosts_and_patch_ids_are_checked(console):
    client, _ = console
    token = _token(client.get("/ui/patches"))
    bad = client.post("/ui/hosts/bad;name/install", data={"csrf_token": token})
    assert bad.status_code == 400 and b"Invalid host name" in bad.data
    unknown = client.post("/ui/hosts/no-such-host/install", data={"csrf_token": token})
    assert unknown.status_code == 400 and b"no-such-host" in unknown.data
    shown = client.get("/ui/patches?show=%3Cb%3E")
    assert shown.status_code == 400 and b"<b>" not in shown.data


def test_the_publisher_stops_with_the_appliance(make_app):
    _, appliance = make_app()
    feed = appliance.service.changes
    feed.subscribe().close()
    thread = feed._thread
    assert thread is not None and thread.is_alive()
    appliance.stop()
    thread.join(5)
    assert not thread.is_alive()


def test_markup_in_node_data_is_shown_as_text(console):
    client, appliance = console
    node = appliance.service.get_node("web-0")
    appliance.service.store.update_node(node.id, {
        "properties": {"<img src=x onerror=alert(1)>": "</dd><script>alert(2)</script>"},
        "last_error": "<script>alert(3)</script>"})
    page = client.get("/ui/nodes/web-0")
    assert page.status_code == 200
    assert b"<script>alert" not in page.data and b"<img src=x" not in page.data
    assert b"&lt;script&gt;alert(3)&lt;/script&gt;" in page.data


def test_a_wrong_password_is_refused(make_app, tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("op:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    client, _ = make_app({"api.auth_strategy": "http_basic", "api.htpasswd_file": str(htpasswd)})
    wrong = {"Authorization": "Basic " + base64.b64encode(b"op:nope").decode()}
    refused = client.get("/ui/fleet", headers=wrong)
    assert refused.status_code == 401 and b"Invalid user name or password" in refused.data
    assert b'name="csrf-token" content=""' in refused.data   # no token for a stranger


def test_a_write_committed_after_a_newer_one_is_still_published(console):
    """updated_at is taken before the commit: a slower transaction lands with an older
    time than one the publisher has already seen."""
    _, appliance = console
    svc = appliance.service
    watching = svc.changes.subscribe()
    try:
        svc.set_maintenance("web-0", True, "newer write")
        seen = []
        for _ in range(50):
            seen += watching.wait(0.2)
            if any(e.get("name") == "web-0" for e in seen):
                break
        assert any(e.get("name") == "web-0" for e in seen)
        older = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
        svc.store.update_node(svc.get_node("web-1").id,
                              {"maintenance": True, "updated_at": older})
        late = []
        for _ in range(50):
            late += watching.wait(0.2)
            if any(e.get("name") == "web-1" for e in late):
                break
        assert any(e.get("name") == "web-1" and e["maintenance"] for e in late)
        assert not any(e.get("name") == "web-0" for e in late)   # not sent twice
    finally:
        watching.close()
