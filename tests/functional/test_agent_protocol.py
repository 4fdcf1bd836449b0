"""The `direct` deploy interface end to end: a real ``metalcast serve`` drives agents
(tests/functional/agent_peer.py, built from the protocol spec) over HTTPS, with
images served by a separate HTTP server. Cleaning, deploy, wrong checksum, an agent
that dies mid-write, and several nodes at once."""
from __future__ import annotations

import hashlib
from http.server import SimpleHTTPRequestHandler

import pytest

from tests.functional.agent_peer import Peer
from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import (
    agent_sections,
    api_call,
    mac,
    provision,
    serve_directory,
    unique,
    wait_node,
)

IMAGE_SIZE = 3 * (1 << 20) + 12345  # not a multiple of the 1 MiB chunk
DEPLOY_TIMEOUT = 8


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """An HTTP server with one image; yields (url, sha256, bytes)."""
    root = tmp_path_factory.mktemp("images")
    data = hashlib.sha256(b"seed").digest() * (IMAGE_SIZE // 32) + b"tail" * 10
    (root / "disk.raw").write_bytes(data)
    with serve_directory(root, Quiet) as base:
        yield f"{base}/disk.raw", hashlib.sha256(data).hexdigest(), data


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("metalcast-agent"),
                          agent_sections(power_off_wait=0.2, callback_timeout=DEPLOY_TIMEOUT))
    yield server
    stop_server(server.process)


class Machine:
    """One enrolled node, its MAC and its disk file; boot() starts an agent."""

    def __init__(self, url: str, tmp_path, image_url: str, digest: str):
        self.url, self.mac = url, mac()
        self.disk = tmp_path / f"{self.mac.replace(':', '')}.disk"
        self.disk.write_bytes(b"\xee" * (IMAGE_SIZE + (2 << 20)))
        node = api_call(url, "POST", "/v1/nodes", {
            "name": unique("agent"), "driver": "fake-hardware", "deploy_interface": "direct",
            "instance_info": {"image_source": image_url, "image_os_hash_algo": "sha256",
                              "image_os_hash_value": digest}}, ok=(201,))
        self.uuid = node["uuid"]
        api_call(url, "POST", "/v1/ports", {"node_uuid": self.uuid, "address": self.mac},
                 ok=(201,))
        self.agents: list[Peer] = []

    def boot(self, **kwargs) -> Peer:
        agent = Peer(self.url, self.mac, self.disk, **kwargs)
        self.agents.append(agent)
        return agent

    def run(self, target: str, state: str, **kwargs) -> dict:
        """One boot of the ramdisk for ``target``; the agent stops with the machine."""
        agent = self.boot(**kwargs)
        try:
            return provision(self.url, self.uuid, target, state)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{agent.describe()}") from None
        finally:
            agent.stop()

    def stop(self) -> None:
        for agent in self.agents:
            if not agent._stop.is_set():
                agent.stop()


@pytest.fixture
def machines(agent_server, images, tmp_path):
    made: list[Machine] = []

    def make(count=1):
        new = [Machine(agent_server.url, tmp_path, images[0], images[1])
               for _ in range(count)]
        made.extend(new)
        return new
    yield make
    for machine in made:
        machine.stop()


def test_clean_deploy_undeploy_through_the_agent(machines, images):
    (machine,) = machines()
    _, _, data = images
    provision(machine.url, machine.uuid, "manage", "manageable")
    cleaned = machine.run("provide", "available")
    assert machine.disk.read_bytes()[:1 << 20] == b"\0" * (1 << 20)  # metadata erased
    assert cleaned["clean_step"] == {} and cleaned["power_state"] == "power off"
    assert "agent_secret_token" not in cleaned["driver_internal_info"]

    active = machine.run("active", "active")
    assert machine.disk.read_bytes()[:len(data)] == data
    assert active["last_error"] is None and active["power_state"] == "power on"
    info = active["driver_internal_info"]
    assert info["fake_boot_device"] == {"boot_device": "disk", "persistent": True}
    assert "agent_secret_token" not in info and "agent_url" not in info
    assert info["root_uuid_or_disk_id"] == "0x1234abcd"
    agent = machine.agents[-1]
    names = [c["command_name"] for c in agent.commands]
    assert names == ["get_deploy_steps", "execute_deploy_step", "get_partition_uuids",
                     "power_off"]
    assert not agent.errors

    machine.run("deleted", "available")
    assert machine.disk.read_bytes()[:1 << 20] == b"\0" * (1 << 20)


def test_wrong_checksum_fails_and_the_node_can_be_deployed_again(machines, images):
    (machine,) = machines()
    url, digest, data = images
    provision(machine.url, machine.uuid, "manage", "manageable")
    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}", [
        {"op": "replace", "path": "/automated_clean", "value": False},
        {"op": "replace", "path": "/instance_info/image_os_hash_value", "value": "0" * 64}])
    provision(machine.url, machine.uuid, "provide", "available")
    failed = machine.run("active", "deploy failed")
    assert "checksum" in failed["last_error"].lower()
    assert "write_image" in failed["last_error"]
    assert failed["power_state"] == "power off"
    assert "agent_secret_token" not in failed["driver_internal_info"]

    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}", [
        {"op": "replace", "path": "/instance_info/image_os_hash_value", "value": digest}])
    active = machine.run("active", "active")
    assert active["last_error"] is None
    assert machine.disk.read_bytes()[:len(data)] == data


