"""BMC secrets through a real ``metalcast serve``: encrypted in the database file,
``******`` in the API and in ``metalcast node show``, and still readable after a
restart on the same data directory."""
from __future__ import annotations

import json
import sqlite3
import stat
import subprocess

import requests
from cryptography.fernet import Fernet

from tests.functional.conftest import BIN_DIR, start_server, stop_server
from tests.functional.helpers import unique
from tests.waiting import wait_until

HEADERS = {"X-OpenStack-Ironic-API-Version": "latest"}
PASSWORD = "functional-pw-5d1c"


def _raw_driver_info(data_dir, name) -> str:
    with sqlite3.connect(data_dir / "metalcast.sqlite") as conn:
        (text,) = conn.execute("SELECT driver_info FROM nodes WHERE name = ?",
                               (name,)).fetchone()
    return text


def _cli(url, *argv) -> str:
    proc = subprocess.run([str(BIN_DIR / "metalcast"), "--url", url, *argv],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_secrets_are_encrypted_and_masked_everywhere(server):
    name = unique("secret")
    response = requests.post(server.url + "/v1/nodes", headers=HEADERS, timeout=30, json={
        "driver": "fake-hardware", "name": name,
        "driver_info": {"ipmi_password": PASSWORD, "ipmi_username": "admin"}})
    assert response.status_code == 201, response.text
    assert response.json()["driver_info"]["ipmi_password"] == "******"

    raw = _raw_driver_info(server.data_dir, name)
    assert PASSWORD not in raw
    assert json.loads(raw)["ipmi_password"].startswith("fernet:v1:")

    shown = json.loads(_cli(server.url, "node", "show", name, "--format", "json"))
    assert shown["driver_info"] == {"ipmi_password": "******", "ipmi_username": "admin"}
    table = _cli(server.url, "node", "show", name)
    assert "******" in table and PASSWORD not in table

    key = server.data_dir / "keys" / "secrets.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert PASSWORD not in server.output()


def test_restart_on_the_same_data_dir_keeps_the_key(tmp_path):
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        name = unique("restart")
        response = requests.post(server.url + "/v1/nodes", headers=HEADERS, timeout=30,
                                 json={"driver": "redfish", "name": name, "driver_info": {
                                     "redfish_address": "http://127.0.0.1:9",
                                     "redfish_password": PASSWORD}})
        assert response.status_code == 201, response.text
        key = (data_dir / "keys" / "secrets.key").read_bytes()
    finally:
        stop_server(server.process)
    server = start_server(data_dir)
    try:
        assert (data_dir / "keys" / "secrets.key").read_bytes() == key
        checks = requests.get(f"{server.url}/v1/nodes/{name}/validate", headers=HEADERS,
                              timeout=30).json()
        assert checks["power"] == {"result": True, "reason": None}
    finally:
        stop_server(server.process)


def test_a_replaced_key_fails_manage_cleanly(tmp_path):
    data_dir = tmp_path / "data"
    key = data_dir / "keys" / "secrets.key"
    server = start_server(data_dir)
    try:
        name = unique("rekeyed")
        response = requests.post(server.url + "/v1/nodes", headers=HEADERS, timeout=30,
                                 json={"driver": "ipmi", "name": name, "driver_info": {
                                     "ipmi_address": "127.0.0.1", "ipmi_username": "admin",
                                     "ipmi_password": PASSWORD}})
        assert response.status_code == 201, response.text
    finally:
        stop_server(server.process)
    key.write_bytes(Fernet.generate_key() + b"\n")  # lost or rotated without re-encrypting
    key.chmod(0o600)
    server = start_server(data_dir)
    try:
        response = requests.put(f"{server.url}/v1/nodes/{name}/states/provision",
                                json={"target": "manage"}, headers=HEADERS, timeout=30)
        assert response.status_code == 202, response.text
        seen: dict = {}

        def settled():
            seen.update(requests.get(f"{server.url}/v1/nodes/{name}", headers=HEADERS,
                                     timeout=30).json())
            return seen["provision_state"] != "verifying" and seen["reservation"] is None
        wait_until(settled, 60, 0.1, lambda: f"manage to end: {seen}")
        node = seen
        assert node["provision_state"] == "enroll"
        assert "Cannot decrypt driver_info.ipmi_password" in node["last_error"]
        assert str(key) in node["last_error"]
        assert server.process.poll() is None  # still serving
    finally:
        stop_server(server.process)
