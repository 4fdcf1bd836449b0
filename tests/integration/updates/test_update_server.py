"""The update server over a real in-process appliance (SQLite, Flask's test client):
an image uploaded to a channel is offered to an Omaha client rendered with the wire
code the host agent uses; its events move the instance; a rollback report halts a
safe-mode group; a second version gets a delta built by the background builder; a
version a channel points at cannot be deleted; reboot leases with the host agent's
token."""
from __future__ import annotations

import hashlib
import io
import os
import time

import pytest
from cryptography.hazmat.primitives import serialization

from conductor.updates.catalogue import METALCAST_APPID
from ramdisk_agent.wire import delta_format, image_signature, omaha
from tests.waiting import wait_until

BASE = "/updates/v1"
MACHINE = "0123456789abcdef0123456789abcdef"
LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}


def image_bytes(seed: int, size: int = 256 * 1024) -> bytes:
    data = bytearray(size)
    data[:4096] = os.urandom(4096)        # the parts that differ between versions
    data[8192 + seed:8192 + seed + 16] = bytes([seed]) * 16
    return bytes(data)


def check(client, version="1.0.0", machine=MACHINE, track="stable", events=(),
          updatecheck=True, delta_okay=False, appid=METALCAST_APPID):
    body = omaha.render_request(omaha.Request((omaha.AppRequest(
        appid, version, track, machineid=machine, bootid="{b}", delta_okay=delta_okay,
        updatecheck=updatecheck, ping=True, events=tuple(events)),)))
    response = client.post("/v1/update/", data=body, content_type="text/xml")
    assert response.status_code == 200, response.get_data()
    return omaha.parse_response(response.get_data()).apps[0]


def upload(client, data: bytes, version: str, channel="stable", status=201):
    response = client.post(f"{BASE}/images?version={version}&channel={channel}",
                           data=data, content_type="application/octet-stream")
    assert response.status_code == status, response.get_data()
    return response.get_json()


@pytest.fixture
def app(make_app):
    return make_app({"updates.cache_ttl": 0.0})


def test_upload_offer_events_and_delta(app):
    client, appliance = app
    v1, v2 = image_bytes(1), image_bytes(2)
    shown = upload(client, v1, "1.0.0")
    assert shown["sha256"] == hashlib.sha256(v1).hexdigest() and shown["size"] == len(v1)
    assert shown["channels"] == ["stable"]
    key = serialization.load_pem_public_key(client.get(f"{BASE}/key").get_data())

    assert check(client, "1.0.0").updatecheck.status == "noupdate"
    upload(client, v2, "2.0.0")
    answer = check(client, "1.0.0")
    assert answer.status == "ok" and answer.updatecheck.status == "ok"
    manifest = answer.updatecheck.manifest
    assert manifest.version == "2.0.0" and not manifest.is_delta
    assert manifest.sha256 == hashlib.sha256(v2).digest()
    image_signature.verify(key, manifest.signature, manifest.sha256, len(v2), "2.0.0")
    url = answer.updatecheck.payload_urls[0]
    assert url.endswith(f"{BASE}/payloads/{hashlib.sha256(v2).hexdigest()}")
    payload = client.get(url[url.index(BASE):])
    assert payload.get_data() == v2
    resumed = client.get(url[url.index(BASE):], headers={"Range": "bytes=1000-"})
    assert resumed.status_code == 206 and resumed.get_data() == v2[1000:]

    for event, status in (((13, 1), "downloading"), ((14, 1), "downloaded"),
                          ((3, 1), "installed")):
        check(client, "1.0.0", events=[omaha.Event(*event)], updatecheck=False)
        assert client.get(f"{BASE}/instances/{MACHINE}").get_json()["status"] == status
    check(client, "2.0.0", events=[omaha.Event(3, 2, previous_version="1.0.0")],
          updatecheck=False)
    shown = client.get(f"{BASE}/instances/{MACHINE}").get_json()
    assert (shown["status"], shown["version"]) == ("complete", "2.0.0")
    assert [h["status"] for h in shown["history"]] == [
        "granted", "downloading", "downloaded", "installed", "complete"]

    wait_until(lambda: client.get(f"{BASE}/images/2.0.0").get_json()["deltas"][0]["state"]
               in ("ready", "error"), 30, 0.05, "the delta build")
    delta = client.get(f"{BASE}/images/2.0.0").get_json()["deltas"][0]
    assert (delta["from_version"], delta["state"]) == ("1.0.0", "ready"), delta
    other = "fedcba9876543210fedcba9876543210"
    offered = check(client, "1.0.0", machine=other, delta_okay=True).updatecheck.manifest
    assert offered.is_delta and offered.packages[0].name == delta["sha256"]
    blob = client.get(f"{BASE}/payloads/{delta['sha256']}").get_data()
    assert hashlib.sha256(blob).digest() == offered.sha256
    parsed, _ = delta_format.read_header(io.BytesIO(blob), key)   # signed by our key
    assert parsed.version == "2.0.0" and parsed.target_size == len(v2)
    full = check(client, "1.0.0", machine="f" * 32, delta_okay=False).updatecheck.manifest
    assert not full.is_delta


