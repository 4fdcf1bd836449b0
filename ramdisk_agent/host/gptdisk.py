"""A disk's GPT as two checked copies, repaired and rewritten whole, crash-safe.

``ramdisk_agent/gpt.py`` reads a table leniently to find partitions; this module is
for editing one: every header field and both CRC32s are checked (UEFI 2.x §5.3), the
backup copy is read too, and a rewrite updates both copies.

Which copy is trusted, as ``cgpt`` decides it (vboot ``RepairHeader``/``RepairEntries``):
the primary when it is valid, even when the backup is valid and differs; the backup
when only it is valid. :func:`rewrite` first makes the pair whole by writing only the
deficient copy (a corrupted primary is rebuilt from the backup, as ``cgpt repair``),
then writes the edited entries.

Write order and what a crash leaves (each step is followed by ``fsync``, so the device
cannot reorder them):

1. the backup's entry array. A crash here leaves the backup's entry CRC wrong: the
   backup is invalid, the primary still holds the old table, intact.
2. the backup header (new entry CRC, new header CRC). A crash after it leaves two valid
   copies that differ: readers (cgpt, GRUB, the kernel, us) trust the primary, the
   *old* table, and the next repair or edit copies the primary over the backup.
3. the primary's entry array. A crash here leaves the primary's entry CRC wrong: the
   primary is invalid, the backup (already new) is used: the *new* table.
4. the primary header. Both copies are new and identical.

So a crash at any point leaves one consistent table, old or new, never a mix. Before
step 1 both copies are valid (the repair above), which is what makes step 1 safe:
overwriting the only valid copy would risk losing the table.

Only the header sectors and entry arrays are written; the protective MBR and the
partitions' contents are never touched.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
import stat
import struct
import zlib
from collections.abc import Callable

from ramdisk_agent.errors import GptError

SIGNATURE = b"EFI PART"
REVISION = 0x00010000
#: signature, revision, header size, header CRC, reserved, my LBA, alternate LBA,
#: first and last usable LBA, disk GUID, entries LBA, entry count, entry size, entries CRC
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
HEADER_SIZE = _HEADER.size   # 92
_CRC_OFFSET = 16
#: More entry bytes than any real table holds (128 x 128 B = 16 KiB is the norm).
MAX_ENTRY_BYTES = 1 << 20
_BLKSSZGET = 0x1268          # linux/fs.h: logical sector size of a block device


@dataclasses.dataclass(frozen=True)
class Header:
    """One GPT header's fields; ``raw`` is its ``size`` bytes as read."""

    raw: bytes
    size: int
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: bytes
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int

    @property
    def entry_bytes(self) -> int:
        return self.entry_count * self.entry_size

    def synonymous(self, other: Header) -> bool:
        """The fields both copies must share (cgpt ``IsSynonymous``)."""
        return (self.first_usable, self.last_usable, self.entry_count, self.entry_size,
                self.disk_guid) == (other.first_usable, other.last_usable,
                                    other.entry_count, other.entry_size, other.disk_guid)

    def encode(self, *, my_lba: int, alternate_lba: int, entries_lba: int,
               entries: bytes) -> bytes:
        """These header bytes placed at ``my_lba`` for ``entries``, both CRCs new."""
        raw = bytearray(self.raw)
        _HEADER.pack_into(raw, 0, SIGNATURE, REVISION, self.size, 0, 0, my_lba,
                          alternate_lba, self.first_usable, self.last_usable,
                          self.disk_guid, entries_lba, self.entry_count, self.entry_size,
                          zlib.crc32(entries))
        struct.pack_into("<I", raw, _CRC_OFFSET, zlib.crc32(raw))
        return bytes(raw)


@dataclasses.dataclass(frozen=True)
class Copy:
    """One valid copy of the table: its header and its entry array."""

    header: Header
    entries: bytes


@dataclasses.dataclass(frozen=True)
class Table:
    """Both copies as found; ``None`` for an invalid one, with the reason in ``problems``."""

    sector: int
    sectors: int
    primary: Copy | None
    backup: Copy | None
    problems: tuple[str, ...]

    @property
    def trusted(self) -> Copy:
        """The copy readers use: the primary when valid (cgpt, the kernel), else the backup."""
        copy = self.primary or self.backup
        assert copy is not None   # read() refuses a disk with neither
        return copy

    @property
    def whole(self) -> bool:
        """Both copies valid, identical entries, the same shared header fields."""
        return (self.primary is not None and self.backup is not None
                and self.primary.entries == self.backup.entries
                and self.primary.header.synonymous(self.backup.header))


