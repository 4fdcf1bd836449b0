"""A tiny busybox initramfs for the QEMU labs, packed in pure Python.

The archive is the kernel's "newc" cpio format, gzip-compressed (fast to pack,
and every Debian kernel unpacks it). It holds a static busybox, the virtio-net
modules in insmod order, a udhcpc event script and ``lookup_init.sh`` as /init,
which asks the appliance's ``GET /v1/lookup`` who it is and prints the status on
the serial console (test-lab.md section 2).
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
from pathlib import Path

from virtlab.guest import Kernel

BUSYBOX = "/usr/bin/busybox"  # Debian's busybox-static: no libraries to copy
INIT_SCRIPT = Path(__file__).with_name("lookup_init.sh")

#: busybox udhcpc calls this with $1 = event and the lease in the environment.
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
    deconfig) ifconfig "$interface" 0.0.0.0 ;;
    bound|renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}"
        echo "$ip" > /tmp/lease-ip ;;
esac
exit 0
"""


class NewcWriter:
    """Writes a cpio "newc" archive (the format the kernel's initramfs unpacker reads)."""

    def __init__(self, out: io.BufferedIOBase):
        self._out = out
        self._ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"",
               rdev: tuple[int, int] = (0, 0), mtime: int = 0) -> None:
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, mtime, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self._out.write(header + encoded + _pad(len(header) + len(encoded)))
        self._out.write(data + _pad(len(data)))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> None:
        """``mtime`` matters for Python sources: a .pyc records its source's mtime,
        and with a wrong one the guest would recompile (slowly, under TCG)."""
        self._entry(name, stat.S_IFREG | mode, data, mtime=mtime)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def close(self) -> None:
        self._entry("TRAILER!!!", 0)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def lookup_init(kernel: Kernel) -> str:
    """The /init script with the module names filled in (in insmod order)."""
    names = " ".join(path.stem for path in kernel.modules)
    return INIT_SCRIPT.read_text().replace("@MODULES@", names)


def build_lookup_initramfs(kernel: Kernel, output: Path, busybox: str = BUSYBOX) -> Path:
    """Pack the lookup initramfs for ``kernel`` into ``output`` (gzip'd newc cpio)."""
    if shutil.which(busybox) is None:
        raise RuntimeError(f"{busybox} not found: install the Debian package busybox-static")
    raw = io.BytesIO()
    cpio = NewcWriter(raw)
    for directory in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp"):
        cpio.directory(directory)
    cpio.char_device("dev/console", 5, 1)  # the kernel opens it before /init runs
    cpio.char_device("dev/null", 1, 3)
    cpio.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
    for module in kernel.modules:
        cpio.file(f"lib/modules/{module.name}", module.read_bytes())
    cpio.file("init", lookup_init(kernel).encode(), 0o755)
    cpio.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_bytes(gzip.compress(raw.getvalue(), compresslevel=1, mtime=0))
    os.replace(partial, output)
    return output
