"""A QEMU VM installed as an A/B host: GPT slots chosen from their bits at every boot.

The disk (virtlab.images.build_ab_image): partition 1 is the host's state partition
(ext4 in the ESP's place, standing in for Flatcar's ROOT/var: update.conf, the
appliance's update key, the machine id and the update engine's state, all kept
across reboots), 2 = USR-A holding the first payload byte for byte (so a delta
from it applies), 3 = USR-B empty and unbootable.

The VM boots Debian's kernel directly (QEMU ``-kernel`` with the PVH ``vmlinux``
extracted from the bzImage: the XZ decompression under TCG costs ~5 s a boot,
test-lab.md section 1) and ``-initrd`` = the cached agent ramdisk
(virtlab.agent_initramfs) with a small uncompressed cpio appended that replaces its
/init by ``ab_init.sh`` and adds the ext4 modules (the kernel unpacks concatenated
archives in order, later files win). QEMU runs without ``-no-reboot``: the guest's
``reboot -f`` resets the same VM, which loads the same kernel and initramfs again,
so the chooser in the initramfs - GRUB gptprio's rule, on the GPT the last boot
left - runs at every boot, as firmware would. The kernel and initramfs are shared
by both slots (Flatcar's are too, on the ESP); what a slot holds is the version:
its ext4 with /etc/os-release, mounted read-only at /sysroot, and the running
agent reads its version from there. No network beyond the lab namespace: the guest
has a static address on the lab bridge.
"""
from __future__ import annotations

import lzma
import os
import subprocess
import tempfile
from pathlib import Path

from virtlab import disk as lab_disk
from virtlab.agent_initramfs import AGENT_ROOT, build_agent_initramfs
from virtlab.guest import Kernel
from virtlab.images import build_ab_image
from virtlab.initramfs import NewcWriter
from virtlab.netlab import NetLab, TimedLog

QEMU = "qemu-system-x86_64"
INIT_SCRIPT = Path(__file__).with_name("ab_init.sh")
GUEST_ADDRESS = "10.77.0.50/24"
XZ_MAGIC = b"\xfd7zXZ\x00"
STATE_PART, SLOT_A, SLOT_B = 1, 2, 3


def pvh_kernel(kernel: Kernel) -> Path:
    """The ELF ``vmlinux`` inside the bzImage (cached beside it): QEMU boots it through
    its PVH entry without the slow in-guest XZ decompression."""
    target = kernel.vmlinuz.with_name("vmlinux")
    if target.is_file():
        return target
    data = kernel.vmlinuz.read_bytes()
    start = data.find(XZ_MAGIC)
    while start != -1:
        try:
            elf = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data[start:])
        except lzma.LZMAError:
            elf = b""
        if elf.startswith(b"\x7fELF"):
            partial = target.with_name(f"vmlinux.{os.getpid()}.partial")
            partial.write_bytes(elf)
            os.replace(partial, target)
            return target
        start = data.find(XZ_MAGIC, start + 1)
    raise RuntimeError(f"{kernel.vmlinuz} holds no XZ-compressed ELF kernel")


def vm_init(kernel: Kernel, address: str = GUEST_ADDRESS) -> str:
    names = " ".join(p.stem for p in (*kernel.modules, *kernel.block_modules,
                                      *kernel.fs_modules))
    return (INIT_SCRIPT.read_text().replace("@MODULES@", names)
            .replace("@AGENT_ROOT@", "/" + AGENT_ROOT).replace("@GUEST_ADDRESS@", address))


def build_vm_initrd(kernel: Kernel, output: Path, address: str = GUEST_ADDRESS) -> Path:
    """The agent ramdisk, padded to 4 bytes, then the overlay cpio (/init, ext4)."""
    if not kernel.fs_modules:
        raise RuntimeError("the kernel cache has no ext4 modules (virtlab.guest.FS_MODULES)")
    base = build_agent_initramfs(kernel).read_bytes()
    with open(output, "wb") as out:
        out.write(base + bytes(-len(base) % 4))
        cpio = NewcWriter(out)
        for module in kernel.fs_modules:
            cpio.file(f"usr/lib/modules/{module.name}", module.read_bytes())
        cpio.file("init", vm_init(kernel, address).encode(), 0o755)
        cpio.close()
    return output


