"""A real network boot: a diskless QEMU machine PXE-boots from ``metalcast serve``.

Topology (test-lab.md section 2, virtlab.netlab): a fresh network namespace with
br0 (10.77.0.1/24 + fd77::1/64) and tap0. Inside it run ``metalcast serve`` (API,
TFTP and boot HTTP servers on 10.77.0.1, its managed dnsmasq on br0) and QEMU
(TCG, ``-boot n``), whose iPXE ROM does: DHCP -> boot.ipxe -> the per-node script
metalcast rendered -> Debian's kernel + a busybox initramfs over HTTP. The
initramfs loads virtio-net, takes a lease and calls ``GET /v1/lookup`` with its
MAC; the node is in "clean wait" (enrolled with the ipxe boot and direct deploy
interfaces, then manage + provide), so the appliance answers 200 with the node and
issues the agent token. Every process is stopped by PID and the namespace is
deleted, also when an assertion fails.

Needs root. The kernel is fetched with apt into ~/.cache/metalcast (or
$METALCAST_CACHE) on first use; nothing is downloaded from anywhere else.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.functional.helpers import unique
from virtlab.guest import cache_root, debian_kernel
from virtlab.initramfs import build_lookup_initramfs
from virtlab.netlab import NetLab
from virtlab.pxe_appliance import KERNEL_NAME, RAMDISK_NAME, ApplianceLab
from virtlab.pxeboot import VM_TIMEOUT, BootedVM, boot_timeline, fetched_urls, power_on

#: tool -> the Debian package that ships it (scripts/install-system-packages).
TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "dnsmasq": "dnsmasq-base",
         "busybox": "busybox-static", "curl": "curl", "ip": "iproute2",
         "apt-get": "apt", "dpkg-deb": "dpkg"}
#: file -> the Debian package that ships it.
FILES = {"/usr/lib/ipxe/qemu/efi-virtio.rom": "ipxe-qemu",  # QEMU's virtio-net ROM (iPXE)
         "/usr/lib/ipxe/undionly.kpxe": "ipxe"}  # what metalcast hands BIOS firmware
MAC = "52:54:00:6d:63:01"
HEXHYP = MAC.replace(":", "-")


def _require_lab() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    missing += [pkg for path, pkg in FILES.items() if not os.path.exists(path)]
    if missing:
        pytest.fail(f"the PXE boot test needs the Debian packages {', '.join(missing)} "
                    "(run scripts/install-system-packages as root)")
    if os.geteuid() != 0:
        pytest.fail("the PXE boot test needs root (network namespace, bridge, tap)")


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    """(kernel, initramfs): Debian's kernel from the cache, a freshly packed initramfs."""
    _require_lab()
    kernel = debian_kernel(cache_root())
    initrd = build_lookup_initramfs(kernel, tmp_path_factory.mktemp("guest") / "initrd.gz")
    return kernel, initrd


def _evidence(vm: BootedVM | None, appliance: ApplianceLab) -> str:
    console = vm.console.text() if vm else "(no VM)"
    server = appliance.log.text() if appliance.log else ""
    return f"\n--- serial console ---\n{console}\n--- metalcast serve (tail) ---\n{server[-6000:]}"


def test_diskless_vm_pxe_boots_from_metalcast_and_looks_itself_up(guest, tmp_path):
    kernel, initrd = guest
    with NetLab() as lab:
        with ApplianceLab(lab, tmp_path, kernel.vmlinuz, initrd) as appliance:
            vm = None
            try:
                node = _prepare_node(appliance)
                vm = power_on(lab, MAC)
                code = vm.wait(VM_TIMEOUT + 15)
                assert code == 0, f"QEMU exited with {code} (124: timeout, 200: nothing to boot)"
                _check_boot(vm, appliance, node, lab)
            except Exception as exc:
                raise AssertionError(f"{exc}{_evidence(vm, appliance)}") from exc
        # metalcast stopped by PID took its dnsmasq down with it; the VM is gone.
        assert appliance.process is None and vm.process.poll() is not None
        assert lab.pids() == [], f"processes left in {lab.name}: {lab.pids()}"
    assert not lab.exists(), f"namespace {lab.name} was not deleted"


