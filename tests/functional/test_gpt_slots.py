"""A/B slot bits (ramdisk_agent/host/slots.py) against the real ``cgpt`` and ``sgdisk``.

Disk images are made with sgdisk; what we write, ``cgpt show`` reads; what ``cgpt add``
and ``cgpt prioritize`` write, we read, and for the same operation both tools leave
byte-identical images (both GPT copies, both CRCs). ``sgdisk -v`` checks every table
we leave. Bad input (truncated image, both headers corrupted, not a GPT, a partition
out of range) is refused with nothing written; a crash at each point of a rewrite
leaves a table cgpt reads consistently, which our next edit makes whole.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from ramdisk_agent.errors import GptError, InvalidSlot
from ramdisk_agent.host import gptdisk
from ramdisk_agent.host.slots import (
    CHROMEOS_KERNEL_TYPE,
    COREOS_USR_TYPE,
    SlotBits,
    SlotDisk,
)
from tests.functional.tools import require_all

MIB = 1 << 20
SIZE = 16 * MIB


@pytest.fixture(autouse=True)
def tools():
    require_all(["cgpt", "sgdisk"])


def make_disk(path: Path, slot_type: str = COREOS_USR_TYPE, slots: int = 2) -> str:
    """An ESP (1) and ``slots`` slot partitions (3, 4, ...), as Flatcar numbers them."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(SIZE)
    args = ["sgdisk", "-o", "-n1:2048:+2M", "-t1:EF00"]
    for i in range(slots):
        n = 3 + i
        args += [f"-n{n}:0:+2M", f"-t{n}:{slot_type}", f"-c{n}:USR-{chr(65 + i)}"]
    subprocess.run([*args, str(path)], check=True, capture_output=True)
    return str(path)


