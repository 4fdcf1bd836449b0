"""What a simulated machine finds when it boots from its disk image file.

Real firmware reads the partition table and starts the boot loader of the OS
on it; the lab reads the same bytes in pure Python (the host kernel does not
parse partitions: test-lab.md section 7): the GPT (or MBR) entries, then each
partition that holds an ext2/3/4 file system (superblock magic at +1080), whose
``/etc/os-release`` it reads with ``debugfs`` (e2fsprogs) at the partition's
byte offset (``image?offset=N``), no mount and no root needed. The first root
file system with an os-release is "the OS that booted".
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import struct
import subprocess

from ramdisk_agent import gpt
from ramdisk_agent.errors import GptError
from ramdisk_agent.host import slots

SECTOR = 512
EXT_MAGIC_OFFSET, EXT_MAGIC = 1080, 0xEF53
EXT_LABEL_OFFSET = 1144
MBR_EMPTY, MBR_PROTECTIVE = 0x00, 0xEE
OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
DEBUGFS_TIMEOUT = 30


class DiskError(Exception):
    """The disk could not be read at all (missing file, debugfs absent)."""


@dataclasses.dataclass
class BootedOs:
    """The OS found on the disk: the partition it lives on and its os-release."""

    partition: int
    offset: int
    fs_label: str
    os_release: dict[str, str]

    @property
    def pretty_name(self) -> str:
        info = self.os_release
        return info.get("PRETTY_NAME") or " ".join(
            v for v in (info.get("NAME"), info.get("VERSION_ID")) if v) or "unknown OS"

    def to_dict(self) -> dict:
        return {"partition": self.partition, "offset": self.offset, "fs_label": self.fs_label,
                "pretty_name": self.pretty_name, "version_id": self.os_release.get("VERSION_ID"),
                "id": self.os_release.get("ID"), "os_release": self.os_release}


def partitions(path: str) -> list[tuple[int, int, int]]:
    """(number, byte offset, byte size) of every partition, from the GPT or the MBR."""
    table = gpt.read_table(path)
    if table.kind == "gpt":
        return [(p.number, p.first_lba * SECTOR, (p.last_lba - p.first_lba + 1) * SECTOR)
                for p in table.partitions]
    if table.kind == "mbr":
        with open(path, "rb") as f:
            mbr = f.read(SECTOR)
        found = []
        for index in range(4):
            kind, start, count = struct.unpack_from("<B3xII", mbr, 446 + 16 * index + 4)
            if kind not in (MBR_EMPTY, MBR_PROTECTIVE) and count:
                found.append((index + 1, start * SECTOR, count * SECTOR))
        return found
    return []


def ext_label(path: str, offset: int) -> str | None:
    """The ext2/3/4 volume label at ``offset`` ("" if unlabelled), None if no ext fs."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        block = os.pread(fd, 1024, offset + 1024)
    finally:
        os.close(fd)
    if len(block) < 1024 or struct.unpack_from("<H", block, EXT_MAGIC_OFFSET - 1024)[0] \
            != EXT_MAGIC:
        return None
    raw = block[EXT_LABEL_OFFSET - 1024:EXT_LABEL_OFFSET - 1024 + 16]
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def read_file(path: str, offset: int, name: str) -> str | None:
    """``name`` from the ext file system at ``offset`` of ``path`` (debugfs), or None."""
    debugfs = shutil.which("debugfs") or "/usr/sbin/debugfs"
    if not os.path.exists(debugfs):
        raise DiskError("debugfs is not installed: install the Debian package e2fsprogs")
    done = subprocess.run([debugfs, "-R", f"cat {shlex.quote(name)}", f"{path}?offset={offset}"],
                          capture_output=True, timeout=DEBUGFS_TIMEOUT)
    text = done.stdout.decode("utf-8", "replace")
    if done.returncode or not text.strip() or b"File not found" in done.stderr:
        return None
    return text


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines (values optionally quoted, as os-release(5) says)."""
    info = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value]
        info[key] = words[0] if words else ""
    return info


def find_os(path: str, only: int | None = None) -> BootedOs | None:
    """The first partition (or partition ``only``) with an ext file system holding an
    os-release; None if none."""
    if not os.path.isfile(path):
        raise DiskError(f"disk image {path} does not exist")
    for number, offset, _size in partitions(path):
        label = None if only not in (None, number) else ext_label(path, offset)
        if label is None:
            continue
        for name in OS_RELEASE_PATHS:
            text = read_file(path, offset, name)
            if text:
                return BootedOs(number, offset, label, parse_os_release(text))
    return None


def ab_slots(path: str) -> slots.SlotDisk | None:
    """The disk's A/B slots (CoreOS /usr partitions, as GRUB's gptprio looks for), or
    None when it has none (an MBR or single-root disk boots the usual way)."""
    disk_slots = slots.SlotDisk(path)
    try:
        found = disk_slots.slots()
    except GptError:
        return None
    return disk_slots if any(s.type_guid == slots.COREOS_USR_TYPE for s in found) else None
