"""Secrets through JSON PATCH: each attack read a BMC password, or its ciphertext, out
of a node through an operation the API allowed. Each replay now gets a 400 and
changes nothing; nested secrets are masked on the wire and encrypted in the row.

The appliance runs in-process (Flask's test client: no socket), on its own data dir.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from api import create_app
from conductor import config, secrets
from conductor.appliance import Appliance
from conductor.engine.task import Task

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
PASSWORD = "pw-7c41d0e9b2"


class Lab:
    """One appliance and the raw view of its database an attacker never has."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        settings = config.from_options({"data_dir": str(data_dir), "pxe.enabled": False,
                                        "conductor.host": "security-test",
                                        "conductor.sync_power_state_interval": 0})
        self.appliance = Appliance(settings)
        self.appliance.start()
        self.client = create_app(self.appliance.service).test_client()

    def create(self, name: str, driver_info: dict, **body) -> dict:
        response = self.client.post("/v1/nodes", headers=LATEST, json={
            "driver": "fake-hardware", "name": name, "driver_info": driver_info, **body})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def patch(self, name: str, *ops):
        return self.client.patch(f"/v1/nodes/{name}", json=list(ops), headers=LATEST)

    def get(self, name: str) -> dict:
        return self.client.get(f"/v1/nodes/{name}", headers=LATEST).get_json()

    def raw(self, name: str) -> dict:
        """The node's row as the database holds it (json columns parsed)."""
        with sqlite3.connect(self.data_dir / "metalcast.sqlite") as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT driver_info, extra, instance_info FROM nodes "
                               "WHERE name = ?", (name,)).fetchone()
        return {key: json.loads(row[key] or "{}") for key in row.keys()}

    def stop(self) -> None:
        self.appliance.stop()


@pytest.fixture
def lab(tmp_path):
    running = Lab(tmp_path / "data")
    yield running
    running.stop()


@pytest.fixture
def victim(lab):
    """A node with a BMC password, booting with ipxe (whose validate names deploy_kernel's
    value), and one pxe-enabled port."""
    node = lab.create("victim", {"ipmi_password": PASSWORD, "ipmi_username": "admin"},
                      boot_interface="ipxe")
    port = lab.client.post("/v1/ports", headers=LATEST, json={
        "node_uuid": node["uuid"], "address": "52:54:00:aa:bb:01"})
    assert port.status_code == 201, port.get_json()
    return "victim"


#: How every Fernet token starts (version byte 0x80, base64): no ciphertext in a reply.
FERNET_START = "gAAAAA"


def _refused(response) -> str:
    assert response.status_code == 400, response.get_json()
    text = response.get_data(as_text=True)
    assert PASSWORD not in text and FERNET_START not in text
    return text


def _unchanged(lab, name: str, before: dict) -> None:
    assert lab.raw(name) == before


def test_copy_into_deploy_kernel_then_validate(lab, victim):
    before = lab.raw(victim)
    text = _refused(lab.patch(victim, {"op": "copy", "from": "/driver_info/ipmi_password",
                                       "path": "/driver_info/deploy_kernel"}))
    assert "secret" in text and "/driver_info/ipmi_password" in text
    _unchanged(lab, victim, before)
    checks = lab.client.get(f"/v1/nodes/{victim}/validate", headers=LATEST)
    body = checks.get_data(as_text=True)
    assert "deploy_kernel" in body      # the error the attack read the password from
    assert PASSWORD not in body and FERNET_START not in body


@pytest.mark.parametrize("op", ["copy", "move"])
@pytest.mark.parametrize("source", ["/driver_info/ipmi_password", "/driver_info"])
def test_copy_or_move_into_extra(lab, victim, op, source):
    before = lab.raw(victim)
    _refused(lab.patch(victim, {"op": op, "from": source, "path": "/extra/loot"}))
    _unchanged(lab, victim, before)
    assert "loot" not in lab.get(victim)["extra"]


