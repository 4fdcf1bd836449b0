"""The lab firmware on an A/B disk: it picks the /usr slot as GRUB's gptprio does.

A Flatcar-shaped disk (virtlab.images.build_ab_image: ESP, USR-A, USR-B) is booted
through ``virtlab.firmware.boot`` as a lab machine boots it. What the firmware decides
is read back with the real ``cgpt`` too, so the lab and a ChromeOS/Flatcar tool agree
on every bit it consumed.
"""
from __future__ import annotations

import os
import subprocess

from ramdisk_agent.host import slots
from tests.functional.tools import require
from virtlab import disk, firmware, images

SLOT_MIB = 24


def _cgpt_attrs(path, part: int) -> str:
    done = subprocess.run([require("cgpt"), "show", "-i", str(part), "-A", str(path)],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _write_slot(disk_path, part: int, rootfs) -> None:
    _number, offset, size = next(p for p in disk.partitions(str(disk_path)) if p[0] == part)
    data = rootfs.read_bytes()
    assert len(data) <= size
    fd = os.open(disk_path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _boot(path):
    return firmware.boot("disk", "52:54:00:00:00:01", str(path), None)


def test_gptprio_boots_the_trial_slot_once_then_falls_back(tmp_path):
    for tool in ("sgdisk", "mkfs.ext4", "debugfs"):
        require(tool)
    ab = images.build_ab_image(tmp_path / "ab.img", "1", SLOT_MIB)
    first = _boot(ab)
    assert first.kind == "disk" and first.os.os_release["VERSION_ID"] == "1"
    assert first.os.partition == 2 and "mount.usr=PARTUUID=" in first.cmdline
    # An update: version 2 written into USR-B, then Flatcar's postinst bits (-S0 -T1,
    # prioritize): the next boot tries B once.
    _write_slot(ab, 3, images.build_rootfs(tmp_path / "v2.fs", "2", SLOT_MIB))
    slot_disk = slots.SlotDisk(str(ab))
    slot_disk.mark_for_trial(3)
    trial = _boot(ab)
    assert trial.os.partition == 3 and trial.os.os_release["VERSION_ID"] == "2"
    assert any("tries 1->0" in text for _src, text in trial.events)
    # The try was consumed on disk, as real cgpt reads it: B is unproven with no tries.
    assert slot_disk.bits(3) == slots.SlotBits(priority=2, tries=0, successful=False)
    assert _cgpt_attrs(ab, 3) == hex(slots.SlotBits(2, 0, False).apply(0) >> 48)
    # Never marked good: the boot after falls back to A (rollback by the firmware).
    back = _boot(ab)
    assert back.os.partition == 2 and back.os.os_release["VERSION_ID"] == "1"


def test_a_slot_marked_good_stays_and_nothing_bootable_is_no_boot(tmp_path):
    for tool in ("sgdisk", "mkfs.ext4", "debugfs"):
        require(tool)
    ab = images.build_ab_image(tmp_path / "ab.img", "1", SLOT_MIB)
    _write_slot(ab, 3, images.build_rootfs(tmp_path / "v2.fs", "2", SLOT_MIB))
    slot_disk = slots.SlotDisk(str(ab))
    slot_disk.mark_for_trial(3)
    assert _boot(ab).os.partition == 3
    slot_disk.mark_good(3)                      # the health gate passed on B
    for _ in range(2):
        again = _boot(ab)
        assert again.os.partition == 3 and again.os.os_release["VERSION_ID"] == "2"
    for part in (2, 3):
        slot_disk.mark_unbootable(part)
    none = _boot(ab)
    assert none.kind == "no-boot"
    assert any("no /usr slot is bootable" in text for _src, text in none.events)
