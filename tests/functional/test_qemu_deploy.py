"""End to end: a QEMU VM is deployed by metalcast through the real agent, then boots the disk.

Topology (test-lab.md sections 1-3): a fresh network namespace (virtlab.netlab) with
br0 10.77.0.1 and tap0. Inside it run ``metalcast serve`` (API, TFTP, boot HTTP,
managed dnsmasq; virtlab.pxe_appliance), a virtual IPMI BMC (virtlab.bmc, on
10.77.0.1, so the conductor's ``ipmi`` driver speaks real RMCP+ to it), and the
machine behind that BMC: virtlab.qemu_machine starts QEMU (TCG) on power on, with
``-boot n`` or ``-boot c`` as the BMC's boot device says, kills it on power off, and
reports power off when the guest powers itself off.

The node (``ipmitool`` power/management, ``ipxe`` boot, ``direct`` deploy,
``[agent] require_tls``) goes manage -> provide -> deploy:

1. the conductor sets boot device pxe and powers on: iPXE -> boot.ipxe over TFTP ->
   the node script -> Debian's kernel + the Python deploy ramdisk
   (virtlab.agent_initramfs: Debian's python3.11 + the real ``metalcast-agent``);
2. the agent looks itself up, serves its HTTPS command API, writes the image
   (virtlab.boot_disk: MBR + EXTLINUX + kernel, served by the appliance's boot HTTP
   server, sha256-checked) to /dev/vda and powers off with ``poweroff -f`` when asked;
3. the conductor sets boot device disk and powers on: SeaBIOS boots the virtual disk,
   whose /init prints ``METALCAST-DISK-BOOT version=2`` and powers off.

Automated cleaning is off for the node (``automated_clean: false``): it would boot
the agent once more and double the runtime; the agent cleaning path has its own
tests. Needs root. The kernel comes from apt into the metalcast cache; the ramdisk
and the disk image are built from host files and cached there by content hash.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import secrets
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.functional.helpers import unique
from tests.waiting import wait_until
from virtlab.agent_initramfs import PYTHON, build_agent_initramfs
from virtlab.boot_disk import MARKER, MBR_BIN, BootDisk, build_boot_disk
from virtlab.guest import cache_root, debian_kernel
from virtlab.launcher import BmcProcess, start_bmcs, stop_bmcs
from virtlab.netlab import NetLab
from virtlab.pxe_appliance import KERNEL_NAME, RAMDISK_NAME, ApplianceLab
from virtlab.qemu_machine import Boot, QemuMachine

#: tool -> the Debian package that ships it (scripts/install-system-packages).
TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "dnsmasq": "dnsmasq-base",
         "busybox": "busybox-static", "curl": "curl", "ip": "iproute2", "zstd": "zstd",
         "extlinux": "extlinux", "mkfs.ext4": "e2fsprogs", "apt-get": "apt",
         "dpkg-deb": "dpkg"}
FILES = {"/usr/lib/ipxe/qemu/efi-virtio.rom": "ipxe-qemu", "/usr/lib/ipxe/undionly.kpxe": "ipxe",
         str(MBR_BIN): "syslinux-common", str(PYTHON): "python3.11"}
MAC = "52:54:00:6d:63:02"
IMAGE_NAME = "images/metalcast-lab-v2.img"
DISK_MIB = 64
DEPLOY_TIMEOUT = 240


def _require_lab() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items()
                      if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()})
    missing += [pkg for path, pkg in FILES.items() if not os.path.exists(path)]
    if missing:
        pytest.fail(f"the QEMU deploy test needs the Debian packages {', '.join(missing)} "
                    "(run scripts/install-system-packages as root)")
    if os.geteuid() != 0:
        pytest.fail("the QEMU deploy test needs root (network namespace, tap, loop mount)")


class DeployAppliance(ApplianceLab):
    """The PXE lab's appliance with the Python deploy ramdisk, TLS to the agent, a
    short heartbeat, no IPMI command spacing and the disk image under its boot HTTP
    root."""

    def __init__(self, lab: NetLab, work: Path, vmlinuz: Path, initrd: Path, image: BootDisk):
        super().__init__(lab, work, vmlinuz, initrd)
        self.image = image

    def config(self) -> dict:
        sections = super().config()
        sections["agent"] = {"require_tls": "true", "heartbeat_timeout": 10}
        # The virtual BMC needs no spacing between commands (real ones get 1 s).
        sections["ipmi"] = {"min_command_interval": 0.2}
        return sections

    def _prepare(self) -> Path:
        path = super()._prepare()
        target = self.data / "httpboot" / IMAGE_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.image.path, target)
        return path


@pytest.fixture(scope="module")
def guest():
    """(kernel, deploy ramdisk, disk image, build seconds) from the metalcast cache."""
    _require_lab()
    times = {}
    started = time.monotonic()
    kernel = debian_kernel(cache_root())
    times["kernel"] = time.monotonic() - started
    started = time.monotonic()
    initrd = build_agent_initramfs(kernel)
    times["ramdisk"] = time.monotonic() - started
    started = time.monotonic()
    image = build_boot_disk(kernel, "2")
    times["disk_image"] = time.monotonic() - started
    return kernel, initrd, image, times


@dataclasses.dataclass
class VmLab:
    """One namespace with the appliance, the BMC and the QEMU machine behind it."""

    lab: NetLab
    appliance: DeployAppliance
    machine: QemuMachine
    bmc: BmcProcess
    password: str
    disk: Path

    @property
    def port(self) -> int:
        return self.bmc.ports[0]


@contextlib.contextmanager
def vm_lab(guest, tmp_path: Path):
    """Build the lab, yield it, then stop everything by PID and delete the namespace
    (checked); a failure inside gets the consoles and the server log attached."""
    kernel, initrd, image, _ = guest
    disk = tmp_path / "vm-disk.img"
    with open(disk, "wb") as handle:   # blank: booting it at all proves the deploy
        handle.truncate(DISK_MIB << 20)
    password = secrets.token_urlsafe(12)
    with NetLab() as lab:
        bmc = start_bmcs(tmp_path / "bmc", address=lab.address, username="admin",
                         password=password, prefix=["ip", "netns", "exec", lab.name])
        machine = appliance = None
        try:
            appliance = DeployAppliance(lab, tmp_path, kernel.vmlinuz, initrd, image)
            with appliance, QemuMachine(lab, bmc.state_path(bmc.ports[0]), disk,
                                        MAC) as machine:
                yield VmLab(lab, appliance, machine, bmc, password, disk)
        except BaseException as exc:
            raise AssertionError(f"{exc}{_evidence(machine, appliance, bmc)}") from exc
        finally:
            stop_bmcs(bmc)
        assert lab.pids() == [], f"processes left in {lab.name}: {lab.pids()}"
    assert not lab.exists(), f"namespace {lab.name} was not deleted"


def test_vm_is_deployed_by_the_real_agent_and_boots_the_written_disk(guest, tmp_path):
    image, build_times = guest[2], guest[3]
    with vm_lab(guest, tmp_path) as vm:
        node, stages = _deploy(vm, image.sha256)
        disk_boot = vm.machine.wait_for_boot(2, 10)
        assert disk_boot is not None, "the conductor did not power the VM on again"
        assert vm.machine.wait_for_end(disk_boot, 120), "the disk boot did not end"
        _check(vm, node, image, stages, build_times)
        final = vm.bmc.state(vm.port)
        assert final.power == "off" and final.boots == 2
        assert (final.boot.device, final.boot.persistent) == ("disk", True)


def test_image_with_a_wrong_checksum_fails_the_deploy_and_leaves_no_bootable_disk(
        guest, tmp_path):
    """The agent in the VM downloads and writes the image, finds that its sha256 is
    not the one in instance_info, and wipes the disk's start; the node goes to "deploy
    failed" and the conductor cuts the VM's power (no second boot)."""
    image = guest[2]
    wrong = hashlib.sha256(b"not the image").hexdigest()
    with vm_lab(guest, tmp_path) as vm:
        node, _ = _deploy(vm, wrong, expect="deploy failed")
        assert "checksum" in (node["last_error"] or "").lower(), node["last_error"]
        assert wrong in node["last_error"] or image.sha256 in node["last_error"]
        wait_until(lambda: vm.bmc.state(vm.port).power == "off", 30, 0.2,
                   "the conductor to power the VM off")
        assert [(b.device, b.stopped_by) for b in vm.machine.boots] == [("pxe", "bmc")]
        with open(vm.disk, "rb") as handle:
            assert handle.read(1 << 20) == bytes(1 << 20), "the disk start was not wiped"
        assert f"Node {node['uuid']}: deployed by the agent" not in vm.appliance.log.text()


