"""The real ``metalcast-agent`` driven by a real ``metalcast serve`` (direct deploy).

One simulated machine = a MAC + a disk image file + an agent process per "boot"
(``--power-action exit``: power_off ends the process, as a powered-off machine).
Cleaning, deploy (image from the appliance's own boot HTTP server, qcow2 too), a
wrong checksum failing the deploy and the node deploying again, and undeploy.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading

import pytest

from conductor.netboot.http import BootHttpServer
from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import agent_sections, api_call, mac, provision, unique
from tests.functional.tools import require
from virtlab.process import stop

MIB = 1 << 20
IMAGE_SIZE = 5 * MIB + 4321


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("metalcast-agent-deploy"),
                          agent_sections(power_off_wait=0.2))
    yield server
    stop_server(server.process)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    data = os.urandom(IMAGE_SIZE)
    (root / "disk.raw").write_bytes(data)
    qemu_img = require("qemu-img")
    subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(root / "disk.raw"),
                    str(root / "disk.qcow2")], check=True)
    boot = BootHttpServer(root, "127.0.0.1", 0)
    boot.start()
    yield boot.url, root, data
    boot.stop()


class Machine:
    def __init__(self, url, tmp_path, image_url, digest, disk_format="raw"):
        self.url, self.mac = url, mac()
        self.disk = tmp_path / f"{self.mac.replace(':', '')}.disk"
        self.disk.write_bytes(b"\xee" * (IMAGE_SIZE + 3 * MIB))
        node = api_call(url, "POST", "/v1/nodes", {
            "name": unique("agent"), "driver": "fake-hardware", "deploy_interface": "direct",
            "instance_info": {"image_source": image_url, "image_os_hash_algo": "sha256",
                              "image_os_hash_value": digest, "image_disk_format": disk_format}},
            ok=(201,))
        self.uuid = node["uuid"]
        api_call(url, "POST", "/v1/ports", {"node_uuid": self.uuid, "address": self.mac},
                 ok=(201,))

    def run(self, target: str, state: str) -> dict:
        """Boot the ramdisk (start an agent), run ``target``, stop the agent."""
        cmd = [sys.executable, "-m", "ramdisk_agent.cli", "--cmdline-file", "",
               "--api-url", self.url, "--mac", self.mac, "--disk", str(self.disk),
               "--listen", "127.0.0.1:0", "--advertise-host", "127.0.0.1",
               "--power-action", "exit"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log: list[str] = []
        threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()
        try:
            return provision(self.url, self.uuid, target, state)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nagent log:\n{''.join(log)}") from None
        finally:
            stop(proc.pid, proc)


def test_clean_deploy_undeploy(appliance, images, tmp_path):
    url, root, data = images
    machine = Machine(appliance.url, tmp_path, url + "/disk.raw",
                      hashlib.sha256(data).hexdigest())
    provision(machine.url, machine.uuid, "manage", "manageable")
    cleaned = machine.run("provide", "available")
    assert machine.disk.read_bytes()[:MIB] == bytes(MIB)
    assert cleaned["last_error"] is None
    active = machine.run("active", "active")
    assert active["last_error"] is None
    assert machine.disk.read_bytes()[:IMAGE_SIZE] == data
    machine.run("deleted", "available")
    content = machine.disk.read_bytes()
    assert content[:MIB] == bytes(MIB) and content[-MIB:] == bytes(MIB)


def test_wrong_checksum_then_qcow2_deploy(appliance, images, tmp_path):
    url, root, data = images
    qcow = (root / "disk.qcow2").read_bytes()
    machine = Machine(appliance.url, tmp_path, url + "/disk.qcow2", "0" * 64, "qcow2")
    provision(machine.url, machine.uuid, "manage", "manageable")
    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}",
             [{"op": "replace", "path": "/automated_clean", "value": False}])
    provision(machine.url, machine.uuid, "provide", "available")
    failed = machine.run("active", "deploy failed")
    assert "checksum mismatch" in failed["last_error"]
    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}", [
        {"op": "replace", "path": "/instance_info/image_os_hash_value",
         "value": hashlib.sha256(qcow).hexdigest()}])
    active = machine.run("active", "active")
    assert active["last_error"] is None
    assert machine.disk.read_bytes()[:IMAGE_SIZE] == data
