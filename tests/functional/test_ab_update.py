"""The host A/B update engine end to end: ``metalcast-agent update ...`` as a real
process against a real HTTP Omaha server on loopback, writing a GPT disk image whose
slot bits the real ``cgpt`` reads.

The server is tests/functional/omaha_peer.py, a small responder that follows the
update-server contract of issue 16 (rendered with ``omaha_response.render_response``,
payloads with Range, the lease API): the appliance's own update server is being built
in parallel; once it lands these tests should also run against it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from conductor.updates import delta_build
from ramdisk_agent.host import gptdisk
from ramdisk_agent.host.update.client import LeaseClient
from ramdisk_agent.host.update.config import METALCAST_APPID
from ramdisk_agent.ramdisk.pipeline import CHUNK
from ramdisk_agent.wire import omaha_codes as codes
from tests.functional.ab_host import MIB, Host, cgpt_bits, change, make_image
from tests.functional.omaha_peer import Responder
from tests.functional.tools import require_all
from tests.waiting import wait_until

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
    made = Host(tmp_path / "host", server.url, SLOT, images["1.0.0"], "1.0.0", pem(key))
    yield made
    made.detach_loops()


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


def test_delta_update_reads_the_active_slot(host, server, images, key, tmp_path):
    delta = tmp_path / "v2.delta"
    delta_build.build(images["1.0.0"], images["2.0.0"], delta, key, "2.0.0")
    release = server.publish("2.0.0", images["2.0.0"], {"1.0.0": delta})
    installed(host, server, "2.0.0", images["2.0.0"])
    assert server.checks[0].delta_okay
    assert server.served == [release.deltas["1.0.0"]]        # only the delta travelled
    assert host.slot_bytes(4) == images["2.0.0"].read_bytes()
    assert cgpt_bits(host.disk, 4)[:3] == (2, 1, 0)


def test_a_failed_delta_falls_back_to_the_full_image(host, server, images, key, tmp_path):
    """A delta built from another source (2.0.0 itself): its copy ranges do not match
    the active slot, apply refuses before writing; the engine reports it and asks for
    the full image."""
    delta = tmp_path / "bad.delta"
    delta_build.build(images["2.0.0"], images["2.0.0"], delta, key, "2.0.0")
    release = server.publish("2.0.0", images["2.0.0"], {"1.0.0": delta})
    installed(host, server, "2.0.0", images["2.0.0"])
    assert [check.delta_okay for check in server.checks] == [True, False]
    assert server.served == [release.deltas["1.0.0"], release.full]
    failed = server.events_of(3, 0)
    assert [e.error_code for e in failed] == [28]
    assert host.slot_bytes(4) == images["2.0.0"].read_bytes()
    assert cgpt_bits(host.disk, 4)[:3] == (2, 1, 0)


def test_a_tampered_payload_is_never_made_bootable(host, server, images):
    server.publish("2.0.0", images["2.0.0"])
    server.tamper = True
    done = host.run("check", check=False)
    assert done.returncode == 1 and "SHA-256" in done.stderr, done.stderr
    assert cgpt_bits(host.disk, 4)[:3] == (0, 0, 0)
    assert [e.error_code for e in server.events_of(3, 0)] == [10]
    assert host.reboot() == 3 and host.running == "1.0.0"
    assert "LAST_ERROR=10" in host.run("status").stdout


def test_an_image_signed_by_another_key_is_refused_before_download(host, server, images):
    server.publish("2.0.0", images["2.0.0"], key=ed25519.Ed25519PrivateKey.generate())
    done = host.run("check", check=False)
    assert done.returncode == 1 and "signature" in done.stderr, done.stderr
    assert server.served == []
    assert [e.error_code for e in server.events_of(3, 0)] == [12]
    assert cgpt_bits(host.disk, 4)[:3] == (0, 0, 0)


def test_a_corrupted_primary_gpt_header_is_repaired_from_the_backup(host, server, images):
    with open(host.disk, "r+b") as disk:       # LBA 1: the primary header
        disk.seek(512 + 24)
        disk.write(b"\xff" * 8)
    assert gptdisk.read(host.disk).primary is None
    server.publish("2.0.0", images["2.0.0"])
    installed(host, server, "2.0.0", images["2.0.0"])
    table = gptdisk.read(host.disk)
    assert table.whole, table.problems
    assert cgpt_bits(host.disk, 4)[:3] == (2, 1, 0)
    out = subprocess.run(["sgdisk", "-v", host.disk], capture_output=True, text=True).stdout
    assert "No problems found" in out, out


def test_a_failed_health_check_rolls_back_and_is_reported(host, server, images):
    server.publish("2.0.0", images["2.0.0"])
    installed(host, server, "2.0.0", images["2.0.0"])
    assert host.reboot() == 4
    (host.root / "healthy").unlink()                   # the new version is broken
    done = host.run("mark-good", check=False)
    assert done.returncode == 1 and "Not marked good" in done.stdout
    assert cgpt_bits(host.disk, 4)[:3] == (2, 0, 0)     # not successful, no try left
    assert host.reboot() == 3 and host.running == "1.0.0"   # gptprio fell back
    server.release = None
    host.run("check")
    rollback = server.events_of(3, 0)
    assert [(e.error_code, e.is_rollback) for e in rollback] == [(codes.ROLLBACK, True)]
    status = host.run("status").stdout
    assert "LAST_ERROR=44 rollback" in status and "UPDATE_STATUS_IDLE" in status


def test_killed_mid_write_the_next_check_resumes(tmp_path, server, key, request):
    """SIGKILL while the passive slot is written: the active slot is intact, the passive
    one unbootable; the next check re-hashes the checkpointed prefix from the slot and
    continues the download with Range."""
    size = 96 * MIB
    v1 = make_image(tmp_path / "v1.img", size, 1)
    v2 = make_image(tmp_path / "v2.img", size, 2)
    host = Host(tmp_path / "host", server.url, size, v1, "1.0.0", pem(key))
    request.addfinalizer(host.detach_loops)
    host.know(v2, "2.0.0")
    server.publish("2.0.0", v2)
    server.stall_after = 80 * MIB
    state = host.root / "state" / "state.json"
    agent = subprocess.Popen(host.command("check"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        wait_until(lambda: state.exists() and json.loads(state.read_text())["checkpoint"],
                   timeout=120, message="no checkpoint was written")
        wait_until(lambda: server.stall_reached, timeout=120)
    finally:
        os.kill(agent.pid, signal.SIGKILL)
        agent.communicate()
    checkpoint = json.loads(state.read_text())["checkpoint"]
    # The first checkpoint is the written prefix once it reaches 64 MiB; the two writers
    # finish out of order, so it can pass 64 MiB by a chunk or two, never the 80 sent.
    assert 64 * MIB <= checkpoint <= 80 * MIB and checkpoint % CHUNK == 0
    leftover = subprocess.run(["losetup", "-n", "-O", "NAME", "-j", host.disk],
                              capture_output=True, text=True).stdout.split()
    assert len(leftover) == 1              # the killed engine's slot mapping
    assert host.slot_bytes(3) == v1.read_bytes()
    assert cgpt_bits(host.disk, 4)[:3] == (0, 0, 0)
    assert host.reboot() == 3
    host.boot(3, "1.0.0")
    server.stall_after = None
    server.ranges.clear()
    done = host.run("check")
    assert "Update succeeded -- reboot needed." in done.stdout
    assert server.ranges == [checkpoint]
    assert subprocess.run(["losetup", "-n", "-j", host.disk], capture_output=True,
                          text=True).stdout == ""      # reused, then detached
    assert host.slot_bytes(4) == v2.read_bytes()
    assert cgpt_bits(host.disk, 4)[:3] == (2, 1, 0)


def test_a_lease_holder_that_disappears_loses_the_lease(host, server, images):
    """Lease max 1: another host took it and powered off. This host waits (no reboot),
    proceeds once the dead holder's lease ran out, and releases its own when healthy."""
    server.tokens = {"node-gone": "t1", "node-here": "t2"}
    host.token("node-here", "t2")
    server.publish("2.0.0", images["2.0.0"])
    host.conf(REBOOT_STRATEGY="lease")
    installed(host, server, "2.0.0", images["2.0.0"])
    gone = LeaseClient(server.url + "/updates/v1/leases", "node-gone", "t1")
    assert gone.acquire().held                         # then it powers off, never renews
    assert "REBOOT=lease-busy" in host.run("reboot").stdout
    assert not host.marker.exists() and server.holders() == ["node-gone"]
    server.leases["node-gone"] = time.monotonic() + 1.0    # its TTL runs out
    wait_until(lambda: not server.holders(), message="the lease never expired")
    assert "REBOOT=rebooting" in host.run("reboot").stdout
    assert host.marker.exists() and server.holders() == ["node-here"]
    assert host.reboot() == 4
    host.run("mark-good")
    assert server.holders() == []                      # released once healthy


