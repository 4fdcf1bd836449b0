"""Delta re-imaging with the real ``metalcast-agent`` and a real ``metalcast serve``.

A node is deployed with image v1 (full image), then ``rebuild`` re-images it to v2
with a delta payload built by the real ``metalcast image delta`` CLI and signed with
the conductor's key. Rebuild does not clean, so the disk still holds v1 and the
agent applies the delta in place. The payloads and images come from
virtlab.imageserver on 127.0.0.1, whose request log shows what the agent fetched.

Every failing delta (tampered manifest, payload signed by another key, a disk that
is not v1) must make the conductor fall back to the full image: node active with v2;
a failing full image after that fails the node as usual.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conductor.updates import keys
from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import agent_sections, api_call
from tests.functional.test_agent_deploy import IMAGE_MIB, Machine, head, require
from virtlab.imageserver import ImageServer

METALCAST = str(Path(sys.executable).parent / "metalcast")
BLOCK = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("metalcast-delta"),
                           agent_sections(power_off_wait=1))
    yield running
    stop_server(running.process)


def _delta(root: Path, name: str, *extra: str) -> Path:
    out = root / name
    subprocess.run([METALCAST, "image", "delta", str(root / "v1.img"), str(root / "v2.img"),
                    "-o", str(out), "--image-version", "v2", *extra],
                   check=True, capture_output=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def images(server, tmp_path_factory):
    """v1 (GPT disk image), v2 (2 % of its blocks changed), and payloads v1 -> v2."""
    sgdisk = require("sgdisk")
    root = tmp_path_factory.mktemp("delta-images")
    v1 = root / "v1.img"
    v1.write_bytes(os.urandom(IMAGE_MIB << 20))
    subprocess.run([sgdisk, "-n", "1:2048:+2M", "-t", "1:ef00", "-n", "2:0:0",
                    "-t", "2:8300", str(v1)], check=True, capture_output=True)
    data = bytearray(v1.read_bytes())
    for block in range(300, len(data) // BLOCK, 50):     # 2 % of the blocks
        data[block * BLOCK:(block + 1) * BLOCK] = os.urandom(BLOCK)
    (root / "v2.img").write_bytes(data)
    _delta(root, "v2.delta", "--data-dir", str(server.data_dir))
    tampered = bytearray((root / "v2.delta").read_bytes())
    tampered[20] ^= 0x01        # inside the signed, compressed manifest
    (root / "tampered.delta").write_bytes(tampered)
    other = root / "other.key"
    keys.load_or_create(other)
    _delta(root, "other-key.delta", "--key", str(other))
    httpd = ImageServer(str(root))
    thread = httpd.start_background()
    yield httpd, root
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def deployed(server, images, tmp_path):
    """A node active with v1, written by the agent (full image)."""
    httpd, root = images
    machine = Machine(server.url, tmp_path, f"{httpd.url}/v1.img", _sha256(root / "v1.img"))
    machine.prepare(clean=False)
    node = machine.run("active", "wait call-back", "active")
    assert node["provision_state"] == "active", node["last_error"]
    assert head(machine.disk, IMAGE_MIB << 20) == (root / "v1.img").read_bytes()
    yield machine
    machine.power_off()


def _rebuild(machine: Machine, images, payload: str, v2_checksum: str | None = None,
             **extra) -> dict:
    """Point the node at v2 + ``payload`` and rebuild it; the node when it settles."""
    httpd, root = images
    fields = {"image_source": f"{httpd.url}/v2.img",
              "image_os_hash_value": v2_checksum or _sha256(root / "v2.img"),
              "image_delta_url": f"{httpd.url}/{payload}", "image_delta_version": "v2",
              **extra}
    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}",
             [{"op": "add", "path": f"/instance_info/{key}", "value": value}
              for key, value in fields.items()])
    del httpd.requests[:]
    return machine.run("rebuild", "wait call-back", "active")


def _fetched(images) -> set[str]:
    return {path for method, path, _ in images[0].requests if method == "GET"}


def _fell_back(server, node: dict, images, reason: str) -> None:
    """The delta failed for ``reason``, the full image was written, node active."""
    assert node["provision_state"] == "active", node["last_error"]
    state = node["driver_internal_info"]["delta_deploy"]
    assert state["state"] == "failed" and reason in state["error"], state
    assert "/v2.img" in _fetched(images)
    assert f"{node['uuid']}: delta failed: " in server.output()
    assert "falling back to the full image" in server.output()


def test_rebuild_applies_the_delta_in_place(server, images, deployed):
    root = images[1]
    node = _rebuild(deployed, images, "v2.delta",
                    image_delta_base_checksum=f"sha256:{_sha256(root / 'v1.img')}")
    assert node["provision_state"] == "active", node["last_error"]
    assert head(deployed.disk, IMAGE_MIB << 20) == (root / "v2.img").read_bytes()
    assert node["driver_internal_info"]["delta_deploy"]["state"] == "applied"
    assert node["driver_internal_info"]["deployed_image_checksum"] == \
        f"sha256:{_sha256(root / 'v2.img')}"
    assert _fetched(images) == {"/v2.delta"}  # the payload, not the full image
    assert any("delta" in line and "applied" in line for line in deployed.log), \
        "".join(deployed.log[-20:])


def test_tampered_manifest_fails_the_signature_and_falls_back(server, images, deployed):
    node = _rebuild(deployed, images, "tampered.delta")
    _fell_back(server, node, images, "signature does not verify")
    assert head(deployed.disk, IMAGE_MIB << 20) == (images[1] / "v2.img").read_bytes()


def test_payload_signed_by_another_key_falls_back(server, images, deployed):
    node = _rebuild(deployed, images, "other-key.delta")
    _fell_back(server, node, images, "signature does not verify")
    assert head(deployed.disk, IMAGE_MIB << 20) == (images[1] / "v2.img").read_bytes()


def test_disk_that_is_not_the_base_falls_back(server, images, deployed):
    with open(deployed.disk, "r+b") as disk:     # drift in an unchanged range of v1
        disk.seek(5 << 20)
        disk.write(b"\x5a" * BLOCK)
    node = _rebuild(deployed, images, "v2.delta")
    _fell_back(server, node, images, "another image version")
    assert head(deployed.disk, IMAGE_MIB << 20) == (images[1] / "v2.img").read_bytes()


def test_known_other_base_skips_the_delta(server, images, deployed):
    node = _rebuild(deployed, images, "v2.delta", image_delta_base_checksum="ab" * 32)
    assert node["provision_state"] == "active", node["last_error"]
    assert node["driver_internal_info"]["delta_deploy"]["state"] == "skipped"
    assert _fetched(images) == {"/v2.img"}
    assert head(deployed.disk, IMAGE_MIB << 20) == (images[1] / "v2.img").read_bytes()


def test_failed_full_image_after_a_failed_delta_fails_the_node(server, images, deployed):
    node = _rebuild(deployed, images, "tampered.delta", v2_checksum="1" * 64)
    assert node["provision_state"] == "deploy failed"
    assert "write_image" in node["last_error"] and "1111" in node["last_error"]
    assert node["driver_internal_info"]["delta_deploy"]["state"] == "failed"
    assert head(deployed.disk, 1 << 20) == b"\0" * (1 << 20)   # never left bootable


def test_non_http_delta_url_is_refused(server, images, tmp_path):
    httpd, root = images
    machine = Machine(server.url, tmp_path, f"{httpd.url}/v1.img", _sha256(root / "v1.img"))
    api_call(machine.url, "PATCH", f"/v1/nodes/{machine.uuid}", [
        {"op": "add", "path": "/instance_info/image_delta_url", "value": "ftp://x/v2.delta"}])
    validation = api_call(machine.url, "GET", f"/v1/nodes/{machine.uuid}/validate")
    assert validation["deploy"]["result"] is False
    assert "image_delta_url" in validation["deploy"]["reason"]
