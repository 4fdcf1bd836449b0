"""The agent's command API: token, routes, result shapes, one command at a time."""
from __future__ import annotations

import threading

import pytest
from werkzeug.test import Client

from ramdisk_agent.commands import CommandRunner, Extension, async_command, sync_command
from ramdisk_agent.errors import ImageChecksumError
from ramdisk_agent.extensions import all_extensions
from ramdisk_agent.server import create_app

TOKEN = "s3cret-token"


class Gate(Extension):
    """Test extension: an async command that blocks until released."""
    name = "gate"

    def __init__(self, agent=None):
        super().__init__(agent)
        self.release = threading.Event()

    @async_command
    def hold(self, value=None):
        self.release.wait(10)
        return {"value": value}

    @async_command
    def explode(self):
        raise ImageChecksumError("checksum mismatch for http://x/img")

    @sync_command
    def echo(self, text):
        return {"text": text}


@pytest.fixture()
def setup():
    finished = []
    gate = Gate()
    runner = CommandRunner([gate], on_finished=lambda: finished.append(1))
    client = Client(create_app(runner, lambda: TOKEN))
    return client, gate, finished


def post(client, name, params=None, wait=False, token=TOKEN, prefix="/v1"):
    return client.post(f"{prefix}/commands/?wait={str(wait).lower()}&agent_token={token}",
                       json={"name": name, "params": params or {}})


def test_token_required(setup):
    client, _, _ = setup
    for resp in (post(client, "gate.echo", {"text": "x"}, token="wrong"),
                 client.get("/v1/commands/"), client.get("/commands?agent_token=nope")):
        assert resp.status_code == 401
        assert resp.get_json() == {"faultcode": "Client", "faultstring": "Token invalid."}


def test_sync_command_shape(setup):
    client, _, finished = setup
    resp = post(client, "gate.echo", {"text": "hi"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert set(body) == {"id", "command_name", "command_params", "command_status",
                         "command_error", "command_result"}
    assert body["command_name"] == "echo" and body["command_status"] == "SUCCEEDED"
    assert body["command_result"] == {"text": "hi"} and body["command_error"] is None
    assert finished == []            # only async commands trigger a heartbeat


def test_bad_requests(setup):
    client, _, _ = setup
    unknown = post(client, "gate.nope")
    assert unknown.status_code == 400 and "Unknown command" in unknown.get_json()["faultstring"]
    params = post(client, "gate.echo", {"wrong": 1})
    assert params.status_code == 400 and "Invalid parameters" in params.get_json()["faultstring"]
    nobody = client.post(f"/v1/commands/?agent_token={TOKEN}", data="junk")
    assert nobody.status_code == 400
    missing = client.get(f"/v1/commands/abc?agent_token={TOKEN}")
    assert missing.status_code == 404 and missing.get_json()["faultcode"] == "Client"
    assert client.get("/v2/").status_code == 404


def test_root_and_status(setup):
    client, _, _ = setup
    root = client.get("/").get_json()
    assert root["default_version"]["id"] == "v1"
    assert client.get("/v1/").get_json()["id"] == "v1"
    assert "started_at" in client.get("/v1/status").get_json()


def test_real_extensions_registry():
    runner = CommandRunner(all_extensions(agent=None))
    assert {"standby.power_off", "standby.reboot", "standby.sync",
            "standby.get_partition_uuids", "deploy.get_deploy_steps",
            "deploy.execute_deploy_step", "deploy.install_patches", "clean.get_clean_steps",
            "clean.execute_clean_step", "image.install_bootloader"} == set(runner.registry)
    steps = runner.execute("clean.get_clean_steps", {"node": {}, "ports": []}).command_result
    names = {s["step"]: s["priority"] for s in steps["clean_steps"]["GenericHardwareManager"]}
    assert names == {"erase_devices_metadata": 99, "erase_devices": 0}
    deploy = runner.execute("deploy.get_deploy_steps", {"node": {}, "ports": []})
    first = deploy.command_result["deploy_steps"]["GenericHardwareManager"][0]
    assert first["step"] == "write_image"