def test_no_reboot_outside_the_window(host, server, images):
    import datetime as dt
    later = (dt.datetime.now() + dt.timedelta(hours=3)).strftime("%H:%M")
    server.tokens = {"node-here": "t2"}
    host.token("node-here", "t2")
    host.conf(REBOOT_STRATEGY="lease", REBOOT_WINDOW_START=later, REBOOT_WINDOW_LENGTH="1h")
    server.publish("2.0.0", images["2.0.0"])
    installed(host, server, "2.0.0", images["2.0.0"])
    assert "REBOOT=outside-window" in host.run("reboot").stdout
    assert not host.marker.exists() and server.holders() == []    # no lease taken either
    now = dt.datetime.now().strftime("%a %H:%M")
    host.conf(REBOOT_WINDOW_START=now, REBOOT_WINDOW_LENGTH="2h")
    assert "REBOOT=rebooting" in host.run("reboot").stdout
    assert host.marker.exists()


def test_the_daemon_marks_good_checks_installs_and_reboots(host, server, images):
    """``update daemon`` on its own schedule (first check at once here): the boot is
    marked good, the update installed, and the reboot command run (strategy reboot)."""
    host.gpt.set_attributes(3, successful=False)         # a fresh boot, not yet proven
    server.publish("2.0.0", images["2.0.0"])
    host.know(images["2.0.0"], "2.0.0")
    host.conf(FIRST_CHECK_DELAY="0", CHECK_FUZZ="0", CHECK_INTERVAL="1")
    daemon = subprocess.Popen(host.command("daemon"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_until(host.marker.exists, timeout=120, message="the daemon never rebooted")
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
    assert cgpt_bits(host.disk, 3)[:3] == (1, 0, 1)     # marked good at start
    assert cgpt_bits(host.disk, 4)[:3] == (2, 1, 0)     # installed for one try
    assert host.slot_bytes(4) == images["2.0.0"].read_bytes()


@pytest.mark.parametrize("needs_appliance,marked", [("true", False), ("false", True)])
def test_appliance_unreachable_during_the_health_window(host, needs_appliance, marked):
    """Default (true): a boot that cannot reach the appliance is not marked good - an
    image that breaks the network rolls back by itself. false: local checks suffice."""
    host.gpt.set_attributes(3, successful=False, tries=1)
    host.conf(SERVER="http://127.0.0.1:9/v1/update/", HEALTH_NEEDS_APPLIANCE=needs_appliance)
    done = host.run("mark-good", check=False)
    assert (done.returncode == 0) == marked, done.stdout + done.stderr
    assert cgpt_bits(host.disk, 3)[2] == int(marked)
    if not marked:
        assert "appliance was not reached" in done.stdout


def test_a_block_device_disk(host, server, images):
    """DISK= a block device (a loop device over the disk image, standing in for a real
    disk): the slots are written through the kernel's partition devices when it made
    them, else through a loop device over the slot's range of the device; the GPT on
    the device carries the bits."""
    device = subprocess.run(["losetup", "--find", "--show", "--partscan", host.disk],
                            check=True, capture_output=True, text=True).stdout.strip()
    try:
        server.publish("2.0.0", images["2.0.0"])
        host.conf(DISK=device)
        installed(host, server, "2.0.0", images["2.0.0"])
        assert cgpt_bits(device, 4)[:3] == (2, 1, 0)
        assert host.slot_bytes(4) == images["2.0.0"].read_bytes()
        assert subprocess.run(["losetup", "-n", "-j", device], capture_output=True,
                              text=True).stdout == ""    # its slot mappings are detached
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