def _deploy(vm: VmLab, checksum: str, expect: str = "active") -> tuple[dict, dict]:
    """Enrol, manage -> provide -> deploy with ``checksum``, timed; (node once it is
    in ``expect``, stage -> seconds)."""
    appliance, stages, started = vm.appliance, {}, time.monotonic()
    _, node = appliance.api("POST", "/v1/nodes", {
        "name": unique("qemu-vm"), "driver": "ipmi", "power_interface": "ipmitool",
        "management_interface": "ipmitool", "boot_interface": "ipxe",
        "deploy_interface": "direct", "automated_clean": False,
        "driver_info": {"ipmi_address": vm.lab.address, "ipmi_port": vm.port,
                        "ipmi_username": "admin", "ipmi_password": vm.password}}, ok=(201,))
    uuid = node["uuid"]
    appliance.api("POST", "/v1/ports", {"node_uuid": uuid, "address": MAC,
                                        "pxe_enabled": True}, ok=(201,))
    appliance.provision(uuid, "manage", "manageable")
    appliance.provision(uuid, "provide", "available")
    url = f"http://{vm.lab.address}:8080/{IMAGE_NAME}"
    appliance.api("PATCH", f"/v1/nodes/{uuid}", [
        {"op": "add", "path": "/instance_info/image_source", "value": url},
        {"op": "add", "path": "/instance_info/image_checksum", "value": checksum}])
    stages["enrolled"] = time.monotonic() - started
    appliance.api("PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "active"},
                  ok=(202,))
    node = _wait_for(appliance, vm.machine, uuid, expect)
    stages[expect.replace(" ", "_")] = time.monotonic() - started
    return node, stages


