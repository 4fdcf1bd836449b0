"""BMC secrets through the API and the conductor: encrypted in the row, ****** on the
wire, plaintext for the driver, a clear error when the key changed."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from api import create_app
from conductor import config, errors, secrets
from conductor.appliance import Appliance
from conductor.drivers import fake
from tests.waiting import wait_until

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
PASSWORD = "pw-9f2c1e7d"


class RecordingPower(fake.FakePower):
    """The fake power interface, remembering the credentials it was handed."""

    seen: list[dict] = []

    def validate(self, task) -> None:
        RecordingPower.seen.append(task.driver_info)


#: The appliances of these tests power nodes through RecordingPower.
DRIVERS = {("power", "fake"): RecordingPower}


@pytest.fixture
def recording():
    RecordingPower.seen = []
    return RecordingPower.seen


class Running:
    """One appliance on a data dir, restartable with the same directory."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.appliance = None
        self.start()

    def start(self):
        settings = config.from_options({"data_dir": str(self.data_dir),
                                        "conductor.host": "test-host",
                                        "conductor.sync_power_state_interval": 0,
                                        "pxe.enabled": False})  # no boot servers on fixed ports
        self.appliance = Appliance(settings, driver_overrides=DRIVERS)
        self.appliance.start()
        self.client = create_app(self.appliance.service).test_client()

    def restart(self):
        self.appliance.stop()
        self.start()

    def stop(self):
        self.appliance.stop()

    def raw_driver_info(self, name: str) -> str:
        """The driver_info column as the database holds it (raw SQL, no SQLAlchemy)."""
        with sqlite3.connect(self.data_dir / "metalcast.sqlite") as conn:
            (text,) = conn.execute("SELECT driver_info FROM nodes WHERE name = ?",
                                   (name,)).fetchone()
        return text

    def create(self, name, **body):
        body = dict({"driver": "fake-hardware", "name": name}, **body)
        return self.client.post("/v1/nodes", json=body, headers=LATEST)

    def patch(self, name, *ops):
        return self.client.patch(f"/v1/nodes/{name}", json=list(ops), headers=LATEST)

    def get(self, name):
        return self.client.get(f"/v1/nodes/{name}", headers=LATEST).get_json()

    def manage(self, name, timeout=30):
        response = self.client.put(f"/v1/nodes/{name}/states/provision",
                                   json={"target": "manage"}, headers=LATEST)
        assert response.status_code == 202, response.get_json()
        return wait_until(lambda: (node := self.get(name))["provision_state"] != "verifying"
                          and node, timeout, 0.02, "manage to finish")


@pytest.fixture
def lab(tmp_path):
    running = Running(tmp_path / "data")
    yield running
    running.stop()


def _set(path, value):
    return {"op": "add", "path": path, "value": value}


def test_row_never_holds_the_plaintext(lab):
    response = lab.create("n1", driver_info={"ipmi_password": PASSWORD,
                                             "ipmi_username": "admin"})
    assert response.status_code == 201
    assert response.get_json()["driver_info"] == {"ipmi_password": "******",
                                                  "ipmi_username": "admin"}
    raw = lab.raw_driver_info("n1")
    assert PASSWORD not in raw
    stored = json.loads(raw)
    assert stored["ipmi_username"] == "admin"
    assert stored["ipmi_password"].startswith(secrets.TAG)
    assert lab.get("n1")["driver_info"]["ipmi_password"] == "******"
    listed = lab.client.get("/v1/nodes/detail", headers=LATEST).get_json()["nodes"]
    assert [n["driver_info"] for n in listed] == [{"ipmi_password": "******",
                                                   "ipmi_username": "admin"}]


def test_driver_sees_plaintext(lab, recording):
    lab.create("n1", driver_info={"ipmi_password": PASSWORD, "ipmi_port": 623})
    assert lab.manage("n1")["provision_state"] == "manageable"
    assert recording == [{"ipmi_password": PASSWORD, "ipmi_port": 623}]


