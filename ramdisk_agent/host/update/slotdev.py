"""Which GPT partitions are the A/B slots, which one is running, and a path to each.

The two slots are named by label (``USR-A``/``USR-B``, Flatcar's) or partition
number. The running one is the slot whose PARTUUID the kernel command line booted
(``mount.usr=PARTUUID=`` as GRUB's gptprio writes it, or ``root=PARTUUID=``), unless
``ACTIVE_SLOT`` overrides it. The disk is a block device or, in tests and the lab, a
disk image file; ``DISK`` unset means the disk holding the booted partition.

Writers (the image pipeline, the delta applier) take a path to the slot itself: the
kernel's partition device for a block device, else (an image file, or a device whose
partitions the kernel did not scan) a loop device over the slot's byte range
(``losetup --offset --sizelimit``), detached afterwards, so nothing can write beyond
the slot.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import stat
import struct
import subprocess
from collections.abc import Iterator

from ramdisk_agent.errors import UpdateEngineError
from ramdisk_agent.host import gptdisk
from ramdisk_agent.host.slots import Slot, SlotDisk, parse_slots

_PARTUUID = re.compile(r"(?:^|\s)(?:mount\.usr|usr|root)=PARTUUID=([0-9A-Fa-f-]{36})(?=\s|$)")
INSTALL_DEVICE_OPEN_ERROR = 7


@dataclasses.dataclass(frozen=True)
class SlotRef:
    number: int
    label: str
    guid: str
    offset: int          #: bytes from the start of the disk
    size: int            #: bytes


def booted_partuuid(cmdline: str) -> str | None:
    """The PARTUUID the kernel command line mounts /usr or / from (the last wins)."""
    found = _PARTUUID.findall(cmdline)
    return found[-1].lower() if found else None


def disk_of_partuuid(partuuid: str) -> str:
    """The whole disk holding a partition, through /dev/disk/by-partuuid and sysfs."""
    link = f"/dev/disk/by-partuuid/{partuuid}"
    try:
        name = os.path.basename(os.path.realpath(link, strict=True))
        parent = os.path.basename(os.path.dirname(os.path.realpath(f"/sys/class/block/{name}")))
    except OSError:
        raise UpdateEngineError(f"no partition with PARTUUID {partuuid} ({link} is missing): "
                                "set DISK= in update.conf", INSTALL_DEVICE_OPEN_ERROR) \
            from None
    return f"/dev/{parent}"


class SlotLayout:
    """The slot pair of one disk."""

    def __init__(self, disk: str, labels: tuple[str, str], *, active: str | None = None,
                 cmdline: str = ""):
        self.disk, self.labels, self.active_name, self.cmdline = disk, labels, active, cmdline
        self.gpt = SlotDisk(disk)

    def refs(self) -> tuple[SlotRef, SlotRef]:
        """Both slots, in the order of ``labels``."""
        table = gptdisk.read(self.disk)
        header = table.trusted.header
        slots = parse_slots(table.trusted.entries, header.entry_size)
        return (self._ref(slots, self.labels[0], table),
                self._ref(slots, self.labels[1], table))

    def active_and_passive(self) -> tuple[SlotRef, SlotRef]:
        first, second = self.refs()
        if self.active_name is not None:
            active = self._match((first, second), self.active_name)
        else:
            partuuid = booted_partuuid(self.cmdline)
            found = next((ref for ref in (first, second) if ref.guid == partuuid), None)
            if found is None:
                raise UpdateEngineError(
                    f"the kernel command line names neither slot of {self.disk} "
                    f"(PARTUUID {partuuid or 'not given'}; slots {first.guid}, {second.guid}): "
                    "set ACTIVE_SLOT= in update.conf", INSTALL_DEVICE_OPEN_ERROR)
            active = found
        return active, (second if active == first else first)

    def _match(self, refs: tuple[SlotRef, SlotRef], name: str) -> SlotRef:
        for ref in refs:
            if name in (ref.label, str(ref.number)):
                return ref
        raise UpdateEngineError(f"ACTIVE_SLOT={name!r} is neither slot ({refs[0].label}, "
                                f"{refs[1].label})", INSTALL_DEVICE_OPEN_ERROR)

    def _ref(self, slots: list[Slot], name: str, table: gptdisk.Table) -> SlotRef:
        for slot in slots:
            if name == slot.label or (name.isdigit() and int(name) == slot.number):
                entry_size = table.trusted.header.entry_size
                first, last = struct.unpack_from("<QQ", table.trusted.entries,
                                                 (slot.number - 1) * entry_size + 32)
                return SlotRef(slot.number, slot.label, slot.guid.lower(),
                               first * table.sector, (last - first + 1) * table.sector)
        raise UpdateEngineError(f"{self.disk} has no partition {name!r}: set SLOTS= in "
                                "update.conf to the two slot labels or numbers",
                                INSTALL_DEVICE_OPEN_ERROR)


@contextlib.contextmanager
def slot_path(disk: str, ref: SlotRef) -> Iterator[str]:
    """A path whose bytes are exactly the slot's."""
    try:
        mode = os.stat(disk).st_mode
    except OSError as exc:
        raise UpdateEngineError(f"disk {disk} cannot be opened: {exc}",
                                INSTALL_DEVICE_OPEN_ERROR) from None
    if stat.S_ISBLK(mode):
        device = _kernel_partition(disk, ref.number)
        if device is not None:
            yield device
            return
    loop = _attach(disk, ref)
    try:
        yield loop
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)


def _kernel_partition(disk: str, number: int) -> str | None:
    name = os.path.basename(os.path.realpath(disk))
    base = f"/sys/class/block/{name}"
    try:
        children = os.listdir(base)
    except OSError:
        return None
    for child in children:
        try:
            with open(f"{base}/{child}/partition", encoding="ascii") as handle:
                if int(handle.read()) == number and os.path.exists(f"/dev/{child}"):
                    return f"/dev/{child}"
        except (OSError, ValueError):
            continue
    return None


def _existing(disk: str, ref: SlotRef) -> str | None:
    """A loop device already mapping exactly this slot: left by an engine that was
    killed mid-write (its ``finally`` never ran). Reused, then detached as ours."""
    done = subprocess.run(["losetup", "-n", "-O", "NAME,OFFSET,SIZELIMIT", "-j", disk],
                          capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1:] == [str(ref.offset), str(ref.size)]:
            return fields[0]
    return None


def _attach(disk: str, ref: SlotRef) -> str:
    try:
        leftover = _existing(disk, ref)
        if leftover is not None:
            return leftover
        done = subprocess.run(["losetup", "--find", "--show", "--offset", str(ref.offset),
                               "--sizelimit", str(ref.size), disk],
                              capture_output=True, text=True, check=False)
    except OSError as exc:
        raise UpdateEngineError(f"losetup cannot run ({exc}): install util-linux",
                                INSTALL_DEVICE_OPEN_ERROR) from None
    if done.returncode != 0:
        raise UpdateEngineError(f"losetup could not map slot {ref.label} of {disk}: "
                                f"{done.stderr.strip()} (the engine needs root)",
                                INSTALL_DEVICE_OPEN_ERROR)
    return done.stdout.strip()