def _wait_for(appliance: DeployAppliance, machine: QemuMachine, uuid: str,
              expect: str) -> dict:
    """Poll the node until it is in ``expect``; stop early when the ramdisk reports
    an error or the agent ended by itself (the conductor would only time out later)."""
    seen: dict = {}

    def settled():
        seen.update(appliance.node(uuid))
        if seen["provision_state"] == expect and seen["reservation"] is None:
            return dict(seen)
        broken = [b.number for b in machine.boots if re.search(
            r"METALCAST-RAMDISK (error|agent exited)", b.console.text())]
        if broken or (seen["provision_state"].endswith("failed")
                      and seen["provision_state"] != expect):
            raise AssertionError(f"node {uuid} is {seen['provision_state']}, not {expect} "
                                 f"({seen.get('last_error')}); ramdisk failed in boots "
                                 f"{broken}")
        return None
    return wait_until(settled, DEPLOY_TIMEOUT, 0.5, lambda: f"node {uuid} to be {expect}; "
                      f"it is {seen.get('provision_state')} ({seen.get('last_error')})")


#: iPXE's line for a finished download: "URL... ok", with progress percentages
#: in between when it takes a moment ("URL... 46%     91%     ok" on a loaded host).
DOWNLOADED = r"((?:tftp|http)://\S+?)\.\.\.(?:\s+\d+%)*\s+ok"


def _check(vm: VmLab, node: dict, image: BootDisk, stages: dict, build_times: dict) -> None:
    machine, lab, uuid = vm.machine, vm.lab, node["uuid"]
    assert [(b.device, b.stopped_by, b.exit_code) for b in machine.boots] == [
        ("pxe", "guest", 0), ("disk", "guest", 0)]
    pxe, local = machine.boots
    http = f"http://{lab.address}:8080"
    hexhyp = MAC.replace(":", "-")
    # Boot 1: iPXE from the managed DHCP, boot.ipxe over TFTP, then the node's script,
    # the kernel and the Python ramdisk over HTTP.
    assert re.findall(DOWNLOADED, pxe.console.text()) == [
        f"tftp://{lab.address}/boot.ipxe", f"{http}/ipxe/{hexhyp}.ipxe",
        f"{http}/{KERNEL_NAME}", f"{http}/{RAMDISK_NAME}"]
    # The ramdisk's init loaded virtio-net/-blk (the disk is vda) and started the agent,
    # which looked the node up at the URL from the kernel command line.
    console = pxe.console.text()
    assert re.search(r"METALCAST-RAMDISK disks .*\bvda\b", console), "no /dev/vda in the ramdisk"
    assert "METALCAST-RAMDISK agent starting" in console
    assert re.search(rf"Lookup: node {uuid}, heartbeat_timeout 10", console)
    assert "METALCAST-RAMDISK agent exited" not in console, "the agent ended by itself"
    assert "reboot: Power down" in console, "the agent did not power the VM off"
    # The conductor's commands carry the agent token in the query string; the agent's
    # request log (on the console) shows it redacted.
    assert "agent_token=***" in console
    assert not re.search(r"agent_token=(?!\*\*\*)", console), "agent token on the console"
    _check_conductor_and_disk(vm, node, image)
    _report(pxe, local, stages, build_times)


