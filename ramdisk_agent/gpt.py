"""Read a disk's partition table (GPT, or the MBR signature) in pure Python.

Used for ``standby.get_partition_uuids`` and to place the config drive. The host
kernel in the lab does not parse partitions, so this reads the bytes directly.
"""
from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass

ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
SECTOR = 512


@dataclass
class Partition:
    number: int
    type_guid: str
    guid: str
    first_lba: int
    last_lba: int
    name: str


@dataclass
class PartitionTable:
    kind: str                 # "gpt", "mbr" or "none"
    disk_id: str | None       # GPT disk GUID or MBR signature (0x%08x)
    partitions: list[Partition]


def read_table(path: str) -> PartitionTable:
    """The partition table at the start of ``path``."""
    with open(path, "rb") as f:
        head = f.read(34 * SECTOR)
    if len(head) < 2 * SECTOR:
        return PartitionTable("none", None, [])
    if head[SECTOR:SECTOR + 8] == b"EFI PART":
        return _gpt(path, head[SECTOR:2 * SECTOR])
    if head[510:512] == b"\x55\xaa":
        signature = struct.unpack_from("<I", head, 440)[0]
        return PartitionTable("mbr", f"0x{signature:08x}", [])
    return PartitionTable("none", None, [])


def _gpt(path: str, header: bytes) -> PartitionTable:
    disk_guid = str(uuid.UUID(bytes_le=header[56:72]))
    entries_lba, count, size = struct.unpack_from("<QII", header, 72)
    if not (0 < count <= 1024 and 128 <= size <= 4096):
        return PartitionTable("gpt", disk_guid, [])
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        raw = os.pread(fd, count * size, entries_lba * SECTOR)
    finally:
        os.close(fd)
    parts = []
    for i in range(count):
        entry = raw[i * size:(i + 1) * size]
        if len(entry) < 128 or entry[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        name = entry[56:128].decode("utf-16-le", "replace").rstrip("\x00")
        parts.append(Partition(i + 1, str(uuid.UUID(bytes_le=entry[:16])),
                               str(uuid.UUID(bytes_le=entry[16:32])), first, last, name))
    return PartitionTable("gpt", disk_guid, parts)