def read(path: str) -> Table:
    """The GPT of ``path`` (an image file or a block device); :class:`GptError` when
    neither copy is valid, naming what is wrong with each."""
    fd = _open(path, os.O_RDONLY)
    try:
        return _read(fd, path)
    finally:
        os.close(fd)


def repair(path: str) -> bool:
    """Make both copies whole from the trusted one (``cgpt repair``); whether it wrote."""
    fd = _open(path, os.O_RDWR)
    try:
        return _make_whole(fd, _read(fd, path))
    finally:
        os.close(fd)


def rewrite(path: str, edit: Callable[[bytearray, Header], None]) -> bytes:
    """Repair, let ``edit`` change the trusted entry array in place, write it to both
    copies (backup first, see the module docstring); the entries now on disk.

    ``edit`` may raise to refuse (nothing of its change is written; a repair made
    first stays, it only completes the table readers already use). An edit that
    changes nothing writes nothing beyond the repair.
    """
    fd = _open(path, os.O_RDWR)
    try:
        table = _read(fd, path)
        _make_whole(fd, table)
        trusted = table.trusted
        entries = bytearray(trusted.entries)
        edit(entries, trusted.header)
        if bytes(entries) == trusted.entries:
            return trusted.entries
        backup_lba = _backup_lba(table)
        _write_copy(fd, table.sector, trusted.header, bytes(entries), my_lba=backup_lba,
                    alternate_lba=1, entries_lba=_backup_entries_lba(table, backup_lba))
        _write_copy(fd, table.sector, trusted.header, bytes(entries), my_lba=1,
                    alternate_lba=backup_lba, entries_lba=_primary_entries_lba(table))
        return bytes(entries)
    finally:
        os.close(fd)


# -- reading ---------------------------------------------------------------------------

def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as e:
        raise GptError(f"{path}: cannot open: {e.strerror}") from e


def _geometry(fd: int, path: str) -> tuple[int, int]:
    """(sector size, sectors) of an image file (512-byte sectors) or block device."""
    sector = 512
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        sector = struct.unpack("<i", fcntl.ioctl(fd, _BLKSSZGET, b"\0" * 4))[0]
    size = os.lseek(fd, 0, os.SEEK_END)
    if size < 3 * sector:
        raise GptError(f"{path}: {size} bytes is too small to hold a GPT "
                       "(truncated image?)")
    return sector, size // sector


def _read(fd: int, path: str) -> Table:
    sector, sectors = _geometry(fd, path)
    problems: list[str] = []
    primary = _read_copy(fd, 1, sector, sectors, primary=True, problems=problems)
    backup = _read_copy(fd, sectors - 1, sector, sectors, primary=False, problems=problems)
    if backup is None and primary is not None \
            and primary.header.alternate_lba not in (sectors - 1, 1):
        # An image written to a larger disk: the backup is where the primary says,
        # not at the disk's end (the kernel reads it there too).
        backup = _read_copy(fd, primary.header.alternate_lba, sector, sectors,
                            primary=False, problems=problems)
    if primary is None and backup is None:
        raise GptError(f"{path}: no valid GPT: " + "; ".join(problems))
    return Table(sector, sectors, primary, backup, tuple(problems))


def _read_copy(fd: int, lba: int, sector: int, sectors: int, *, primary: bool,
               problems: list[str]) -> Copy | None:
    name = "primary" if primary else "backup"
    raw = os.pread(fd, sector, lba * sector)
    try:
        header = _parse_header(raw, lba, sector, sectors, primary=primary)
        entries = os.pread(fd, header.entry_bytes, header.entries_lba * sector)
        if len(entries) != header.entry_bytes:
            raise ValueError("entry array runs past the end of the disk (truncated?)")
        if zlib.crc32(entries) != header.entries_crc:
            raise ValueError("entry array CRC32 does not match the header")
    except ValueError as e:
        problems.append(f"{name} GPT at LBA {lba}: {e}")
        return None
    return Copy(header, entries)


