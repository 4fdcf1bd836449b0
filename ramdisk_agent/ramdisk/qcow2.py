"""The qcow2 format (v2 and v3) as the agent reads it: header checks, tables, clusters.

What the streaming converter (:mod:`ramdisk_agent.ramdisk.qcow2stream`) needs: the
header parsed and refused where the agent must not write the image (a backing file,
encryption, an external data file, an image marked corrupt, as ironic-python-agent
refuses them), L1 and L2 entries decoded into runs of guest bytes, and compressed
clusters inflated (raw deflate, or zstd when the image says so). Offsets follow
qemu's ``docs/interop/qcow2.txt``; where qemu is stricter or looser than the text,
the comment says which qemu behaviour is copied.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ramdisk_agent.errors import ImageWriteError

try:    # zstd-compressed clusters (qcow2 v3 compression_type=zstd): setup.py's agent deps
    import zstandard
except ImportError:     # a ramdisk built without it falls back to qemu-img (NotStreamable)
    zstandard = None  # type: ignore[assignment]
DECOMPRESS_ERRORS: tuple[type[Exception], ...] = (
    (zlib.error, zstandard.ZstdError) if zstandard else (zlib.error,))

MAGIC = b"QFI\xfb"
HEADER_BYTES = 112          # v3 header with compression_type (at 104)
V2_HEADER_BYTES, V3_HEADER_BYTES = 72, 104
MIN_CLUSTER_BITS, MAX_CLUSTER_BITS = 9, 21      # qemu's limits: 512 B .. 2 MiB
MIN_EXTENDED_L2_BITS = 14   # subclusters need clusters of 16 KiB at least (qemu)
MAX_L1_ENTRIES = (32 << 20) // 8               # qemu's QCOW_MAX_L1_SIZE (32 MiB)
SUBCLUSTERS = 32
ZSTD_MAX_WINDOW = 1 << 23   # a cluster is at most 2 MiB: bounds a hostile frame's memory

OFFSET_MASK = 0x00FFFFFFFFFFFE00    # bits 9-55 of L1 and standard L2 entries
COMPRESSED = 1 << 62
ZERO = 1                            # "reads as zero" flag of a standard L2 entry

# Incompatible feature bits (header bytes 72-79), with what the agent does about each.
DIRTY, CORRUPT, DATA_FILE, COMPRESSION_TYPE, EXTENDED_L2 = 1, 2, 4, 8, 16
KNOWN_FEATURES = DIRTY | CORRUPT | DATA_FILE | COMPRESSION_TYPE | EXTENDED_L2
REFUSED_FEATURES = {   # DIRTY only means stale refcounts, which a reader never uses
    CORRUPT: "is marked corrupt (repair it with qemu-img check -r all)",
    DATA_FILE: "keeps its data in an external data file",
}
COMPRESSION_NAMES = {0: "zlib", 1: "zstd"}

_V2 = struct.Struct(">4sIQIIQIIQ")      # magic .. l1_table_offset (bytes 0-47)
_V3 = struct.Struct(">QQQII")           # incompatible .. header_length (bytes 72-103)


class NotStreamable(Exception):
    """The image's layout (or a missing decompressor) does not allow a one-pass
    conversion: the caller falls back to a scratch file and qemu-img. Never reported
    to the conductor; the message says why, for the log."""


@dataclass(frozen=True)
class Header:
    """The fields of a qcow2 header the conversion uses."""
    version: int
    cluster_bits: int
    size: int               # virtual disk size in bytes
    l1_size: int
    l1_offset: int
    compression: int        # 0 zlib, 1 zstd
    extended_l2: bool

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def entry_size(self) -> int:
        return 16 if self.extended_l2 else 8

    @property
    def l2_coverage(self) -> int:
        """Guest bytes one L2 table maps."""
        return self.cluster_size // self.entry_size * self.cluster_size

    @property
    def l1_needed(self) -> int:
        """L1 entries that map the virtual size (the rest is never read)."""
        return -(-self.size // self.l2_coverage)


def parse_header(data: bytes) -> Header:
    """The header at the start of ``data``; ImageWriteError for what must be refused."""
    if data[:4] != MAGIC:
        raise ImageWriteError("disk_format is qcow2 but the image does not start with "
                              "the qcow2 magic (QFI\\xfb)")
    if len(data) < V2_HEADER_BYTES:
        raise ImageWriteError("The qcow2 header is truncated")
    (_, version, backing, _, bits, size, crypt, l1_size, l1_offset) = _V2.unpack_from(data)
    if version not in (2, 3):
        raise ImageWriteError(f"qcow2 version {version} is not supported (2 or 3)")
    if backing:
        raise ImageWriteError("qcow2 images with a backing file are refused")
    if crypt:
        raise ImageWriteError(f"encrypted qcow2 images are refused (crypt_method {crypt})")
    if not MIN_CLUSTER_BITS <= bits <= MAX_CLUSTER_BITS:
        raise ImageWriteError(f"qcow2 cluster_bits {bits} is out of range "
                              f"({MIN_CLUSTER_BITS}-{MAX_CLUSTER_BITS})")
    features, compression = _v3_fields(data, 1 << bits) if version == 3 else (0, 0)
    header = Header(version, bits, size, l1_size, l1_offset, compression,
                    bool(features & EXTENDED_L2))
    _check_tables(header)
    return header


def _v3_fields(data: bytes, cluster_size: int) -> tuple[int, int]:
    """(incompatible features, compression type) of a v3 header, checked."""
    if len(data) < V3_HEADER_BYTES:
        raise ImageWriteError("The qcow2 v3 header is truncated")
    features, _, _, _, header_length = _V3.unpack_from(data, 72)
    if not 104 <= header_length <= cluster_size:
        raise ImageWriteError(f"qcow2 header_length {header_length} is invalid")
    for bit, why in REFUSED_FEATURES.items():
        if features & bit:
            raise ImageWriteError(f"The qcow2 image {why}: refused")
    if features & ~KNOWN_FEATURES:
        raise ImageWriteError(f"The qcow2 image uses unknown incompatible features "
                              f"{features & ~KNOWN_FEATURES:#x}: refused")
    compression = data[104] if header_length > 104 else 0
    if compression not in COMPRESSION_NAMES or bool(compression) != bool(
            features & COMPRESSION_TYPE):      # qemu refuses the mismatch as corrupt
        raise ImageWriteError(f"qcow2 compression_type {compression} is invalid")
    if compression == 1 and zstandard is None:
        raise NotStreamable("the image uses zstd and the zstandard module is not installed")
    if features & EXTENDED_L2 and cluster_size < 1 << MIN_EXTENDED_L2_BITS:
        raise ImageWriteError("qcow2 extended L2 entries need clusters of 16 KiB or more")
    return features, compression


def _check_tables(header: Header) -> None:
    if header.l1_size > MAX_L1_ENTRIES:
        raise ImageWriteError(f"qcow2 L1 table of {header.l1_size} entries is too large "
                              f"(at most {MAX_L1_ENTRIES}, as qemu)")
    if header.l1_size < header.l1_needed:
        raise ImageWriteError(f"qcow2 L1 table of {header.l1_size} entries is too small "
                              f"for a virtual size of {header.size} bytes")
    if header.l1_needed and (header.l1_offset % header.cluster_size
                             or header.l1_offset < header.cluster_size):
        raise ImageWriteError(f"qcow2 L1 table offset {header.l1_offset:#x} is invalid")


@dataclass(frozen=True)
class Run:
    """``length`` guest bytes at ``guest``: ``host`` data, compressed, or zeros.

    ``kind`` is "data" (stored at ``host``), "compressed" (one cluster deflated at
    ``host``, ``csize`` bytes) or "zero" (unallocated or marked zero: reads as zeros).
    """
    kind: str
    guest: int
    length: int
    host: int = 0
    csize: int = 0


def decode_l1(header: Header, first: int, entries: tuple[int, ...]) -> list[tuple[int, int]]:
    """(guest offset, L2 table offset or 0) of L1 entries ``first``... (needed ones only)."""
    out = []
    for index, entry in enumerate(entries, first):
        if index >= header.l1_needed:
            break
        offset = entry & OFFSET_MASK
        if offset % header.cluster_size:    # qemu: "L2 table offset unaligned", corrupt
            raise ImageWriteError(f"qcow2 L1 entry {index} holds an unaligned L2 table "
                                  f"offset {offset:#x}")
        out.append((index * header.l2_coverage, offset))
    return out


def decode_l2(header: Header, guest: int, entries: tuple[int, ...]) -> list[Run]:
    """Runs of the L2 entries mapping guest bytes from ``guest`` on, merged where the
    next entry continues the last run (same kind, contiguous on host and guest)."""
    if header.extended_l2:
        return _extended_runs(header, guest, entries)
    runs: list[Run] = []
    size, cluster = header.size, header.cluster_size
    kind, start, first_host, length = "", 0, 0, 0      # the run being extended
    for entry in entries:           # the hot loop: one pass, no object per cluster
        if guest >= size:
            break
        piece = min(cluster, size - guest)
        host = entry & OFFSET_MASK
        if entry & COMPRESSED:
            new = "compressed"
        elif entry & ZERO or not host:  # qemu honours the zero flag in v2 images too
            new = "zero"
        elif host % cluster:            # qemu: "Cluster allocation offset unaligned"
            raise ImageWriteError(f"qcow2 data cluster offset {host:#x} (guest {guest:#x}) "
                                  "is not cluster aligned")
        else:
            new = "data"
        if new == kind != "compressed" and (new == "zero" or host == first_host + length):
            length += piece
        else:
            if kind:
                runs.append(Run(kind, start, length, first_host))
            kind, start, first_host, length = new, guest, host * (new == "data"), piece
            if new == "compressed":
                runs.append(_compressed_run(header, guest, piece, entry))
                kind = ""
        guest += cluster
    if kind:
        runs.append(Run(kind, start, length, first_host))
    return runs


def _extended_runs(header: Header, guest: int, entries: tuple[int, ...]) -> list[Run]:
    runs: list[Run] = []
    for index in range(0, len(entries) - 1, 2):
        if guest >= header.size:
            break
        length = min(header.cluster_size, header.size - guest)
        for run in _subcluster_runs(header, guest, length, entries[index],
                                    entries[index + 1]):
            _append(runs, run)
        guest += header.cluster_size
    return runs


def _compressed_run(header: Header, guest: int, length: int, entry: int) -> Run:
    """A compressed cluster: byte offset, then extra 512-byte sectors (spec, x = 62 - (cb - 8))."""
    shift = 62 - (header.cluster_bits - 8)
    host = entry & ((1 << shift) - 1)
    sectors = ((entry >> shift) & ((1 << (header.cluster_bits - 8)) - 1)) + 1
    return Run("compressed", guest, length, host, sectors * 512 - (host & 511))


def _subcluster_runs(header: Header, guest: int, length: int, entry: int,
                     bitmap: int) -> list[Run]:
    """An extended L2 entry: per subcluster allocated (data), zero, or unallocated."""
    if entry & COMPRESSED:      # the bitmap of a compressed cluster is ignored (qemu)
        return [_compressed_run(header, guest, length, entry)]
    host, sub = entry & OFFSET_MASK, header.cluster_size // SUBCLUSTERS
    allocated, zero = bitmap & 0xFFFFFFFF, bitmap >> 32
    if allocated & zero or (allocated and not host):   # qemu: QCOW2_SUBCLUSTER_INVALID
        raise ImageWriteError(f"qcow2 extended L2 entry for guest {guest:#x} is invalid")
    if host % header.cluster_size:
        raise ImageWriteError(f"qcow2 data cluster offset {host:#x} is not cluster aligned")
    runs: list[Run] = []
    for i in range(-(-length // sub)):
        piece = min(sub, length - i * sub)
        if allocated >> i & 1:
            _append(runs, Run("data", guest + i * sub, piece, host + i * sub))
        else:
            _append(runs, Run("zero", guest + i * sub, piece))
    return runs


def _append(runs: list[Run], run: Run) -> None:
    if runs and run.kind != "compressed":
        last = runs[-1]
        if (last.kind == run.kind and last.guest + last.length == run.guest
                and (run.kind == "zero" or last.host + last.length == run.host)):
            runs[-1] = Run(run.kind, last.guest, last.length + run.length, last.host)
            return
    runs.append(run)


def _inflate(data: bytes, size: int) -> bytes:
    # qemu deflates with a 4 KiB window and no zlib header (windowBits -12), and takes
    # the output as complete once the cluster is full (padding may follow the stream).
    return zlib.decompressobj(-12).decompress(data, size)


def _unzstd(data: bytes, size: int) -> bytes:
    # As qemu: one cluster may be several frames; stop when the cluster is full.
    # Reading at most ``size`` bytes bounds what a hostile frame can expand to.
    assert zstandard is not None        # parse_header falls back without it
    reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
        data, read_across_frames=True)
    out = bytearray()
    while len(out) < size and (piece := reader.read(size - len(out))):
        out += piece
    return bytes(out)


DECOMPRESSORS: dict[int, Callable[[bytes, int], bytes]] = {0: _inflate, 1: _unzstd}


def decompress(header: Header, run: Run, data: bytes) -> bytes:
    """The cluster ``run`` inflated from ``data``; ImageWriteError unless it fills it."""
    try:
        out = DECOMPRESSORS[header.compression](data, header.cluster_size)
    except DECOMPRESS_ERRORS as exc:
        raise ImageWriteError(f"qcow2 compressed cluster at byte {run.host} (guest "
                              f"{run.guest:#x}) is corrupt: {exc}") from None
    if len(out) < header.cluster_size:
        raise ImageWriteError(f"qcow2 compressed cluster at byte {run.host} (guest "
                              f"{run.guest:#x}) inflates to {len(out)} bytes, not "
                              f"{header.cluster_size}")
    return out[:run.length]