def cgpt(*args: str) -> str:
    return subprocess.run(["cgpt", *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def cgpt_bits(disk: str, part: int) -> tuple[int, int, int, int]:
    """(priority, tries, successful, raw 16-bit attribute) as cgpt show reads them."""
    return (int(cgpt("show", "-P", "-i", str(part), disk)),
            int(cgpt("show", "-T", "-i", str(part), disk)),
            int(cgpt("show", "-S", "-i", str(part), disk)),
            int(cgpt("show", "-A", "-i", str(part), disk), 16))


def sgdisk_verify(disk: str) -> str:
    out = subprocess.run(["sgdisk", "-v", disk], capture_output=True, text=True).stdout
    assert "No problems found" in out, out
    return out


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def twin(disk: str, tmp_path: Path) -> str:
    copy = str(tmp_path / "twin.img")
    shutil.copyfile(disk, copy)
    return copy


@pytest.mark.parametrize("priority,tries,successful",
                         [(15, 0, True), (0, 15, False), (2, 1, False), (1, 0, True),
                          (7, 9, True), (0, 0, False)])
def test_cgpt_reads_what_we_write(tmp_path, priority, tries, successful):
    disk = make_disk(tmp_path / "d.img")
    # Bits we must leave alone: legacy-BIOS-bootable (2), required (0), and bit 60.
    cgpt("add", "-i", "4", "-B", "1", "-R", "1", "-A", "0x1000", disk)
    before = SlotDisk(disk).slots()[2].attributes
    assert SlotDisk(disk).set_attributes(4, priority=priority, tries=tries,
                                         successful=successful) \
        == SlotBits(priority, tries, successful)
    raw = 0x1000 | priority | tries << 4 | int(successful) << 8
    assert cgpt_bits(disk, 4) == (priority, tries, int(successful), raw)
    after = SlotDisk(disk).slots()[2].attributes
    assert after & 0xFFFF_FFFF_FFFF == before & 0xFFFF_FFFF_FFFF   # bits 0-47 untouched
    assert cgpt_bits(disk, 3) == (0, 0, 0, 0)                      # the other slot too
    sgdisk_verify(disk)


@pytest.mark.parametrize("flags,expected",
                         [(["-P", "15", "-T", "0", "-S", "1"], SlotBits(15, 0, True)),
                          (["-P", "1", "-T", "15", "-S", "0"], SlotBits(1, 15, False)),
                          (["-P", "0", "-T", "3", "-S", "1"], SlotBits(0, 3, True))])
def test_we_read_what_cgpt_writes(tmp_path, flags, expected):
    disk = make_disk(tmp_path / "d.img")
    cgpt("add", "-i", "3", *flags, disk)
    assert SlotDisk(disk).bits(3) == expected
    assert SlotDisk(disk).bits(4) == SlotBits(0, 0, False)


#: starting priorities of kernel partitions 3..6 -> the cgpt prioritize call
PRIORITIZE = [
    ([2, 1, 0, 0], ["-i", "4"]),
    ([1, 2, 0, 0], ["-i", "4"]),
    ([0, 0, 0, 0], ["-i", "5"]),
    ([3, 3, 1, 0], ["-i", "6"]),
    ([5, 5, 2, 9], ["-i", "3"]),
    ([1, 1, 1, 1], ["-i", "4", "-P", "10"]),
    ([15, 14, 13, 12], ["-i", "6", "-P", "2"]),
]


@pytest.mark.parametrize("start,args", PRIORITIZE)
def test_prioritize_leaves_the_image_cgpt_prioritize_leaves(tmp_path, start, args):
    disk = make_disk(tmp_path / "d.img", CHROMEOS_KERNEL_TYPE, slots=4)
    for part, priority in enumerate(start, start=3):
        cgpt("add", "-i", str(part), "-P", str(priority), "-S", "1", disk)
    theirs = twin(disk, tmp_path)
    cgpt("prioritize", *args, theirs)
    part = int(args[1])
    top = int(args[3]) if len(args) > 2 else None
    SlotDisk(disk).prioritize(part, top)
    assert [SlotDisk(disk).bits(n).priority for n in range(3, 7)] \
        == [int(cgpt("show", "-P", "-i", str(n), theirs)) for n in range(3, 7)]
    assert digest(disk) == digest(theirs)
    sgdisk_verify(disk)


def test_flatcar_operations_leave_the_images_cgpt_leaves(tmp_path):
    disk = make_disk(tmp_path / "d.img", CHROMEOS_KERNEL_TYPE)
    cgpt("add", "-i", "3", "-P", "1", "-S", "1", disk)
    theirs = twin(disk, tmp_path)
    steps = [  # (ours, flatcar's cgpt calls)
        (lambda d: d.mark_unbootable(4), [["add", "-i", "4", "-P", "0", "-T", "0", "-S", "0"]]),
        (lambda d: d.mark_for_trial(4),       # flatcar-postinst
         [["add", "-i", "4", "-S", "0", "-T", "1"], ["prioritize", "-i", "4"]]),
        (lambda d: d.boot_next(CHROMEOS_KERNEL_TYPE), [["add", "-i", "4", "-T", "0"]]),
        (lambda d: d.mark_good(4), [["add", "-i", "4", "-S", "1", "-T", "0"]]),  # setgoodroot
    ]
    for ours, calls in steps:
        ours(SlotDisk(disk))
        for call in calls:
            cgpt(*call, theirs)
        assert digest(disk) == digest(theirs), calls
        sgdisk_verify(disk)
    assert cgpt_bits(disk, 4)[:3] == (2, 0, 1) and cgpt_bits(disk, 3)[:3] == (1, 0, 1)


def corrupt(disk: str, offset: int) -> None:
    with open(disk, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_corrupted_primary_header_is_repaired_from_the_backup_as_cgpt_does(tmp_path):
    disk = make_disk(tmp_path / "d.img")
    cgpt("add", "-i", "3", "-P", "2", "-S", "1", disk)
    corrupt(disk, 512 + 40)                       # the primary's first-usable LBA
    theirs = twin(disk, tmp_path)
    assert SlotDisk(disk).bits(3) == SlotBits(2, 0, True)   # read from the backup
    assert SlotDisk(disk).repair() is True
    cgpt("repair", theirs)
    assert digest(disk) == digest(theirs)
    assert SlotDisk(disk).repair() is False                 # whole now: writes nothing
    sgdisk_verify(disk)


def test_an_edit_on_a_corrupted_primary_repairs_it_first(tmp_path):
    disk = make_disk(tmp_path / "d.img")
    corrupt(disk, 512 + 16)                       # the primary's header CRC
    SlotDisk(disk).mark_for_trial(4)
    assert cgpt_bits(disk, 4)[:3] == (1, 1, 0)
    sgdisk_verify(disk)
    table = gptdisk.read(disk)
    assert table.whole and table.problems == ()


def test_a_corrupted_backup_is_rebuilt_from_the_primary(tmp_path):
    disk = make_disk(tmp_path / "d.img")
    corrupt(disk, SIZE - 512 + 16)
    theirs = twin(disk, tmp_path)
    SlotDisk(disk).repair()
    cgpt("repair", theirs)
    assert digest(disk) == digest(theirs)
    sgdisk_verify(disk)


def assert_refused(disk: str, error: type[Exception], match: str, action) -> None:
    before = digest(disk)
    with pytest.raises(error, match=match):
        action(SlotDisk(disk))
    assert digest(disk) == before, "a refused edit wrote to the disk"


def test_both_headers_corrupted_is_refused_and_nothing_written(tmp_path):
    disk = make_disk(tmp_path / "d.img")
    corrupt(disk, 512 + 16)
    corrupt(disk, SIZE - 512 + 16)
    assert_refused(disk, GptError, "no valid GPT: primary .*header CRC32.*backup .*CRC32",
                   lambda d: d.mark_good(3))
    assert_refused(disk, GptError, "no valid GPT", lambda d: d.repair())


def test_a_truncated_image_is_refused(tmp_path):
    disk = make_disk(tmp_path / "d.img")
    with open(disk, "r+b") as f:
        f.truncate(8 * MIB)
    assert_refused(disk, GptError, "truncated", lambda d: d.mark_for_trial(3))
    with open(disk, "r+b") as f:
        f.truncate(700)
    assert_refused(disk, GptError, "too small to hold a GPT", lambda d: d.slots())


def test_a_disk_that_is_not_gpt_is_refused(tmp_path):
    disk = tmp_path / "mbr.img"
    with open(disk, "wb") as f:
        f.truncate(8 * MIB)
        f.seek(510)
        f.write(b"\x55\xaa")
    assert_refused(str(disk), GptError, "no 'EFI PART' signature",
                   lambda d: d.mark_unbootable(3))


@pytest.mark.parametrize("part,match", [(0, "does not exist.*1..128"),
                                        (129, "does not exist.*1..128"),
                                        (2, "not a used partition")])
def test_a_partition_out_of_range_is_refused(tmp_path, part, match):
    disk = make_disk(tmp_path / "d.img")
    assert_refused(disk, InvalidSlot, match, lambda d: d.mark_good(part))
    assert_refused(disk, InvalidSlot, match, lambda d: d.prioritize(part))


@pytest.mark.parametrize("value", [16, -1])
def test_a_value_out_of_range_is_refused(tmp_path, value):
    disk = make_disk(tmp_path / "d.img")
    assert_refused(disk, InvalidSlot, "0..15", lambda d: d.set_attributes(3, tries=value))


class Crash(BaseException):
    """The process died here (BaseException: nothing in the code under test catches it)."""


#: writes done before the crash -> the table readers see afterwards
CRASHES = [(1, "old"),   # backup entries written, backup header not: backup invalid
           (2, "old"),   # backup whole and new, primary old and valid: primary wins
           (3, "new")]   # primary entries new, its header old: primary invalid, backup new


@pytest.mark.parametrize("writes,seen", CRASHES)
def test_a_crash_between_the_writes_leaves_one_consistent_table(tmp_path, monkeypatch,
                                                                writes, seen):
    disk = make_disk(tmp_path / "d.img")
    cgpt("add", "-i", "3", "-P", "1", "-S", "1", disk)
    real_write, done = gptdisk._pwrite_all, []

    def dying_write(fd, data, offset):
        if len(done) == writes:
            raise Crash()
        done.append(offset)
        real_write(fd, data, offset)

    monkeypatch.setattr(gptdisk, "_pwrite_all", dying_write)
    with pytest.raises(Crash):
        SlotDisk(disk).mark_for_trial(4)
    monkeypatch.undo()
    expected = {"old": ((1, 0, 1), (0, 0, 0)), "new": ((1, 0, 1), (2, 1, 0))}[seen]
    assert (cgpt_bits(disk, 3)[:3], cgpt_bits(disk, 4)[:3]) == expected
    ours = SlotDisk(disk)
    assert (ours.bits(3), ours.bits(4)) == tuple(SlotBits(p, t, bool(s))
                                                 for p, t, s in expected)
    assert not gptdisk.read(disk).whole
    ours.mark_for_trial(4)                 # the next edit repairs, then edits
    assert cgpt_bits(disk, 4)[:3] == (2, 1, 0)
    assert gptdisk.read(disk).whole
    sgdisk_verify(disk)


def test_an_image_written_to_a_larger_disk_keeps_its_backup_where_the_primary_points(
        tmp_path):
    """The ramdisk writes an image onto a larger disk: the backup is not at the end.
    Edits keep it where the primary's alternate LBA says, both copies valid; once
    ``sgdisk -e`` moves it to the end, sgdisk finds nothing wrong and the bits are kept."""
    disk = make_disk(tmp_path / "d.img")
    with open(disk, "r+b") as f:
        f.truncate(2 * SIZE)
    SlotDisk(disk).mark_for_trial(4)
    table = gptdisk.read(disk)
    assert table.whole and table.backup.header.my_lba == SIZE // 512 - 1
    assert cgpt_bits(disk, 4)[:3] == (1, 1, 0)
    subprocess.run(["sgdisk", "-e", disk], check=True, capture_output=True)
    sgdisk_verify(disk)
    assert SlotDisk(disk).bits(4) == SlotBits(1, 1, False)
    assert gptdisk.read(disk).backup.header.my_lba == 2 * SIZE // 512 - 1
