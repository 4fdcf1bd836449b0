"""The host A/B update engine end to end: ``metalcast-agent update ...`` as a real
process against a real HTTP Omaha server on loopback, writing a GPT disk image whose
slot bits the real ``cgpt`` reads.

The server is tests/functional/omaha_peer.py, a small responder that follows the
update-server contract of issue 16 (rendered with ``omaha_response.render_response``,
payloads with Range, the lease API): the appliance's own update server is being built
in parallel; once it lands these tests should also run against it.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ramdisk_agent.host.update.config import METALCAST_APPID
from tests.functional.ab_host import MIB, Host, cgpt_bits, change, make_image
from tests.functional.omaha_peer import Responder
from tests.functional.tools import require_all

SLOT = 8 * MIB


@pytest.fixture(autouse=True)
def tools():
    require_all(["cgpt", "sgdisk", "losetup"])


@pytest.fixture
def key():
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def server(key):
    with Responder(key, METALCAST_APPID) as responder:
        yield responder


def pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def images(tmp_path):
    v1 = make_image(tmp_path / "v1.img", SLOT, 1)
    return {"1.0.0": v1, "2.0.0": change(v1, tmp_path / "v2.img", 2)}


@pytest.fixture
def host(tmp_path, server, images, key):
    return Host(tmp_path / "host", server.url, SLOT, images["1.0.0"], "1.0.0", pem(key))


def installed(host: Host, server: Responder, version: str,
              image: Path) -> subprocess.CompletedProcess:
    host.know(image, version)
    done = host.run("check")
    assert "Update succeeded -- reboot needed." in done.stdout, done.stdout
    assert f"NEW_VERSION={version}" in done.stdout
    return done


def test_full_update_end_to_end(host, server, images):
    server.publish("2.0.0", images["2.0.0"])
    done = installed(host, server, "2.0.0", images["2.0.0"])
    assert "CURRENT_OP=UPDATE_STATUS_DOWNLOADING" in done.stdout
    assert "CURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT" in done.stdout
    # what flatcar-postinst leaves: new slot one try, not successful, above the old one
    assert cgpt_bits(host.disk, 4)[:3] == (2, 1, 0)
    assert cgpt_bits(host.disk, 3)[:3] == (1, 0, 1)
    assert cgpt_bits(host.disk, 4)[3] == "0x12"     # cgpt show -A: tries 1, priority 2
    assert host.slot_bytes(4) == images["2.0.0"].read_bytes()
    assert host.slot_bytes(3) == images["1.0.0"].read_bytes()
    assert (host.root / "reboot-required").exists()
    assert [(e.type, e.result) for e in server.events_of(13) + server.events_of(14)] == \
        [(13, 1), (14, 1)]
    assert server.events_of(3, 1) and server.events_of(800, 1)
    assert server.checks[0].appid == METALCAST_APPID and server.checks[0].track == "stable"
    status = host.run("status").stdout
    assert "CURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT" in status
    assert "NEW_SIZE=%d" % SLOT in status

    assert host.reboot() == 4 and host.running == "2.0.0"
    assert cgpt_bits(host.disk, 4)[:3] == (2, 0, 0)          # the try was used
    assert "Marked good" in host.run("mark-good").stdout
    assert cgpt_bits(host.disk, 4)[:3] == (2, 0, 1)          # flatcar-setgoodroot
    complete = server.events_of(3, 2)
    assert complete and complete[0].previous_version == "1.0.0"
    assert "CURRENT_OP=UPDATE_STATUS_IDLE" in host.run("check").stdout   # noupdate
    assert host.reboot() == 4                                # stays on the good slot