@pytest.mark.parametrize("guess", ["ciphertext", "plaintext", "mask"])
@pytest.mark.parametrize("path", ["/driver_info/ipmi_password", "/driver_info"])
def test_test_op_guessing_the_secret(lab, victim, guess, path):
    before = lab.raw(victim)
    stored = before["driver_info"]
    value = {"ciphertext": stored["ipmi_password"], "plaintext": PASSWORD,
             "mask": secrets.MASK}[guess]
    if path == "/driver_info":
        value = dict(stored, ipmi_password=value)
    # The same 400 whatever the guess: the answer tells nothing about the secret.
    text = _refused(lab.patch(victim, {"op": "test", "path": path, "value": value},
                              {"op": "add", "path": "/extra/probe", "value": 1}))
    assert "cannot read" in text
    _unchanged(lab, victim, before)   # nor was the add after it applied


def test_planted_ciphertext_is_neither_stored_nor_decrypted(lab, victim):
    """The ciphertext of a node's password (from a leaked backup, say) planted into
    another node: as its password the conductor would decrypt it for the attacker's
    BMC; under any other key it would be decrypted and printed by validate."""
    stolen = lab.raw(victim)["driver_info"]["ipmi_password"]
    lab.create("attacker", {"ipmi_username": "admin"}, boot_interface="ipxe")
    response = lab.patch("attacker", {"op": "add", "path": "/driver_info/ipmi_password",
                                      "value": stolen})
    assert "encrypted" in _refused(response)
    assert "ipmi_password" not in lab.raw("attacker")["driver_info"]
    # Under a key that is no secret's the value stays what it is: never decrypted.
    assert lab.patch("attacker", {"op": "add", "path": "/driver_info/deploy_kernel",
                                  "value": stolen}).status_code == 200
    node = lab.appliance.store.get_node("attacker")
    task = Task(lab.appliance.store, node, "security-test", lab.appliance.drivers)
    assert task.driver_info["deploy_kernel"] == stolen
    checks = lab.client.get("/v1/nodes/attacker/validate", headers=LATEST)
    assert PASSWORD not in checks.get_data(as_text=True)


def test_nested_password_is_masked_and_encrypted(lab):
    info = {"ipmi_address": "10.0.0.9",
            "nested": {"password": PASSWORD, "user": "admin",
                       "deeper": [{"auth_token": "tok-51ad"}]}}
    shown = lab.create("nested", info)["driver_info"]
    assert shown == {"ipmi_address": "10.0.0.9",
                     "nested": {"password": "******", "user": "admin",
                                "deeper": [{"auth_token": "******"}]}}
    assert lab.get("nested")["driver_info"] == shown
    listed = lab.client.get("/v1/nodes/detail", headers=LATEST).get_json()["nodes"]
    assert [n["driver_info"] for n in listed if n["name"] == "nested"] == [shown]
    raw = lab.raw("nested")["driver_info"]
    assert raw["nested"]["password"].startswith(secrets.TAG)
    assert raw["nested"]["deeper"][0]["auth_token"].startswith(secrets.TAG)
    assert PASSWORD not in json.dumps(raw) and "tok-51ad" not in json.dumps(raw)
    # The driver reads the plaintext; an echoed mask keeps the stored secret.
    node = lab.appliance.store.get_node("nested")
    assert Task(lab.appliance.store, node, "security-test",
                lab.appliance.drivers).driver_info == info
    response = lab.patch("nested", {"op": "replace", "path": "/driver_info",
                                    "value": dict(shown, ipmi_address="10.0.0.10")})
    assert response.status_code == 200, response.get_json()
    assert lab.raw("nested")["driver_info"]["nested"] == raw["nested"]
    # And the nested secret cannot be copied out either.
    _refused(lab.patch("nested", {"op": "copy", "from": "/driver_info/nested",
                                  "path": "/extra/loot"}))
