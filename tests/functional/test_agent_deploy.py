"""The real ``metalcast-agent`` process deploys and cleans nodes driven by a real
``metalcast serve`` (deploy_interface ``direct``, fake power): the agent's "disk" is a
file, the image a GPT whole-disk image built with sgdisk and served over HTTP.

Conductor-side focus (issue 5): full deploy/undeploy, a wrong checksum leaving the
node deployable, an agent SIGKILLed mid-write failing the node by callback timeout,
and several machines at once. Fake power boots nothing, so each boot of the ramdisk
is one agent process the test starts once the conductor has "rebooted" the node (it
is in a wait state) and stops when the node is powered off.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import (
    agent_sections,
    api_call,
    mac,
    serve_directory,
    unique,
    wait_node,
)
from tests.functional.tools import require
from tests.waiting import wait_until
from virtlab.process import start_ready, stop

AGENT = str(Path(sys.executable).parent / "metalcast-agent")
IMAGE_MIB = 8
DISK_MIB = 16
DEPLOY_TIMEOUT = 15  # the killed agent's node fails after this; live agents keep it fresh


class ImageHandler(SimpleHTTPRequestHandler):
    """Serves the image directory; under /slow/ at ~1 MiB/s (an agent can be killed
    while it writes). ``slow_sent`` counts the bytes served slowly so far."""

    slow_sent = 0

    def log_message(self, *args):
        pass

    def translate_path(self, path):
        return super().translate_path(path.replace("/slow/", "/", 1))

    def copyfile(self, source, outputfile):
        if not self.path.startswith("/slow/"):
            return super().copyfile(source, outputfile)
        while chunk := source.read(64 << 10):
            outputfile.write(chunk)
            ImageHandler.slow_sent += len(chunk)
            time.sleep(0.06)   # the slowness under test, not a wait


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """(url, slow url, sha256, bytes) of a GPT whole-disk image with an ESP."""
    sgdisk = require("sgdisk")
    root = tmp_path_factory.mktemp("agent-images")
    path = root / "disk.img"
    path.write_bytes(hashlib.sha512(b"metalcast").digest() * (IMAGE_MIB << 14))
    subprocess.run([sgdisk, "-n", "1:2048:+2M", "-t", "1:ef00", "-n", "2:0:0",
                    "-t", "2:8300", str(path)], check=True, capture_output=True)
    data = path.read_bytes()
    with serve_directory(root, ImageHandler) as base:
        yield f"{base}/disk.img", f"{base}/slow/disk.img", hashlib.sha256(data).hexdigest(), data


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("metalcast-direct"),
                           agent_sections(power_off_wait=1, callback_timeout=DEPLOY_TIMEOUT))
    yield running
    stop_server(running.process)


class Machine:
    """A node with one NIC and a disk file; each boot() runs one agent process."""

    def __init__(self, url: str, folder: Path, image_url: str, digest: str):
        self.url, self.mac, self.folder = url, mac(), folder
        self.disk = folder / f"{self.mac.replace(':', '')}.disk"
        with open(self.disk, "wb") as f:
            f.write(b"\xee" * (DISK_MIB << 20))
        node = api_call(url, "POST", "/v1/nodes", {
            "name": unique("direct"), "driver": "fake-hardware", "deploy_interface": "direct",
            "instance_info": {"image_source": image_url, "image_os_hash_algo": "sha256",
                              "image_os_hash_value": digest}}, ok=(201,))
        self.uuid = node["uuid"]
        api_call(url, "POST", "/v1/ports", {"node_uuid": self.uuid, "address": self.mac},
                 ok=(201,))
        self.agent: subprocess.Popen | None = None
        self.log: list[str] = []

    def request(self, target: str) -> None:
        api_call(self.url, "PUT", f"/v1/nodes/{self.uuid}/states/provision",
                 {"target": target}, ok=(202,))

    def wait(self, states: tuple[str, ...], timeout: float = 90) -> dict:
        try:
            return wait_node(self.url, self.uuid, lambda n: n["provision_state"] in states
                             and n["reservation"] is None, "/".join(states), timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nagent log:\n{''.join(self.log[-30:])}") from None

    def boot(self) -> None:
        """The ramdisk boots: start the agent (it looks the node up at once)."""
        state = self.folder / f"{self.mac.replace(':', '')}.state"
        cmd = [AGENT, "--api-url", self.url, "--mac", self.mac, "--disk", str(self.disk),
               "--listen", "127.0.0.1:0", "--advertise-host", "127.0.0.1",
               "--power-action", "exit", "--state-file", str(state), "--cmdline-file", "",
               "--lookup-timeout", "30"]
        self.agent, ready, self.log = start_ready(cmd, "METALCAST-AGENT ", 60,
                                                  f"metalcast-agent for {self.uuid}")
        assert ready["node_uuid"] == self.uuid and ready["callback_url"].startswith("https://")

    def power_off(self) -> None:
        """The machine is off: its agent is gone (it may have exited by itself)."""
        if self.agent is not None:
            stop(self.agent.pid, self.agent)
            self.agent = None

    def run(self, target: str, wait_state: str, final: str) -> dict:
        """Request ``target``, boot the ramdisk when the node waits, wait for ``final``."""
        self.request(target)
        self.wait((wait_state,))
        self.boot()
        try:
            return self.wait((final, "deploy failed", "clean failed"))
        finally:
            self.power_off()

    def prepare(self, clean: bool = True) -> None:
        """enroll -> manageable -> available (cleaning through the agent if asked)."""
        self.request("manage")
        self.wait(("manageable",))
        if not clean:
            api_call(self.url, "PATCH", f"/v1/nodes/{self.uuid}",
                     [{"op": "replace", "path": "/automated_clean", "value": False}])
            self.request("provide")
            self.wait(("available",))
            return
        node = self.run("provide", "clean wait", "available")
        assert node["provision_state"] == "available", node["last_error"]


@pytest.fixture
def machines(server, image, tmp_path):
    made: list[Machine] = []

    def make(count: int = 1) -> list[Machine]:
        new = [Machine(server.url, tmp_path, image[0], image[2]) for _ in range(count)]
        made.extend(new)
        return new
    yield make
    for machine in made:
        machine.power_off()


def head(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def test_deploy_and_undeploy_with_the_real_agent(machines, image):
    (machine,) = machines()
    data = image[3]
    machine.prepare(clean=True)
    assert head(machine.disk, 1 << 20) == b"\0" * (1 << 20)  # erase_devices_metadata ran

    active = machine.run("active", "wait call-back", "active")
    assert active["provision_state"] == "active", active["last_error"]
    assert head(machine.disk, len(data)) == data
    info = active["driver_internal_info"]
    assert info["fake_boot_device"] == {"boot_device": "disk", "persistent": True}
    assert "agent_secret_token" not in info and "agent_url" not in info
    assert info["root_uuid_or_disk_id"]  # the GPT disk GUID the agent read back
    assert active["power_state"] == "power on" and active["deploy_step"] == {}
    assert any("power_off" in line for line in machine.log), "".join(machine.log)

    cleaned = machine.run("deleted", "clean wait", "available")
    assert cleaned["provision_state"] == "available", cleaned["last_error"]
    assert head(machine.disk, 1 << 20) == b"\0" * (1 << 20)
    assert cleaned["instance_info"] == {} and cleaned["power_state"] == "power off"


def test_wrong_checksum_fails_the_step_and_redeploy_succeeds(machines, image):
    (machine,) = machines()
    machine.prepare(clean=False)
    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}", [
        {"op": "replace", "path": "/instance_info/image_os_hash_value", "value": "1" * 64}])
    failed = machine.run("active", "wait call-back", "active")
    assert failed["provision_state"] == "deploy failed"
    assert "write_image" in failed["last_error"] and "1111" in failed["last_error"]
    assert head(machine.disk, 1 << 20) == b"\0" * (1 << 20)  # no half image left bootable

    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}", [
        {"op": "replace", "path": "/instance_info/image_os_hash_value", "value": image[2]}])
    active = machine.run("active", "wait call-back", "active")
    assert active["provision_state"] == "active", active["last_error"]
    assert head(machine.disk, len(image[3])) == image[3]


def test_agent_killed_mid_write_fails_cleanly_and_redeploy_succeeds(machines, image):
    (machine,) = machines()
    machine.prepare(clean=False)
    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}", [
        {"op": "replace", "path": "/instance_info/image_source", "value": image[1]}])
    machine.request("active")
    machine.wait(("wait call-back",))
    machine.boot()
    wait_node(machine.url, machine.uuid,
              lambda n: (n["deploy_step"] or {}).get("step") == "write_image"
              and n["provision_state"] == "wait call-back", "writing the image")
    sent = ImageHandler.slow_sent
    wait_until(lambda: ImageHandler.slow_sent >= sent + (1 << 20), 30, 0.05,
               "the agent to have downloaded 1 MiB (well inside the ~8 s slow download)")
    machine.agent.kill()  # SIGKILL: no goodbye, no more heartbeats
    machine.agent.wait(10)
    machine.agent = None
    failed = machine.wait(("deploy failed",), timeout=DEPLOY_TIMEOUT + 60)
    # Either no heartbeat comes and the wait times out, or the kill lands while the
    # worker of the last heartbeat asks the agent about write_image (its tries refused).
    assert ("deploy_callback_timeout" in failed["last_error"] or
            "Connection to agent failed" in failed["last_error"]), failed["last_error"]
    assert "agent_secret_token" not in failed["driver_internal_info"]

    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}", [
        {"op": "replace", "path": "/instance_info/image_source", "value": image[0]}])
    active = machine.run("active", "wait call-back", "active")
    assert active["provision_state"] == "active", active["last_error"]
    assert head(machine.disk, len(image[3])) == image[3]


def test_several_machines_deploy_at_once(machines, image):
    fleet = machines(3)
    for machine in fleet:
        machine.prepare(clean=False)
    for machine in fleet:
        machine.request("active")
    for machine in fleet:
        machine.wait(("wait call-back",))
    with ThreadPoolExecutor(len(fleet)) as pool:  # the machines boot together
        list(pool.map(Machine.boot, fleet))
    for machine in fleet:
        node = machine.wait(("active", "deploy failed"))
        machine.power_off()
        assert node["provision_state"] == "active", node["last_error"]
        assert head(machine.disk, len(image[3])) == image[3]