def build_ab_disk(path: Path, payload: Path, version: str,
                  state_files: dict[str, bytes]) -> Path:
    """The A/B disk with ``payload`` (a slot image of ``version``) in USR-A as the
    installed, proven slot and ``state_files`` on the ext4 state partition."""
    size_mib = payload.stat().st_size >> 20
    build_ab_image(path, version, slot_mib=size_mib)
    parts = {number: (offset, size) for number, offset, size in lab_disk.partitions(str(path))}
    offset, size = parts[SLOT_A]
    if size != payload.stat().st_size:
        raise RuntimeError(f"slot A is {size} bytes, the payload {payload.stat().st_size}")
    with open(path, "r+b") as out, open(payload, "rb") as source:
        out.seek(offset)
        out.write(source.read())
    offset, size = parts[STATE_PART]
    with tempfile.TemporaryDirectory(prefix="virtlab-state-") as root:
        for name, data in state_files.items():
            target = Path(root, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        done = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "STATE", "-E",
                               f"offset={offset}", "-d", root, str(path), f"{size // 1024}k"],
                              capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise RuntimeError(f"mkfs.ext4 of the state partition failed: {done.stderr.strip()}")
    return path


def update_conf(server: str, group: str, health_window: float = 5) -> str:
    """update.conf of the VM (Flatcar's keys plus metalcast's), paths inside the guest."""
    settings = {
        "SERVER": server, "GROUP": group, "REBOOT_STRATEGY": "reboot",
        "REBOOT_COMMAND": "reboot -f", "WALL_DELAY": "0",   # busybox: sync, then reboot(2)
        "DISK": "/dev/vda", "SLOTS": "USR-A,USR-B",
        "CMDLINE_FILE": "/run/metalcast/cmdline", "OS_RELEASE_FILE": "/sysroot/etc/os-release",
        "MACHINE_ID_FILE": "/state/machine-id", "UPDATE_KEY": "/state/update-key.pem",
        "STATE_DIR": "/state/update", "REBOOT_REQUIRED_FILE": "/run/reboot-required",
        # a broken image carries this file; the health check fails on it
        "HEALTH_COMMANDS": "test ! -e /sysroot/etc/metalcast-lab-broken",
        "HEALTH_WINDOW": str(health_window),
        "FIRST_CHECK_DELAY": "1", "CHECK_INTERVAL": "3", "CHECK_FUZZ": "0",
    }
    return "".join(f'{key}="{value}"\n' for key, value in settings.items())


class AbVm:
    """``with AbVm(lab, kernel, initrd, disk) as vm:`` - one QEMU process across all
    the guest's reboots, its serial console in ``vm.console``; stopped by PID."""

    def __init__(self, lab: NetLab, vmlinux: Path, initrd: Path, disk: Path,
                 mac: str = "52:54:00:6d:63:0b", timeout: int = 600, memory_mib: int = 512):
        self.lab, self.vmlinux, self.initrd, self.disk = lab, vmlinux, initrd, disk
        self.mac, self.timeout, self.memory_mib = mac, timeout, memory_mib
        self.process: subprocess.Popen | None = None
        self.console: TimedLog | None = None

    def command(self) -> list[str]:
        return ["timeout", "--kill-after=5", str(self.timeout), QEMU, "-accel", "tcg",
                "-M", "q35", "-m", str(self.memory_mib), "-nographic",
                "-kernel", str(self.vmlinux), "-initrd", str(self.initrd),
                "-append", "console=ttyS0 panic=-1 quiet",
                "-netdev", f"tap,id=n0,ifname={self.lab.tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n0,mac={self.mac},romfile=",
                "-drive", f"file={self.disk},format=raw,if=virtio,cache=unsafe"]

    def __enter__(self) -> AbVm:
        self.process = self.lab.start(self.command())
        self.console = TimedLog(self.process.stdout)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> int | None:
        """Power off (kill QEMU by its PID); its exit code."""
        if self.process is None:
            return None
        code = self.lab.stop(self.process)
        self.process = None
        return code