def test_agent_dying_mid_write_times_out_then_redeploy_works(machines, images):
    (machine,) = machines()
    _, _, data = images
    provision(machine.url, machine.uuid, "manage", "manageable")
    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}",
             [{"op": "replace", "path": "/automated_clean", "value": False}])
    provision(machine.url, machine.uuid, "provide", "available")
    agent = machine.boot(stall_write=True)
    api_call(machine.url, "PUT", f"/v1/nodes/{machine.uuid}/states/provision",
             {"target": "active"}, ok=(202,))
    wait_node(machine.url, machine.uuid,
              lambda n: (n["deploy_step"] or {}).get("step") == "write_image"
              and n["provision_state"] == "wait call-back", "writing")
    agent.stop()  # killed mid-write: no more heartbeats
    failed = wait_node(machine.url, machine.uuid,
                       lambda n: n["provision_state"] == "deploy failed", "timed out",
                       timeout=DEPLOY_TIMEOUT + 30)
    assert "deploy_callback_timeout" in failed["last_error"]
    active = machine.run("active", "active")
    assert machine.disk.read_bytes()[:len(data)] == data and active["last_error"] is None


def test_several_machines_at_once(machines, images):
    fleet = machines(4)
    _, _, data = images
    for machine in fleet:
        provision(machine.url, machine.uuid, "manage", "manageable")
        api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}",
                 [{"op": "replace", "path": "/automated_clean", "value": False}])
        provision(machine.url, machine.uuid, "provide", "available")
    for machine in fleet:
        machine.boot()
        api_call(machine.url, "PUT", f"/v1/nodes/{machine.uuid}/states/provision",
                 {"target": "active"}, ok=(202,))
    for machine in fleet:
        node = wait_node(machine.url, machine.uuid,
                         lambda n: n["provision_state"] in ("active", "deploy failed")
                         and n["reservation"] is None, "deployed")
        assert node["provision_state"] == "active", node["last_error"]
        assert machine.disk.read_bytes()[:len(data)] == data


def test_uefi_partition_image_gets_its_bootloader_installed(machines, images):
    (machine,) = machines()
    provision(machine.url, machine.uuid, "manage", "manageable")
    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}", [
        {"op": "replace", "path": "/automated_clean", "value": False},
        {"op": "add", "path": "/instance_info/image_type", "value": "partition"},
        {"op": "add", "path": "/instance_info/root_gb", "value": 1}])
    provision(machine.url, machine.uuid, "provide", "available")
    active = machine.run("active", "active")
    assert active["last_error"] is None
    commands = machine.agents[-1].commands
    assert [c["command_name"] for c in commands] == [
        "get_deploy_steps", "execute_deploy_step", "get_partition_uuids",
        "install_bootloader", "power_off"]
    info = commands[1]["command_params"]["step"]["args"]["image_info"]
    assert info["image_type"] == "partition" and info["root_gb"] == 1
    assert info["deploy_boot_mode"] == "uefi" and info["disk_label"] == "gpt"
    assert commands[3]["command_params"]["target_boot_mode"] == "uefi"
    assert commands[3]["command_params"]["root_uuid"] == "0x1234abcd"


def test_manual_clean_runs_the_requested_steps_only(machines):
    (machine,) = machines()
    provision(machine.url, machine.uuid, "manage", "manageable")
    agent = machine.boot()
    try:
        api_call(machine.url, "PUT", f"/v1/nodes/{machine.uuid}/states/provision",
                 {"target": "clean", "clean_steps": [
                     {"interface": "deploy", "step": "erase_devices", "args": {"x": 1}}]},
                 ok=(202,))
        node = wait_node(machine.url, machine.uuid,
                         lambda n: n["provision_state"] in ("manageable", "clean failed")
                         and n["reservation"] is None, "cleaned")
    finally:
        agent.stop()
    assert node["provision_state"] == "manageable", node["last_error"]
    steps = [c["command_params"]["step"] for c in agent.commands
             if c["command_name"] == "execute_clean_step"]
    assert [(s["step"], s["args"]) for s in steps] == [("erase_devices", {"x": 1})]

    agent = machine.boot()
    try:
        api_call(machine.url, "PUT", f"/v1/nodes/{machine.uuid}/states/provision",
                 {"target": "clean", "clean_steps": [{"interface": "bios", "step": "nope"}]},
                 ok=(202,))
        node = wait_node(machine.url, machine.uuid,
                         lambda n: n["provision_state"] == "clean failed"
                         and n["reservation"] is None, "clean failed")
    finally:
        agent.stop()
    assert "bios.nope is not offered" in node["last_error"]
    provision(machine.url, machine.uuid, "manage", "manageable")  # recoverable


def test_agent_certificate_is_pinned(machines):
    (machine,) = machines()
    provision(machine.url, machine.uuid, "manage", "manageable")
    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}",
             [{"op": "replace", "path": "/automated_clean", "value": False}])
    provision(machine.url, machine.uuid, "provide", "available")
    failed = machine.run("active", "deploy failed", advertise_other_cert=True)
    assert "TLS" in failed["last_error"]
    assert machine.agents[-1].commands == []  # the conductor never talked to it
