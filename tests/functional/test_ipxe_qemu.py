"""Real iPXE (Debian's ipxe-qemu ROM in QEMU, TCG) runs our generic boot.ipxe and a
per-node script served by BootHttpServer.

QEMU user networking with ``restrict=on``: its built-in DHCP/TFTP hands out
boot.ipxe from our rendered TFTP root, and the only host port the guest reaches
is our HTTP boot server (``guestfwd`` through tests/functional/stdio_to_tcp.py).
The kernel is 1 MiB of zeros, so iPXE fetches it, refuses to execute it, and the
script's retry loop shows; nothing boots, each VM lives about 10 s.
"""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conductor.netboot.http import BootHttpServer
from conductor.netboot.render import NodeBoot, Renderer, checked_token, locate
from tests.functional.netboot_peers import require, require_file

GUEST_HTTP = "http://10.0.2.100:8080"  # guestfwd address inside the VM
MACS = ("52:54:00:5e:00:01", "52:54:00:5e:00:02")
VM_TIMEOUT = 90
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def lab(tmp_path):
    require("qemu-system-x86_64")
    require_file("/usr/lib/ipxe/qemu/efi-virtio.rom")
    renderer = Renderer(tmp_path / "tftp", tmp_path / "http", GUEST_HTTP)
    renderer.check_templates()
    renderer.install()
    (tmp_path / "http" / "agent").mkdir()
    (tmp_path / "http" / "agent" / "vmlinuz").write_bytes(bytes(1 << 20))
    (tmp_path / "http" / "agent" / "initramfs").write_bytes(bytes(1024))
    server = BootHttpServer(tmp_path / "http", "127.0.0.1", 0)
    server.start()
    yield renderer, server, tmp_path
    server.stop()


def run_vm(tmp_path: Path, http_port: int, until: bytes) -> str:
    """Boot a two-NIC diskless VM from the network; its console once ``until`` shows."""
    forward = f"{sys.executable} {Path(__file__).with_name('stdio_to_tcp.py')} {http_port}"
    cmd = ["timeout", str(VM_TIMEOUT), require("qemu-system-x86_64"), "-accel", "tcg",
           "-m", "256", "-nographic", "-no-reboot", "-boot", "n",
           "-netdev", f"user,id=n0,restrict=on,tftp={tmp_path / 'tftp'},bootfile=boot.ipxe,"
                      f"guestfwd=tcp:10.0.2.100:8080-cmd:{forward}",
           "-device", f"virtio-net-pci,netdev=n0,mac={MACS[0]}",
           "-netdev", "user,id=n1,restrict=on",
           "-device", f"virtio-net-pci,netdev=n1,mac={MACS[1]},romfile="]
    # Own session: `timeout` and its QEMU form one process group we can end together
    # (SIGKILL to `timeout` alone would orphan a QEMU that burns a core).
    process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    console, deadline = b"", time.monotonic() + VM_TIMEOUT
    try:
        while until not in ANSI.sub(b"", console) and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1)
            chunk = os.read(process.stdout.fileno(), 65536) if ready else b""
            if ready and not chunk:
                break
            console += chunk
    finally:
        stop_group(process)
    return ANSI.sub(b"", console).decode(errors="replace").replace("\r", "")


def stop_group(process: subprocess.Popen) -> None:
    """Kill the process group of the `timeout` we started (it and its QEMU), by its id."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)
    process.stdout.close()


def test_ipxe_finds_the_script_of_its_second_nic_and_retries_downloads(lab):
    renderer, server, tmp_path = lab
    renderer.write(NodeBoot(
        "8d3c2a4e-0d1e-4c4b-9d55-1f0e7a6b2c11", "vm-1", (MACS[1],), "ipxe",
        locate("agent/vmlinuz", "ipxe", GUEST_HTTP, "k"),
        locate("agent/initramfs", "ipxe", GUEST_HTTP, "r"),
        (checked_token("ipa-api-url=http://10.0.2.100:6385", "p"),)))
    console = run_vm(tmp_path, server.port, b"retrying in 2 s")
    assert "tftp://10.0.2.2/boot.ipxe... ok" in console, console
    # net0 has no config (404), the loop moves on to net1, whose script is there.
    assert f"{GUEST_HTTP}/ipxe/52-54-00-5e-00-01.ipxe... No such file" in console, console
    assert f"{GUEST_HTTP}/ipxe/52-54-00-5e-00-02.ipxe... ok" in console, console
    assert f"{GUEST_HTTP}/agent/vmlinuz... ok" in console, console
    assert "Exec format error" in console
    assert "metalcast: boot attempt 1 failed, retrying in 1 s" in console
    assert "metalcast: boot attempt 2 failed, retrying in 2 s" in console


def test_ipxe_without_a_node_script_hands_over_to_the_next_boot_device(lab):
    _, server, tmp_path = lab
    console = run_vm(tmp_path, server.port, b"No bootable device")
    assert "metalcast: no boot configuration for 52:54:00:5e:00:01" in console, console
    assert "Booting from Hard Disk" in console and "No bootable device" in console, console