def test_delete_refused_while_a_channel_points_at_the_version(app):
    client, _ = app
    upload(client, image_bytes(1), "1.0.0")
    refused = client.delete(f"{BASE}/images/1.0.0")
    assert refused.status_code == 409
    assert "current version of channel stable" in refused.get_json()["error_message"]
    upload(client, image_bytes(2), "2.0.0")
    assert client.delete(f"{BASE}/images/1.0.0").status_code == 204
    assert client.get(f"{BASE}/images/1.0.0").status_code == 404


def test_rollback_report_halts_a_safe_mode_group(app):
    client, _ = app
    upload(client, image_bytes(1), "1.0.0")
    response = client.put(f"{BASE}/groups/stable", json={"safe_mode": True})
    assert response.status_code == 200 and response.get_json()["safe_mode"] is True
    upload(client, image_bytes(2), "2.0.0")
    assert check(client, "1.0.0", machine="a" * 32).updatecheck.status == "ok"
    # safe mode: the first instance is alone until it is done
    assert check(client, "1.0.0", machine="b" * 32).status == \
        "error-maxConcurrentUpdatesLimitReached"
    check(client, "1.0.0", machine="a" * 32, updatecheck=False,
          events=[omaha.Event(3, 0, error_code=44)])
    shown = client.get(f"{BASE}/instances/{'a' * 32}").get_json()
    assert shown["status"] == "error" and shown["error_code"] == 44
    assert "rollback" in shown["error_text"]
    group = client.get(f"{BASE}/groups/stable").get_json()
    assert "rollback" in group["halted_reason"]
    assert check(client, "1.0.0", machine="b" * 32).status == "error-updatesDisabled"
    client.put(f"{BASE}/groups/stable", json={"updates_enabled": True})   # resume
    assert check(client, "1.0.0", machine="b" * 32).updatecheck.status == "ok"
    # the rolled-back instance is not offered the same version again
    assert check(client, "1.0.0", machine="a" * 32).updatecheck.status == "noupdate"


def test_a_timed_out_update_halts_a_safe_mode_group(app):
    """Nebraska: in safe mode, the first instance's update that never finishes within
    the update timeout stops the roll-out (error-maxTimedOutUpdatesLimitReached) and
    disables the group; until the timeout it holds the others back."""
    client, _ = app
    upload(client, image_bytes(1), "1.0.0")
    group = client.put(f"{BASE}/groups/stable", json={"safe_mode": True, "update_timeout": 1})
    assert group.status_code == 200, group.get_data()
    upload(client, image_bytes(2), "2.0.0")
    assert check(client, "1.0.0", machine="a" * 32).updatecheck.status == "ok"
    check(client, "1.0.0", machine="a" * 32, updatecheck=False,
          events=[omaha.Event(13, 1)])                       # downloading, then silence
    statuses = []

    def stopped() -> bool:
        statuses.append(check(client, "1.0.0", machine="b" * 32).status)
        return statuses[-1] != "error-maxConcurrentUpdatesLimitReached"
    wait_until(stopped, timeout=30, interval=0.2)
    assert statuses[-1] == "error-maxTimedOutUpdatesLimitReached", statuses
    halted = client.get(f"{BASE}/groups/stable").get_json()["halted_reason"]
    assert "timed out" in halted and "2.0.0" in halted
    assert check(client, "1.0.0", machine="c" * 32).status == "error-updatesDisabled"
    assert client.get(f"{BASE}/instances/{'b' * 32}").get_json()["status"] != "granted"