def _parse_header(raw: bytes, lba: int, sector: int, sectors: int, *,
                  primary: bool) -> Header:
    """The header in ``raw`` if every field is valid; ValueError naming the first that is not."""
    if len(raw) < HEADER_SIZE or raw[:8] != SIGNATURE:
        raise ValueError("no 'EFI PART' signature")
    (_sig, revision, size, crc, _res, my_lba, alternate, first, last, guid, entries_lba,
     count, entry_size, entries_crc) = _HEADER.unpack_from(raw)
    if revision != REVISION:
        raise ValueError(f"revision 0x{revision:08x} (expected 0x{REVISION:08x})")
    if not HEADER_SIZE <= size <= sector:
        raise ValueError(f"header size {size} outside {HEADER_SIZE}..{sector}")
    body = bytearray(raw[:size])
    struct.pack_into("<I", body, _CRC_OFFSET, 0)
    if zlib.crc32(body) != crc:
        raise ValueError("header CRC32 does not match")
    if my_lba != lba:
        raise ValueError(f"header says it is at LBA {my_lba}")
    if alternate >= sectors:
        raise ValueError(f"alternate header at LBA {alternate}, past the disk's "
                         f"{sectors} sectors (truncated image?)")
    if entry_size < 128 or entry_size % 128 or entry_size > 4096:
        raise ValueError(f"entry size {entry_size} (a multiple of 128 up to 4096)")
    if not 0 < count * entry_size <= MAX_ENTRY_BYTES:
        raise ValueError(f"{count} entries of {entry_size} bytes")
    if not 2 <= first <= last + 1 or last >= sectors:
        raise ValueError(f"usable LBAs {first}..{last} do not fit {sectors} sectors "
                         "(truncated image?)")
    end = entries_lba + -(-count * entry_size // sector)
    inside = (2 <= entries_lba and end <= first) if primary \
        else (last < entries_lba and end <= my_lba)
    if not inside:
        raise ValueError(f"entry array at LBA {entries_lba} overlaps the usable area "
                         "or the header")
    return Header(bytes(raw[:size]), size, my_lba, alternate, first, last, guid,
                  entries_lba, count, entry_size, entries_crc)


# -- writing ---------------------------------------------------------------------------

def _entry_sectors(header: Header, table: Table) -> int:
    return -(-header.entry_bytes // table.sector)


def _backup_lba(table: Table) -> int:
    """Where the backup header goes: where it is, else where the primary points, else
    the last LBA (cgpt puts a rebuilt backup there)."""
    if table.backup is not None:
        return table.backup.header.my_lba
    assert table.primary is not None
    alternate = table.primary.header.alternate_lba
    floor = table.primary.header.last_usable + _entry_sectors(table.primary.header, table)
    return alternate if floor < alternate < table.sectors else table.sectors - 1


def _backup_entries_lba(table: Table, backup_lba: int) -> int:
    """Where the backup's entries go: where they are, else just before its header."""
    if table.backup is not None:
        return table.backup.header.entries_lba
    return backup_lba - _entry_sectors(table.trusted.header, table)


def _primary_entries_lba(table: Table) -> int:
    """Where the primary's entries go: where they are, else LBA 2 (cgpt, sgdisk)."""
    if table.primary is not None:
        return table.primary.header.entries_lba
    header = table.trusted.header
    if 2 + _entry_sectors(header, table) > header.first_usable:
        raise GptError("cannot rebuild the primary GPT: its entry array does not fit "
                       f"before the first usable LBA {header.first_usable}")
    return 2


def _make_whole(fd: int, table: Table) -> bool:
    """Write the copy that is missing or differs from the trusted one; whether it wrote."""
    if table.whole:
        return False
    trusted = table.trusted
    if table.primary is None:
        _write_copy(fd, table.sector, trusted.header, trusted.entries, my_lba=1,
                    alternate_lba=trusted.header.my_lba,
                    entries_lba=_primary_entries_lba(table))
    else:
        backup_lba = _backup_lba(table)
        _write_copy(fd, table.sector, trusted.header, trusted.entries, my_lba=backup_lba,
                    alternate_lba=1, entries_lba=_backup_entries_lba(table, backup_lba))
    return True


def _write_copy(fd: int, sector: int, header: Header, entries: bytes, *, my_lba: int,
                alternate_lba: int, entries_lba: int) -> None:
    """One copy: its entry array, fsync, then its header, fsync (the order the module
    docstring relies on)."""
    raw = header.encode(my_lba=my_lba, alternate_lba=alternate_lba,
                        entries_lba=entries_lba, entries=entries)
    _pwrite_all(fd, entries, entries_lba * sector)
    os.fsync(fd)
    _pwrite_all(fd, raw, my_lba * sector)
    os.fsync(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
