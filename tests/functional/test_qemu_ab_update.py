"""End to end: a QEMU VM installed as an A/B host updates itself from metalcast,
reboots for real, and rolls back by itself from a broken version.

Design (virtlab.ab_vm; issue 16 item 7):

* Boot path: QEMU boots Debian's kernel directly (``-kernel`` PVH ``vmlinux``,
  ``-initrd`` the agent ramdisk with virtlab/ab_init.sh as /init) rather than through
  EXTLINUX: one QEMU process lives through every reboot (no ``-no-reboot``: the guest's
  ``reboot -f`` resets the same VM, which loads the kernel and initramfs again), and
  the initramfs's chooser is what firmware's gptprio would be - at every boot it
  applies GRUB gptprio's rule to /dev/vda's GPT (``SlotDisk.boot_next``: highest
  priority that is successful or has tries left, one try consumed and written to
  both GPT copies), mounts that slot's ext4 read-only at /sysroot, and its
  /etc/os-release is the version the agent reports. A boot loader on the disk would
  add a SYSLINUX stage per boot and no more truth: the bits are read from the disk
  at each boot either way. The kernel and initramfs are shared by both slots
  (Flatcar's live on the ESP too); what a slot holds is its version.
* The host: the real ``metalcast-agent update mark-good`` (health checks: the
  appliance answered and the slot has no ``/etc/metalcast-lab-broken``, 5 s window),
  then ``metalcast-agent update daemon`` (SERVER = the appliance's ``/v1/update/`` on
  the lab bridge, GROUP = the channel, REBOOT_STRATEGY=reboot, first check after 1 s,
  then every 3 s), state kept on an ext4 state partition across reboots. A boot whose
  health checks fail is not marked, and the VM's init then reboots it (the job a
  watchdog does): the engine itself never reboots an unhealthy boot.
* The appliance: ``metalcast serve`` in the lab namespace (virtlab.pxe_appliance);
  the operator's steps are the real ``metalcast`` CLI run inside the namespace.

Flow: v1 (slot A) checks in, gets v2 (delta or full), writes slot B (-S0 -T1,
prioritized), reboots, the chooser picks B, health passes -> marked good -> instance
``complete``. Safe mode on, a broken v3 goes to the channel: written to A, reboot,
A is chosen (its one try consumed), health fails -> not marked -> init reboots ->
the chooser falls back to B (v2) -> the engine reports the rollback (3/0, error code
44) -> ``metalcast instance show`` has the error, the group is halted. After QEMU
is stopped, the real ``cgpt show`` reads the slots' bits from the disk image.
Needs root (namespace, tap); under CI a missing tool fails the test.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.functional.ab_host import cgpt_bits
from tests.waiting import wait_until
from virtlab import disk as lab_disk
from virtlab.ab_vm import (
    SLOT_A,
    SLOT_B,
    AbVm,
    build_ab_disk,
    build_vm_initrd,
    pvh_kernel,
    update_conf,
)
from virtlab.agent_initramfs import PYTHON
from virtlab.guest import cache_root, debian_kernel
from virtlab.images import build_rootfs
from virtlab.netlab import NetLab
from virtlab.pxe_appliance import API_PORT, ApplianceLab

pytestmark = pytest.mark.slow

TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "dnsmasq": "dnsmasq-base",
         "busybox": "busybox-static", "curl": "curl", "ip": "iproute2", "zstd": "zstd",
         "mkfs.ext4": "e2fsprogs", "sgdisk": "gdisk", "cgpt": "cgpt", "apt-get": "apt",
         "dpkg-deb": "dpkg"}
CHANNEL = "lab"
SLOT_MIB = 16
STEP_TIMEOUT = 150


def _require_lab() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items()
                      if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()})
    if not PYTHON.exists():
        missing.append("python3.11")
    if missing:
        pytest.fail(f"the QEMU A/B update test needs the Debian packages {', '.join(missing)} "
                    "(run scripts/install-system-packages as root)")
    if os.geteuid() != 0:
        pytest.fail("the QEMU A/B update test needs root (network namespace, tap)")


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    """(kernel, PVH vmlinux, VM initrd, {version: payload}) built once."""
    _require_lab()
    work = tmp_path_factory.mktemp("ab-guest")
    kernel = debian_kernel(cache_root())
    payloads = {"1": build_rootfs(work / "v1.img", "1", SLOT_MIB),
                "2": build_rootfs(work / "v2.img", "2", SLOT_MIB),
                "3": build_rootfs(work / "v3.img", "3", SLOT_MIB, files={
                    "etc/metalcast-lab-broken": b"this image fails its health check\n"})}
    return kernel, pvh_kernel(kernel), build_vm_initrd(kernel, work / "initrd"), payloads


class Operator:
    """The ``metalcast`` CLI inside the namespace, as the operator runs it."""

    def __init__(self, lab: NetLab, appliance: ApplianceLab):
        self.lab, self.appliance = lab, appliance
        self.binary = str(Path(sys.executable).with_name("metalcast"))

    def run(self, *words: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("METALCAST_", "OS_"))}
        done = self.lab.run([self.binary, "--url", self.appliance.url, "--username",
                             self.appliance.username, "--password", self.appliance.password,
                             *words], timeout=120, env=env)
        assert done.returncode == 0, (words, done.stdout, done.stderr)
        return done.stdout

    def json(self, *words: str):
        return json.loads(self.run(*words, "--format", "json"))


def test_vm_updates_reboots_into_the_new_slot_and_rolls_back_a_broken_one(guest, tmp_path):
    kernel, vmlinux, initrd, payloads = guest
    machine_id = secrets.token_hex(16)
    disk = tmp_path / "ab-disk.img"
    vm = appliance = None
    started = time.monotonic()
    marks: dict[str, float] = {}
    with NetLab() as lab:
        try:
            with ApplianceLab(lab, tmp_path, kernel.vmlinuz, initrd) as appliance:
                operator = Operator(lab, appliance)
                for version in ("1", "2"):
                    operator.json("image", "upload", str(payloads[version]), "--version",
                                  version, "--channel", CHANNEL)
                key = operator.run("image", "pubkey", "--data-dir", str(appliance.data))
                server = f"http://{lab.address}:{API_PORT}/v1/update/"
                build_ab_disk(disk, payloads["1"], "1", {
                    "update.conf": update_conf(server, CHANNEL).encode(),
                    "update-key.pem": key.encode(), "machine-id": f"{machine_id}\n".encode()})
                marks["prepared"] = time.monotonic() - started
                with AbVm(lab, vmlinux, initrd, disk) as vm:
                    _update_to_v2(vm, operator, machine_id, marks, started)
                    _broken_v3_rolls_back(vm, operator, payloads["3"], machine_id, marks,
                                          started)
                    assert vm.stop() is not None
        except BaseException as exc:
            raise AssertionError(f"{exc}{_evidence(vm, appliance)}") from exc
        assert lab.pids() == [], f"processes left in {lab.name}: {lab.pids()}"
    assert not lab.exists(), f"namespace {lab.name} was not deleted"
    _check_disk(disk, payloads)
    print("\nqemu A/B update: " + ", ".join(f"{k} {v:.1f}s" for k, v in marks.items()))
    sys.stdout.flush()


def _wait_console(vm: AbVm, pattern: str, count: int = 1) -> list[re.Match]:
    assert vm.console is not None

    def seen():
        if re.search(r"Kernel panic|METALCAST-AB error", vm.console.text()):
            raise AssertionError("the VM failed (see its console)")
        found = [m for _, m in vm.console.matches(pattern)]
        return found if len(found) >= count else None
    return wait_until(seen, STEP_TIMEOUT, 0.5, f"{count}x {pattern!r} on the VM console")


def _update_to_v2(vm: AbVm, operator: Operator, machine_id: str, marks: dict,
                  started: float) -> None:
    first = _wait_console(vm, r"METALCAST-AB chose partition=(\d+) .*tries=(\d+)->(\d+) "
                              r"successful=(\d)")[0]
    assert first.groups() == (str(SLOT_A), "0", "0", "1")
    _wait_console(vm, rf"METALCAST-AB marked good version=1 partition={SLOT_A}")
    marks["v1_marked_good"] = time.monotonic() - started
    # The daemon checks in, installs v2 into B and reboots: the chooser takes B's try.
    _wait_console(vm, r"reboot: Restarting system")
    chosen = _wait_console(vm, r"METALCAST-AB chose partition=(\d+) .*priority=(\d+) "
                               r"tries=(\d+)->(\d+) successful=(\d)", 2)[1]
    assert chosen.groups()[0] == str(SLOT_B) and chosen.groups()[2:] == ("1", "0", "0"), \
        chosen.group(0)
    _wait_console(vm, rf"METALCAST-AB running version=2 partition={SLOT_B}")
    # slot A is v1's payload byte for byte, so the appliance's delta applied
    assert vm.console is not None and re.search(r"Delta 2 applied into /dev/vda3",
                                                vm.console.text())
    _wait_console(vm, rf"METALCAST-AB marked good version=2 partition={SLOT_B}")
    marks["v2_marked_good"] = time.monotonic() - started
    shown = _instance_when(operator, machine_id, "complete")
    assert shown["version"] == "2" and shown["group_name"] == CHANNEL, shown
    statuses = [h["status"] for h in shown["history"]]
    assert "installed" in statuses and statuses[-1] == "complete", statuses


def _broken_v3_rolls_back(vm: AbVm, operator: Operator, payload: Path, machine_id: str,
                          marks: dict, started: float) -> None:
    assert operator.json("group", "set", CHANNEL, "--safe-mode")["safe_mode"] is True
    operator.json("image", "upload", str(payload), "--version", "3",
                  "--channel", CHANNEL)
    # v3 goes into A; the next boot takes A's only try and runs v3, whose health fails.
    third = _wait_console(vm, r"METALCAST-AB chose partition=(\d+) .*tries=(\d+)->(\d+) "
                              r"successful=(\d)", 3)[2]
    assert third.groups() == (str(SLOT_A), "1", "0", "0"), third.group(0)
    _wait_console(vm, rf"METALCAST-AB running version=3 partition={SLOT_A}")
    _wait_console(vm, rf"METALCAST-AB not marked good version=3 partition={SLOT_A}")
    marks["v3_not_marked"] = time.monotonic() - started
    # Next boot: A has no tries and was never proven: the chooser falls back to B (v2).
    fourth = _wait_console(vm, r"METALCAST-AB chose partition=(\d+) .*tries=(\d+)->(\d+) "
                               r"successful=(\d)", 4)[3]
    assert fourth.groups() == (str(SLOT_B), "0", "0", "1"), fourth.group(0)
    _wait_console(vm, rf"METALCAST-AB marked good version=2 partition={SLOT_B}", 2)
    marks["back_on_v2"] = time.monotonic() - started
    # The engine on v2 saw that v3 did not stay and reported 3/0 errorcode 44.
    _wait_console(vm, r"rollback: version 3 did not stay")
    shown = _instance_when(operator, machine_id, "error")
    assert (shown["error_code"], shown["version"]) == (44, "2"), shown
    last = shown["history"][-1]
    assert (last["status"], last["error_code"]) == ("error", 44), last
    group = operator.json("group", "show", CHANNEL)
    assert group["halted_reason"] and machine_id in group["halted_reason"], group
    text = operator.run("instance", "show", machine_id)
    assert "44" in text and "error" in text


def _instance_when(operator: Operator, machine_id: str, status: str) -> dict:
    """``metalcast instance show`` once the instance has ``status``."""
    def shown() -> dict:
        found = operator.json("instance", "show", machine_id)
        return found if found["status"] == status else {}
    return wait_until(shown, STEP_TIMEOUT, 1, f"the instance to be {status}")


def _check_disk(disk: Path, payloads: dict[str, Path]) -> None:
    """The real cgpt reads what the VM's boots and the engine left: B (v2) proven and
    first, A (broken v3) tried and never marked; each slot holds its payload byte for
    byte (B was made from v1 by the delta)."""
    for number, version in ((SLOT_A, "3"), (SLOT_B, "2")):
        offset, size = next((o, n) for part, o, n in lab_disk.partitions(str(disk))
                            if part == number)
        with open(disk, "rb") as handle:
            handle.seek(offset)
            assert handle.read(size) == payloads[version].read_bytes(), \
                f"slot {number} does not hold version {version}"
    a_priority, a_tries, a_good, _ = cgpt_bits(str(disk), SLOT_A)
    b_priority, b_tries, b_good, shown = cgpt_bits(str(disk), SLOT_B)
    assert (b_tries, b_good) == (0, 1), shown
    assert (a_tries, a_good) == (0, 0)
    assert b_priority > a_priority, (a_priority, b_priority)


def _evidence(vm: AbVm | None, appliance: ApplianceLab | None) -> str:
    parts = []
    if vm is not None and vm.console is not None:
        parts.append(f"--- VM console (tail) ---\n{vm.console.text()[-12000:]}")
    if appliance is not None and appliance.log is not None:
        parts.append(f"--- metalcast serve (tail) ---\n{appliance.log.text()[-8000:]}")
    return "\n" + "\n".join(parts)