def test_concurrent_updates_are_capped_outside_safe_mode(app):
    """Nebraska: the per-period maximum also caps the instances updating at once, so a
    new period does not let more start while the last ones are still updating."""
    client, _ = app
    upload(client, image_bytes(1), "1.0.0")
    client.put(f"{BASE}/groups/stable", json={"max_updates_per_period": 2,
                                              "period_interval": 1})
    upload(client, image_bytes(2), "2.0.0")
    assert check(client, "1.0.0", machine="a" * 32).updatecheck.status == "ok"
    assert check(client, "1.0.0", machine="b" * 32).updatecheck.status == "ok"
    time.sleep(1.1)                   # the 1 s period is over: only updating ones count
    assert check(client, "1.0.0", machine="c" * 32).status == \
        "error-maxConcurrentUpdatesLimitReached"
    check(client, "2.0.0", machine="a" * 32, updatecheck=False,
          events=[omaha.Event(3, 2, previous_version="1.0.0")])   # a is done
    assert check(client, "1.0.0", machine="c" * 32).updatecheck.status == "ok"


def test_unknown_application_or_group_registers_nothing(app):
    client, appliance = app
    upload(client, image_bytes(1), "1.0.0")
    assert check(client, track="nosuch").status == "error-unknownApplicationOrGroup"
    assert check(client, appid=omaha.FLATCAR_APPID).status == \
        "error-unknownApplicationOrGroup"
    assert client.get(f"{BASE}/instances").get_json() == {"instances": []}


def test_flatcar_appid_works_when_configured(app):
    client, _ = app
    response = client.post(f"{BASE}/images?version=3000.0.0&channel=beta&appid="
                           f"{omaha.FLATCAR_APPID}", data=image_bytes(1))
    assert response.status_code == 201
    answer = check(client, "2900.0.0", track="beta", appid=omaha.FLATCAR_APPID)
    assert answer.updatecheck.manifest.version == "3000.0.0"


def _active_node_with_token(client, appliance):
    node = client.post("/v1/nodes", json={"driver": "fake-hardware", "name": "h1",
                                          "automated_clean": False}, headers=LATEST)
    uuid = node.get_json()["uuid"]
    for target, state in (("manage", "manageable"), ("adopt", "active")):
        client.put(f"/v1/nodes/{uuid}/states/provision", json={"target": target},
                   headers=LATEST)
        wait_until(lambda s=state: appliance.store.get_node(uuid).provision_state == s
                   and appliance.store.get_node(uuid).reservation is None, 10, 0.05, state)
    issued = client.post(f"/v1/nodes/{uuid}/vendor_passthru?method=issue_host_agent_token",
                         headers=LATEST).get_json()
    return uuid, issued["token"]


def test_leases_with_the_host_agent_token(app):
    client, appliance = app
    uuid, token = _active_node_with_token(client, appliance)
    body = {"node": uuid, "agent_token": token, "action": "acquire"}
    held = client.post(f"{BASE}/leases", json=body)
    assert held.status_code == 200, held.get_data()
    assert held.get_json() | {"expires_at": None} == {
        "held": True, "group": "default", "holder": uuid, "ttl": 300.0, "max": 1,
        "holders": 1, "expires_at": None}
    wrong = client.post(f"{BASE}/leases", json=dict(body, agent_token="x" * 43))
    assert wrong.status_code == 401
    unknown = client.post(f"{BASE}/leases", json=dict(body, node="h2"))
    assert unknown.status_code == 401
    status = client.get(f"{BASE}/leases").get_json()["groups"][0]
    assert [h["holder"] for h in status["holders"]] == [uuid]
    released = client.post(f"{BASE}/leases", json=dict(body, action="release"))
    assert released.get_json()["held"] is False and released.get_json()["holders"] == 0
    assert client.put(f"{BASE}/leases/default", json={"max": 0}).status_code == 200
    full = client.post(f"{BASE}/leases", json=body)
    assert full.status_code == 409 and full.get_json()["retry_after"] > 0