def _check_conductor_and_disk(vm: VmLab, node: dict, image: BootDisk) -> None:
    uuid, server, local = node["uuid"], vm.appliance.log.text(), vm.machine.boots[1]
    # The conductor: token at lookup, write_image over the agent's HTTPS API, active.
    for line in (f"Node {uuid}: agent token issued at lookup",
                 f"Node {uuid}: write_image started on the agent",
                 f"Node {uuid}: deployed by the agent, now active"):
        assert line in server, f"server log lacks {line!r}"
    assert re.search(rf'boot http \S+: "GET /{re.escape(IMAGE_NAME)} HTTP/1.1" 200', server)
    # The agent wrote the image, byte for byte, to the VM's disk...
    with open(vm.disk, "rb") as handle:
        written = hashlib.sha256(handle.read(image.path.stat().st_size)).hexdigest()
    assert written == image.sha256
    # ...and boot 2 started from that disk: SYSLINUX, the kernel, the image's /init.
    text = local.console.text()
    assert "Booting from Hard Disk" in text and "SYSLINUX" in text
    assert re.search(rf"{MARKER} version=2 id=metalcast-lab", text), "no disk boot marker"
    # (the NIC's iPXE ROM still announces itself while SeaBIOS initialises it)
    assert "Booting from ROM" not in text and "Configuring (net0" not in text, \
        "the second boot went to the network"
    assert vm.appliance.node(uuid)["provision_state"] == "active"


def _report(pxe: Boot, local: Boot, stages: dict, build_times: dict) -> None:
    """Print the stage timeline (seen with pytest -s; CI logs keep it)."""
    points = {"ramdisk_init": pxe.since_start(r"METALCAST-RAMDISK init "),
              "agent_start": pxe.since_start(r"METALCAST-RAMDISK agent starting"),
              "agent_lookup": pxe.since_start(r"Lookup: node "),
              "pxe_boot_end": pxe.ended - pxe.started,
              "disk_marker": local.since_start(MARKER),
              "disk_boot_end": local.ended - local.started}
    print("\nqemu deploy: builds " + ", ".join(f"{k} {v:.1f}s" for k, v in build_times.items()))
    print("qemu deploy: boot 1 (pxe) " + ", ".join(
        f"{k} {points[k]:.1f}s" for k in ("ramdisk_init", "agent_start", "agent_lookup",
                                           "pxe_boot_end") if points[k] is not None))
    print(f"qemu deploy: gap power-off -> disk boot {local.started - pxe.ended:.1f}s; "
          f"boot 2 (disk) marker {points['disk_marker']:.1f}s, end {points['disk_boot_end']:.1f}s")
    print("qemu deploy: API " + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items()))
    sys.stdout.flush()


def _evidence(machine: QemuMachine | None, appliance: ApplianceLab | None, bmc) -> str:
    parts = []
    for boot in (machine.boots if machine else []):
        parts.append(f"--- boot {boot.number} ({boot.device}, {boot.stopped_by}, "
                     f"exit {boot.exit_code}) ---\n{boot.console.text()[-8000:]}")
    if appliance is not None and appliance.log is not None:
        parts.append(f"--- metalcast serve (tail) ---\n{appliance.log.text()[-8000:]}")
    parts.append(f"--- BMC ---\n{bmc.output()[-2000:]}")
    return "\n" + "\n".join(parts)