def _prepare_node(appliance: ApplianceLab) -> dict:
    """Enrol the VM's node; the lookup refuses it until cleaning boots it."""
    node = appliance.enrol(MAC, unique("pxe-vm"))
    appliance.provision(node["uuid"], "manage", "manageable")
    appliance.api("GET", f"/v1/lookup?addresses={MAC}", auth=False, ok=(404,))
    node = appliance.provision(node["uuid"], "provide", "clean wait")
    script = appliance.data / "httpboot" / "ipxe" / f"{HEXHYP}.ipxe"
    assert script.is_file(), f"no per-node iPXE script {script}"
    return node


def _check_boot(vm: BootedVM, appliance: ApplianceLab, node: dict, lab: NetLab) -> None:
    console, server = vm.console.text(), appliance.log.text()
    http = f"http://{lab.address}:8080"
    # DHCP: iPXE configured the NIC from the managed dnsmasq, which logged the lease.
    lease = re.search(r"net0: (10\.77\.0\.\d+)/255\.255\.255\.0", console)
    assert "Configuring (net0 " in console and lease, "iPXE got no DHCP lease"
    assert f"DHCPACK(br0) {lease.group(1)} {MAC}" in server
    # iPXE clients (dnsmasq tags them by option 175) get boot.ipxe over TFTP, the one
    # small file TFTP carries; it chains the node's script over HTTP, which loads
    # kernel and initrd over HTTP.
    assert fetched_urls(vm) == [f"tftp://{lab.address}/boot.ipxe",
                                f"{http}/ipxe/{HEXHYP}.ipxe",
                                f"{http}/{KERNEL_NAME}", f"{http}/{RAMDISK_NAME}"]
    assert re.search(rf"TFTP sent boot\.ipxe to {re.escape(lease.group(1))}:", server), \
        "metalcast's TFTP server did not log sending boot.ipxe"
    for path in (f"/ipxe/{HEXHYP}.ipxe", f"/{KERNEL_NAME}", f"/{RAMDISK_NAME}"):
        assert re.search(rf'boot http {lease.group(1)}: "GET {re.escape(path)} HTTP/1.1" 200',
                         server), f"the boot HTTP server did not log GET {path}"
    # The kernel ran our /init, which found the API URL metalcast put on the command line.
    stages = boot_timeline(vm)
    assert stages["initrd_fetched"] < stages["kernel_init"] < stages["lookup_answered"]
    assert f"lookup url={appliance.url}/v1/lookup?addresses={MAC}" in console
    # The appliance answered the lookup with this node and issued the agent token...
    assert vm.lookup() == ("200", MAC)
    assert f"lookup node={node['uuid']} agent_token=yes" in console
    assert f"Node {node['uuid']}: agent token issued at lookup" in server
    after = appliance.node(node["uuid"])
    assert after["provision_state"] == "clean wait"
    assert after["driver_internal_info"]["agent_secret_token"] == "******"
    # ...which appears neither on the console nor in the kernel command line.
    assert '"agent_token"' not in console and "agent_token=yes" in console
    assert "power_down" in stages, "the guest did not power itself off"


def test_firmware_pxe_loader_is_served_over_tftp_in_the_lab(guest, tmp_path):
    """What a non-iPXE NIC firmware fetches (dnsmasq's boot file for untagged BIOS
    clients): undionly.kpxe from metalcast's TFTP server, with iPXE's block size."""
    kernel, initrd = guest
    with NetLab() as lab, ApplianceLab(lab, tmp_path, kernel.vmlinuz, initrd) as appliance:
        out = tmp_path / "undionly.kpxe"
        result = lab.run(["curl", "-sS", "--tftp-blksize", "1432", "-o", out,
                          f"tftp://{lab.address}/undionly.kpxe"])
        assert result.returncode == 0, result.stderr + appliance.log.text()[-3000:]
        assert out.read_bytes() == (appliance.data / "tftpboot" / "undionly.kpxe").read_bytes()
        assert out.read_bytes() == Path("/usr/lib/ipxe/undionly.kpxe").read_bytes()
        missing = lab.run(["curl", "-sS", "-o", tmp_path / "x", f"tftp://{lab.address}/nope"])
        assert missing.returncode != 0
    assert not lab.exists()
    assert subprocess.run(["ip", "netns", "pids", lab.name], capture_output=True).returncode != 0
