"""/api/orchestration/sw-patch/strategy through Flask's test client over a real
appliance (SQLite, patch controller, no hosts): the REST shapes and status codes
StarlingX's sw-manager relies on, and every refusal of bad input leaving the
strategy as it was."""
from __future__ import annotations

import json
import uuid

import pytest

URL = "/api/orchestration/sw-patch/strategy"
CREATE = {"controller-apply-type": "serial", "storage-apply-type": "serial",
          "worker-apply-type": "serial", "default-instance-action": "stop-start",
          "alarm-restrictions": "strict", "swift-apply-type": "ignore"}


@pytest.fixture
def client(make_app):
    return make_app()[0]


def _post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def _fault(response) -> str:
    body = response.get_json()
    assert set(body) >= {"faultcode", "faultstring"}, body
    return body["faultstring"]


def test_no_strategy_is_a_null_strategy(client):
    response = client.get(URL)
    assert response.status_code == 200 and response.get_json() == {"strategy": None}


def test_create_without_patches_fails_its_build(client):
    response = _post(client, URL, CREATE)
    assert response.status_code == 200, response.get_data()
    strategy = response.get_json()["strategy"]
    assert strategy["name"] == "sw-patch" and strategy["state"] == "build-failed"
    assert strategy["build-phase"]["reason"] == "no software patches found"
    assert strategy["max-parallel-worker-hosts"] == 2
    assert strategy["current-phase"] == "build"
    assert strategy["current-phase-completion-percentage"] == 100
    step = strategy["build-phase"]["stages"][0]["steps"][0]
    assert step["step-name"] == "query-alarms" and step["result"] == "success"
    assert len(step["start-date-time"]) == len("2026-12-07 11:00:00")
    assert client.get(f"{URL}/{strategy['uuid']}").get_json()["strategy"] == strategy


def test_second_create_is_409_naming_the_first(client):
    first = _post(client, URL, CREATE).get_json()["strategy"]
    response = _post(client, URL, dict(CREATE, **{"worker-apply-type": "parallel"}))
    assert response.status_code == 409
    assert first["uuid"] in _fault(response) and "sw-patch" in _fault(response)
    assert "build-failed" in _fault(response)
    assert client.get(URL).get_json()["strategy"]["uuid"] == first["uuid"]


@pytest.mark.parametrize("body, text", [
    ({**CREATE, "max-parallel-worker-hosts": 1}, "max-parallel-worker-hosts"),
    ({**CREATE, "max-parallel-worker-hosts": 101}, "max-parallel-worker-hosts"),
    ({**CREATE, "max-parallel-worker-hosts": "2"}, "max-parallel-worker-hosts"),
    ({**CREATE, "max-parallel-worker-hosts": True}, "max-parallel-worker-hosts"),
    ({**CREATE, "worker-apply-type": "sideways"}, "worker-apply-type"),
    ({**CREATE, "alarm-restrictions": ["strict"]}, "alarm-restrictions"),
    ({**CREATE, "worker_apply_type": "serial"}, "Unknown strategy option"),
    ({k: v for k, v in CREATE.items() if k != "controller-apply-type"},
     "controller-apply-type"),
])
def test_bad_create_is_400_and_creates_nothing(client, body, text):
    response = _post(client, URL, body)
    assert response.status_code == 400 and text in _fault(response)
    assert client.get(URL).get_json() == {"strategy": None}


@pytest.mark.parametrize("raw", [b"{", b"[]", b"\"x\"", b"{\"a\": NaN}",
                                 b"[" * 100 + b"]" * 100])
def test_malformed_bodies_are_400(client, raw):
    response = client.post(URL, data=raw, content_type="application/json")
    assert response.status_code == 400, response.get_data()
    assert _fault(response)
    assert client.get(URL).get_json() == {"strategy": None}


def test_huge_body_is_refused_before_it_is_read(client):
    response = client.post(URL, data=b"{\"x\": \"" + b"a" * (2 << 20) + b"\"}",
                           content_type="application/json")
    assert response.status_code == 413
    assert client.get(URL).get_json() == {"strategy": None}


def test_get_by_uuid(client):
    assert client.get(f"{URL}/not-a-uuid").status_code == 400
    assert "Invalid strategy uuid" in _fault(client.get(f"{URL}/not-a-uuid"))
    assert client.get(f"{URL}/{uuid.uuid4()}").status_code == 404


def test_delete(client):
    response = client.delete(URL, data=json.dumps({"force": False}),
                             content_type="application/json")
    assert response.status_code == 404
    created = _post(client, URL, CREATE).get_json()["strategy"]
    assert client.delete(URL, data="{\"force\": \"yes\"}",
                         content_type="application/json").status_code == 400
    response = client.delete(URL, data=json.dumps({"force": False}),
                             content_type="application/json")
    assert response.status_code == 200
    assert response.get_json()["strategy"]["uuid"] == created["uuid"]
    assert client.get(URL).get_json() == {"strategy": None}


@pytest.mark.parametrize("body, status, text", [
    ({"action": "apply-all"}, 409, "no software patches found"),
    ({"action": "apply-stage", "stage-id": 0}, 409, "apply of stage id 0 failed"),
    ({"action": "apply-stage"}, 400, "No stage-id received"),
    ({"action": "abort-stage"}, 400, "No stage-id received"),
    ({"action": "abort-stage", "stage-id": None}, 400, "apply not inprogress"),
    ({"action": "abort"}, 400, "apply not inprogress"),
    ({"action": "explode"}, 400, "Invalid action"),
    # StarlingX's client sends --stage-id as a string: "0" is stage 0 (not next here).
    ({"action": "apply-stage", "stage-id": "0"}, 409, "apply of stage id 0 failed"),
    ({"action": "apply-stage", "stage-id": "\u00b2"}, 400, "stage-id"),   # isdigit()
    ({"action": "apply-stage", "stage-id": "9" * 5000}, 400, "stage-id"),
    ({"action": "apply-stage", "stage-id": " 1"}, 400, "stage-id"),
    ({"action": "apply-stage", "stage-id": 1.0}, 400, "stage-id"),
    ({"action": "apply-stage", "stage-id": -1}, 400, "stage-id"),
    ({"action": "apply-all", "force": True}, 400, "Unknown field"),
])
def test_actions_refused_in_the_wrong_state(client, body, status, text):
    before = _post(client, URL, CREATE).get_json()["strategy"]
    response = _post(client, f"{URL}/actions", body)
    assert response.status_code == status and text in _fault(response), response.get_data()
    assert client.get(URL).get_json()["strategy"] == before


def test_actions_without_a_strategy_are_404(client):
    assert _post(client, f"{URL}/actions", {"action": "apply-all"}).status_code == 404