def test_patching_one_key_keeps_the_others(lab, recording):
    lab.create("n1", driver_info={"ipmi_password": PASSWORD, "redfish_password": "rf",
                                  "ipmi_username": "admin"})
    before = json.loads(lab.raw_driver_info("n1"))
    response = lab.patch("n1", _set("/driver_info/ipmi_username", "root"))
    assert response.status_code == 200, response.get_json()
    after = json.loads(lab.raw_driver_info("n1"))
    assert after == dict(before, ipmi_username="root")  # ciphertexts untouched
    response = lab.patch("n1", _set("/driver_info/redfish_password", "rf2"))
    assert response.get_json()["driver_info"]["redfish_password"] == "******"
    raw = lab.raw_driver_info("n1")
    assert "rf2" not in raw and json.loads(raw)["ipmi_password"] == before["ipmi_password"]
    lab.manage("n1")
    assert recording == [{"ipmi_password": PASSWORD, "redfish_password": "rf2",
                          "ipmi_username": "root"}]


def test_echoed_mask_keeps_the_stored_secret(lab, recording):
    lab.create("n1", driver_info={"ipmi_password": PASSWORD, "ipmi_username": "admin"})
    before = lab.raw_driver_info("n1")
    response = lab.patch("n1", _set("/driver_info/ipmi_password", "******"))
    assert response.status_code == 200, response.get_json()
    assert lab.raw_driver_info("n1") == before
    # A client that PUTs back the whole object it was shown, with one change.
    shown = lab.get("n1")["driver_info"]
    response = lab.patch("n1", {"op": "replace", "path": "/driver_info",
                                "value": dict(shown, ipmi_username="root")})
    assert response.status_code == 200, response.get_json()
    lab.manage("n1")
    assert recording == [{"ipmi_password": PASSWORD, "ipmi_username": "root"}]


def test_mask_without_a_stored_secret_is_refused(lab):
    response = lab.create("n1", driver_info={"ipmi_password": "******"})
    assert response.status_code == 400
    assert "driver_info.ipmi_password" in response.get_data(as_text=True)
    assert lab.create("n2").status_code == 201
    response = lab.patch("n2", _set("/driver_info/redfish_password", "******"))
    assert response.status_code == 400
    assert lab.get("n2")["driver_info"] == {}


def test_restart_with_the_same_data_dir_still_decrypts(lab, recording):
    lab.create("n1", driver_info={"ipmi_password": PASSWORD})
    lab.restart()
    assert lab.manage("n1")["provision_state"] == "manageable"
    assert recording == [{"ipmi_password": PASSWORD}]


def test_a_different_key_fails_manage_with_a_clear_error(lab):
    key_file = lab.data_dir / "keys" / "secrets.key"
    response = lab.create("rf", driver="redfish", driver_info={
        "redfish_address": "http://127.0.0.1:9", "redfish_username": "admin",
        "redfish_password": PASSWORD})
    assert response.status_code == 201, response.get_json()
    lab.appliance.stop()
    key_file.write_bytes(Fernet.generate_key() + b"\n")  # the key was replaced
    os.chmod(key_file, 0o600)
    lab.start()
    node = lab.manage("rf")
    assert node["provision_state"] == "enroll"
    assert node["reservation"] is None
    assert "Cannot decrypt driver_info.redfish_password" in node["last_error"]
    assert str(key_file) in node["last_error"]
    assert PASSWORD not in node["last_error"]
    checks = lab.client.get("/v1/nodes/rf/validate", headers=LATEST).get_json()
    assert checks["power"]["result"] is False
    assert str(key_file) in checks["power"]["reason"]
    # Setting the secret again heals the node.
    lab.patch("rf", _set("/driver_info/redfish_password", "new"))
    assert lab.client.get("/v1/nodes/rf/validate",
                          headers=LATEST).get_json()["power"]["result"] is True


def test_plaintext_from_an_older_version_is_encrypted_at_start(lab):
    lab.create("old")
    with sqlite3.connect(lab.data_dir / "metalcast.sqlite") as conn:
        conn.execute("UPDATE nodes SET driver_info = ? WHERE name = 'old'",
                     (json.dumps({"ipmi_password": PASSWORD, "ipmi_address": "h"}),))
    lab.restart()
    raw = lab.raw_driver_info("old")
    assert PASSWORD not in raw and json.loads(raw)["ipmi_address"] == "h"
    assert lab.get("old")["driver_info"] == {"ipmi_password": "******", "ipmi_address": "h"}


def test_key_readable_by_others_stops_the_start(tmp_path):
    running = Running(tmp_path / "data")
    running.stop()
    key_file = tmp_path / "data" / "keys" / "secrets.key"
    os.chmod(key_file, 0o644)
    with pytest.raises(errors.ConfigError, match="chmod 600"):
        Running(tmp_path / "data")
