"""A STOCK ironic-python-agent (13.x from PyPI, unmodified) is metalcast's peer.

The agent-driven path (``direct`` deploy, fake power) must work with the agent Ironic
users run, not only ``metalcast-agent``. IPA itself runs on a test machine
(tests/functional/stock_ipa_machine.py: a network namespace whose NIC has the node's
port MAC, a loop device as its only disk) against a real ``metalcast serve`` listening
on the provisioning link with HTTP basic auth (the ramdisk endpoints stay open). IPA
does everything itself: version discovery, lookup, auto TLS (the callback is HTTPS,
its certificate sent as ``agent_verify_ca``), token, heartbeats, clean and deploy
steps, streaming or converting the image with checksum verification, power off. Each
test checks what ends up on the machine's disk, byte for byte.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
from pathlib import Path

import bcrypt
import pytest
import requests

from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import mac, unique
from tests.functional.stock_ipa_machine import Disk, ProvisioningNet, StockAgent, require_stock_ipa
from tests.functional.tools import require
from tests.waiting import wait_until
from virtlab.imageserver import ImageServer

IMAGE_MIB = 8
HEADERS = {"X-OpenStack-Ironic-API-Version": "latest"}
USER, PASSWORD = "operator", "stock-ipa-test"
TIMEOUT = 120  # a generous bound for a shared 2-core machine, not a timing assertion
#: What IPA left on the machine that a test reads when the node never gets there.
LOG_TAIL = 6000


@pytest.fixture(scope="module")
def agent_exe() -> Path:
    return require_stock_ipa()


@pytest.fixture(scope="module")
def net(agent_exe):
    with ProvisioningNet() as lab:
        yield lab


@dataclasses.dataclass(frozen=True)
class Image:
    """A GPT whole-disk image served on the provisioning link: raw, as qcow2, and a
    tampered raw copy (one byte changed)."""

    data: bytes
    url: str
    qcow2_url: str
    qcow2_sha256: str
    tampered_url: str
    tampered_sha256: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@pytest.fixture(scope="module")
def image(net, tmp_path_factory):
    root = tmp_path_factory.mktemp("stock-ipa-image")
    raw, qcow2, tampered = root / "disk.img", root / "disk.qcow2", root / "tampered.img"
    raw.write_bytes(hashlib.sha512(b"stock ipa").digest() * (IMAGE_MIB << 14))
    subprocess.run([require("sgdisk"), "-n", "1:2048:+2M", "-t", "1:ef00", "-n", "2:0:0",
                    "-t", "2:8300", str(raw)], check=True, capture_output=True, timeout=60)
    subprocess.run([require("qemu-img"), "convert", "-f", "raw", "-O", "qcow2", str(raw),
                    str(qcow2)], check=True, capture_output=True, timeout=60)
    data = raw.read_bytes()
    middle = len(data) // 2
    tampered.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    server = ImageServer(str(root), net.host_ip)
    thread = server.start_background()
    yield Image(data, f"{server.url}/disk.img", f"{server.url}/disk.qcow2",
                hashlib.sha256(qcow2.read_bytes()).hexdigest(), f"{server.url}/tampered.img",
                hashlib.sha256(tampered.read_bytes()).hexdigest())
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def api(net, tmp_path_factory):
    """metalcast serve on the provisioning link (not loopback: HTTP basic auth)."""
    data_dir = tmp_path_factory.mktemp("metalcast-stock-ipa")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (data_dir / "htpasswd").write_text(f"{USER}:{hashed}\n")
    running = start_server(data_dir, {
        "api": {"auth_strategy": "http_basic", "htpasswd_file": data_dir / "htpasswd"},
        "agent": {"post_deploy_power_off_wait": 1, "heartbeat_timeout": 2,
                  "command_wait_interval": 0.2},
        "conductor": {"deploy_callback_timeout": 90, "check_provision_state_interval": 1},
        # IPA's full erase (shred) too: the disk is only the image's size.
        "deploy": {"erase_devices_priority": 10},
    }, host=net.host_ip)
    yield running
    stop_server(running.process)


def call(api, method: str, path: str, body=None, ok=(200,)):
    """One API call as the operator; a 409 (the node is locked a moment) is retried,
    as the Ironic clients do."""
    answers: list[requests.Response] = []

    def answered():
        answers[:] = [requests.request(method, api.url + path, json=body, headers=HEADERS,
                                       auth=(USER, PASSWORD), timeout=30)]
        return answers[0].status_code != 409
    wait_until(answered, 30, 0.2, lambda: f"{method} {path} without a 409: {answers[0].text}")
    response = answers[0]
    assert response.status_code in ok, f"{method} {path}: {response.text}"
    return response.json() if response.content else None


class Node:
    """A fake-power node with the machine's MAC and disk, deployed by the stock IPA."""

    def __init__(self, api, net, folder: Path, size: int, instance_info: dict,
                 clean: bool):
        self.api, self.net, self.folder = api, net, folder
        self.disk = Disk(folder / "disk0", size)
        self.address = mac()
        net.set_mac(self.address)
        node = call(api, "POST", "/v1/nodes", {
            "name": unique("stock-ipa"), "driver": "fake-hardware",
            "deploy_interface": "direct", "automated_clean": clean,
            # A root device hint: IPA's own rule (the smallest disk >= 4 GiB) would
            # need a 4 GiB disk; the hint lets the disk be exactly the image's size.
            "properties": {"root_device": {"name": self.disk.device}},
            "instance_info": instance_info}, ok=(201,))
        self.uuid = node["uuid"]
        call(api, "POST", "/v1/ports", {"node_uuid": self.uuid, "address": self.address},
             ok=(201,))
        self.agent: StockAgent | None = None

    def get(self) -> dict:
        return call(self.api, "GET", f"/v1/nodes/{self.uuid}")

    def set_instance_info(self, **fields) -> None:
        call(self.api, "PATCH", f"/v1/nodes/{self.uuid}", [
            {"op": "add", "path": f"/instance_info/{key}", "value": value}
            for key, value in fields.items()])

    def request(self, target: str) -> None:
        call(self.api, "PUT", f"/v1/nodes/{self.uuid}/states/provision",
             {"target": target}, ok=(202,))

    def wait(self, *states: str) -> dict:
        """The node once it is in one of ``states`` with its lock released."""
        seen: dict = {}

        def reached():
            seen.clear()
            seen.update(self.get())
            if self.agent is not None:
                self.agent.check_alive()
            return seen["provision_state"] in states and seen["reservation"] is None

        def why() -> str:
            log = self.agent.log()[-LOG_TAIL:] if self.agent else "(no agent booted)"
            return (f"node {self.uuid} to reach {states} (it is {seen.get('provision_state')}"
                    f", last_error={seen.get('last_error')})\nIPA log tail:\n{log}")
        wait_until(reached, TIMEOUT, 0.2, why)
        return dict(seen)

    def boot(self, agent_exe: Path, **kwargs) -> StockAgent:
        """The conductor "rebooted" the node (fake power): the ramdisk boots."""
        if self.agent is not None:
            self.agent.stop()
        self.agent = StockAgent(agent_exe, self.net, self.disk, self.api.url, self.folder,
                                **kwargs)
        return self.agent

    def run(self, agent_exe: Path, target: str, wait_state: str, *final: str) -> dict:
        """Request ``target``; boot the ramdisk once the node waits for it; wait for
        ``final``; then the machine is off (the test stops what IPA left running)."""
        self.request(target)
        self.wait(wait_state)
        self.boot(agent_exe)
        try:
            return self.wait(*final)
        finally:
            self.agent.stop()

    def destroy(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        self.disk.detach()


@pytest.fixture
def make_node(api, net, image, tmp_path):
    made: list[Node] = []

    def make(url: str | None = None, digest: str | None = None, clean: bool = False,
             disk_format: str | None = "raw") -> Node:
        folder = tmp_path / f"machine{len(made)}"
        folder.mkdir()
        instance = {"image_source": url or image.url, "image_os_hash_algo": "sha256",
                    "image_os_hash_value": digest or image.sha256}
        if disk_format:
            instance["image_disk_format"] = disk_format
        node = Node(api, net, folder, len(image.data), instance, clean)
        made.append(node)
        return node
    yield make
    for node in made:
        node.destroy()


def until_wait_callback(node: Node) -> None:
    """enroll -> manageable -> available -> deploy: the conductor waits for the ramdisk."""
    for target, state in (("manage", "manageable"), ("provide", "available"),
                          ("active", "wait call-back")):
        node.request(target)
        node.wait(state)


def deploy(node: Node, agent_exe: Path, **kwargs) -> dict:
    """Deploy a new node: the ramdisk boots when the conductor waits for it."""
    until_wait_callback(node)
    node.boot(agent_exe, **kwargs)
    return node.wait("active", "deploy failed")


def assert_active(node: Node, done: dict, image: Image) -> None:
    log = node.agent.log()
    assert done["provision_state"] == "active", f"{done['last_error']}\n{log[-LOG_TAIL:]}"
    assert node.disk.read() == image.data  # IPA wrote the image, byte for byte
    info = done["driver_internal_info"]
    assert info["fake_boot_device"] == {"boot_device": "disk", "persistent": True}
    assert not {"agent_secret_token", "agent_url", "agent_verify_ca"} & set(info)
    assert done["power_state"] == "power on" and done["deploy_step"] == {}


def test_stock_ipa_deploys_a_raw_image(make_node, agent_exe, image, api):
    node = make_node()
    done = deploy(node, agent_exe)
    assert_active(node, done, image)
    log = node.agent.log()
    # IPA's own path: lookup by the NIC's MAC, HTTPS callback, streaming the raw image.
    assert f"Looking up node with addresses '{node.address}'" in log
    assert re.search(r"announcing callback URL https://[\d.]+:9999, API version is 1\.68",
                     log), log[-LOG_TAIL:]
    assert "Generating TLS parameters automatically" in log
    assert "Image streamed onto device" in log and node.disk.device in log
    # IPA powered the machine off itself (standby.power_off ran `poweroff`, nothing
    # reached /proc/sysrq-trigger), then the conductor made sure through fake power.
    node.agent.wait_exit(30)
    assert node.agent.powered_off() == ["poweroff "]
    # The conductor verified IPA's self-signed certificate: the one it was sent (the
    # only trust anchor of that connection; a wrong one is refused in
    # tests/security/test_agent_client_limits.py).
    assert f"TLS to the agent of node {node.uuid} pinned to the certificate of its " \
        "heartbeats (sha256 " in api.output()


@pytest.mark.parametrize("disk_format", ["qcow2", None])
def test_stock_ipa_converts_a_qcow2_image(make_node, agent_exe, image, disk_format):
    """Not streamed: IPA downloads the image to a file named after image_info's id,
    inspects its format (it must be one the lookup permits) and converts it onto the
    disk with qemu-img. Without image_disk_format (the operator did not say) IPA finds
    the format out itself. (A raw image needs image_disk_format=raw with a stock IPA:
    IPA 13 detects a raw GPT disk as "gpt" and qemu-img knows no such format.)"""
    node = make_node(url=image.qcow2_url, digest=image.qcow2_sha256, disk_format=disk_format)
    done = deploy(node, agent_exe)
    assert_active(node, done, image)
    log = node.agent.log()
    assert "qemu-img convert" in log and "Image streamed onto device" not in log
    assert "/tmp/disk.qcow2" in log  # the download's file name: image_info's id


def test_tampered_image_fails_the_deploy_with_ipas_reason(make_node, agent_exe, image):
    node = make_node(url=image.tampered_url, digest=image.sha256)
    done = deploy(node, agent_exe)
    assert done["provision_state"] == "deploy failed", done
    error = done["last_error"]
    # IPA's own words (ImageChecksumError's details, not its title), with the digest
    # the node expects and the one IPA computed from what it downloaded.
    assert "write_image" in error and "Image failed to verify against checksum" in error
    assert image.sha256 in error and image.tampered_sha256 in error, error
    assert done["power_state"] == "power off"
    assert not {"agent_secret_token", "agent_url"} & set(done["driver_internal_info"])

    # Nothing is lost: with the real image the node deploys (a new boot, a new token).
    node.set_instance_info(image_source=image.url)
    active = node.run(agent_exe, "active", "wait call-back", "active", "deploy failed")
    assert_active(node, active, image)


def test_stock_ipa_cleans_deploys_and_cleans_again(make_node, agent_exe, image):
    """The whole life through IPA: cleaning (its erase steps) on provide, deploy,
    cleaning again on undeploy; each boot is a new agent with a new token."""
    node = make_node(clean=True)
    node.request("manage")
    node.wait("manageable")
    cleaned = node.run(agent_exe, "provide", "clean wait", "available", "clean failed")
    log = node.agent.log()
    assert cleaned["provision_state"] == "available", \
        f"{cleaned['last_error']}\n{log[-LOG_TAIL:]}"
    assert "erase_devices_metadata" in log and "shred" in log
    assert node.disk.read() == b"\0" * len(image.data)  # shred --zero: every byte erased

    active = node.run(agent_exe, "active", "wait call-back", "active", "deploy failed")
    assert_active(node, active, image)

    again = node.run(agent_exe, "deleted", "clean wait", "available", "clean failed")
    assert again["provision_state"] == "available", again["last_error"]
    assert node.disk.read() == b"\0" * len(image.data)
    assert again["instance_info"] == {} and again["power_state"] == "power off"


def test_plain_http_callback_is_refused(make_node, agent_exe):
    """Callbacks must be HTTPS by default: IPA without auto TLS never gets a command."""
    node = make_node()
    until_wait_callback(node)
    agent = node.boot(agent_exe, auto_tls=False)
    wait_until(lambda: re.search(r"Error 400: .*not HTTPS", agent.log()), TIMEOUT, 0.2,
               lambda: f"IPA's heartbeat refused as not HTTPS; log tail:\n"
                       f"{agent.log()[-LOG_TAIL:]}")
    assert "POST /v1/commands" not in agent.log()
    current = node.get()
    assert current["provision_state"] == "wait call-back"
    assert "agent_url" not in current["driver_internal_info"]
