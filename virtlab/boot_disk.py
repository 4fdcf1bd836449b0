"""A whole-disk image that QEMU's SeaBIOS boots: MBR + EXTLINUX + Debian's kernel.

What the QEMU deploy test writes with the real agent and then boots from the VM's
virtual disk. Layout (32 MiB raw)::

    sector 0      SYSLINUX's mbr.bin + an MBR partition table (one active Linux partition)
    1 MiB ..      ext4 (4 KiB blocks, no 64bit/metadata_csum: SYSLINUX reads it)
                  /boot/vmlinuz, /boot/initrd.gz, /boot/extlinux/{extlinux.conf,ldlinux.*}
                  /etc/os-release (VERSION_ID=<version>)

The host kernel parses no partition tables (test-lab.md section 7), so the file
system is made straight into its byte range (``mkfs.ext4 -E offset=``) and mounted
by offset (``mount -o loop,offset=,sizelimit=``) to copy the files in and run
``extlinux --install``, which needs it mounted to record where ldlinux.sys lies.
The kernel's initramfs is a busybox whose /init prints ``METALCAST-DISK-BOOT
version=<VERSION_ID> ...`` from its os-release and powers off (QEMU runs
-no-reboot). Built images are cached by a hash of their inputs under the metalcast
cache directory. Needs root (mount).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from virtlab.guest import Kernel, cache_root
from virtlab.images import os_release
from virtlab.initramfs import BUSYBOX, NewcWriter

MIB = 1 << 20
SECTOR = 512
PART_START = MIB
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")   # syslinux-common
MARKER = "METALCAST-DISK-BOOT"
FS_UUID = "6d6c6162-0000-4000-8000-0000000000d1"
#: tool -> Debian package.
TOOLS = {"extlinux": "extlinux", "mkfs.ext4": "e2fsprogs", "mount": "mount"}
EXTLINUX_CONF = """SERIAL 0 115200
DEFAULT metalcast
PROMPT 0
TIMEOUT 0
LABEL metalcast
  LINUX /boot/vmlinuz
  INITRD /boot/initrd.gz
  APPEND console=ttyS0 panic=-1 quiet
"""
INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc
/bin/busybox mount -t proc proc /proc
. /etc/os-release
echo "{MARKER} version=$VERSION_ID id=$ID uptime=$(/bin/busybox cut -d' ' -f1 /proc/uptime)"
/bin/busybox poweroff -f
"""


@dataclasses.dataclass(frozen=True)
class BootDisk:
    path: Path
    sha256: str
    version: str


def build_boot_disk(kernel: Kernel, version: str, size_mib: int = 32,
                    cache: Path | None = None) -> BootDisk:
    """The cached boot disk image for ``kernel`` + ``version``, built when missing."""
    _require_tools()
    key = hashlib.sha256()
    info = kernel.vmlinuz.stat()
    for part in (kernel.abi, str(info.st_size), str(info.st_mtime_ns), version,
                 str(size_mib), Path(__file__).read_text()):
        key.update(part.encode() + b"\0")
    directory = (cache or cache_root()) / "disk"
    output = directory / f"boot-v{version}-{key.hexdigest()[:16]}.img"
    if not output.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f"{output.name}.{os.getpid()}.partial")
        try:
            _build(kernel, version, size_mib * MIB, partial)
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
    return BootDisk(output, _sha256(output), version)


def _require_tools() -> None:
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise RuntimeError(f"{tool} not found: install the Debian package {package}")
    for path, package in ((MBR_BIN, "syslinux-common"), (Path(BUSYBOX), "busybox-static")):
        if not path.exists():
            raise RuntimeError(f"{path} not found: install the Debian package {package}")
    if os.geteuid() != 0:
        raise RuntimeError("building the boot disk needs root (mount -o loop for extlinux)")


def _build(kernel: Kernel, version: str, size: int, output: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="bootdisk-") as work:
        root, mountpoint = Path(work) / "root", Path(work) / "mnt"
        (root / "boot" / "extlinux").mkdir(parents=True)
        (root / "etc").mkdir()
        mountpoint.mkdir()
        shutil.copyfile(kernel.vmlinuz, root / "boot" / "vmlinuz")
        (root / "boot" / "initrd.gz").write_bytes(disk_initramfs(version))
        (root / "boot" / "extlinux" / "extlinux.conf").write_text(EXTLINUX_CONF)
        (root / "etc" / "os-release").write_text(os_release(version))
        with open(output, "wb") as image:
            image.truncate(size)
            image.write(mbr(size))
        fs_kib = (size - PART_START) // 1024
        _run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "metalcast-root", "-U", FS_UUID,
              "-O", "^64bit,^metadata_csum", "-E", f"offset={PART_START}", str(output),
              f"{fs_kib}k"])
        _run(["mount", "-o", f"loop,offset={PART_START},sizelimit={size - PART_START}",
              str(output), str(mountpoint)])
        try:
            # Copied, not mkfs -d: -d leaves holes for zero runs and SYSLINUX then
            # fails to load the kernel ("I/O error").
            _run(["cp", "-r", "--sparse=never", f"{root}/.", str(mountpoint)])
            _run(["extlinux", "--install", str(mountpoint / "boot" / "extlinux")])
        finally:
            _run(["umount", str(mountpoint)])


def mbr(size: int) -> bytes:
    """Sector 0: SYSLINUX's boot code, then one active Linux (0x83) partition from
    PART_START to the end. CHS fields hold the "use LBA" values."""
    code = MBR_BIN.read_bytes()[:440]
    sectors = (size - PART_START) // SECTOR
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
                        PART_START // SECTOR, sectors)
    table = entry + bytes(48)
    return code.ljust(440, b"\0") + b"MCDK" + bytes(2) + table + b"\x55\xaa"


def disk_initramfs(version: str) -> bytes:
    """gzip'd newc cpio: busybox, the os-release of ``version`` and the marker /init."""
    raw = io.BytesIO()
    cpio = NewcWriter(raw)
    for directory in ("bin", "dev", "etc", "proc"):
        cpio.directory(directory)
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
    cpio.file("etc/os-release", os_release(version).encode())
    cpio.file("init", INIT.encode(), 0o755)
    cpio.close()
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()