def test_a_machine_id_that_is_a_node_uuid_shows_the_node(app):
    client, appliance = app
    upload(client, image_bytes(1), "1.0.0")
    node = client.post("/v1/nodes", json={"driver": "fake-hardware", "name": "n1"},
                       headers=LATEST).get_json()["uuid"]
    check(client, "0.9.0", machine=node.replace("-", ""))
    shown = client.get(f"{BASE}/instances/{node}").get_json()      # by node UUID
    assert shown["node_uuid"] == node and shown["status"] == "granted"
    listed = client.get(f"{BASE}/instances?status=granted").get_json()["instances"]
    assert [i["node_uuid"] for i in listed] == [node]
    check(client, "0.9.0", machine="9" * 32)
    assert client.get(f"{BASE}/instances/{'9' * 32}").get_json()["node_uuid"] is None


def test_a_forged_rollback_report_cannot_halt_a_safe_mode_group(app):
    client, _ = app
    upload(client, image_bytes(1), "1.0.0")
    client.put(f"{BASE}/groups/stable", json={"safe_mode": True})
    # a machine id nobody granted anything reports a rollback: recorded, no halt
    check(client, "1.0.0", machine="7" * 32, updatecheck=False,
          events=[omaha.Event(3, 0, error_code=44)])
    assert client.get(f"{BASE}/instances/{'7' * 32}").get_json()["error_code"] == 44
    assert client.get(f"{BASE}/groups/stable").get_json()["halted_reason"] is None


def test_new_instances_per_client_address_are_bounded(app):
    client, appliance = app
    upload(client, image_bytes(1), "1.0.0")
    # three tokens and no refill: at 20 a second, a check slower than 50 ms on a loaded
    # machine would have earned the fourth one back
    registrations = appliance.updates.omaha.registrations
    registrations.burst, registrations.rate = 3, 0.0
    answers = [check(client, "1.0.0", machine=f"{n:032x}").status for n in range(5)]
    assert answers == ["ok"] * 3 + ["error-instanceRegistrationFailed"] * 2
    assert len(client.get(f"{BASE}/instances").get_json()["instances"]) == 3
    assert check(client, "1.0.0", machine=f"{0:032x}").status == "ok"   # known: fine


def test_floors_and_the_per_period_maximum_through_the_endpoint(app):
    client, _ = app
    for n, version in enumerate(("1.0.0", "1.5.0", "2.0.0"), 1):
        upload(client, image_bytes(n), version)
    group = client.put(f"{BASE}/groups/stable", json={
        "floors": ["1.5.0"], "max_updates_per_period": 2, "period_interval": 3600})
    assert group.status_code == 200, group.get_data()
    # a host below the floor is taken to the floor first, then to the channel
    assert check(client, "1.0.0", machine="1" * 32).updatecheck.manifest.version == "1.5.0"
    assert check(client, "1.5.0", machine="2" * 32).updatecheck.manifest.version == "2.0.0"
    # two grants this period (one already done): the third host waits for the next
    check(client, "2.0.0", machine="2" * 32, updatecheck=False,
          events=[omaha.Event(3, 2, previous_version="1.5.0")])
    assert check(client, "1.5.0", machine="3" * 32).status == \
        "error-maxUpdatesPerPeriodLimitReached"
    # asking again for what it was granted is no new grant
    assert check(client, "1.0.0", machine="1" * 32).updatecheck.manifest.version == "1.5.0"
    bad = client.put(f"{BASE}/groups/stable", json={"floors": "1.5.0"})
    assert bad.status_code == 400
    bad = client.put(f"{BASE}/groups/stable", json={"rollout_percent": 101})
    assert bad.status_code == 400 and "rollout_percent" in bad.get_json()["error_message"]
