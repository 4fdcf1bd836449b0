"""Small qcow2 images built in Python, for tests that must not run qemu-img.

Laid out the way ``qemu-img convert`` lays them out (header, L1 table, then each L2
table followed by the clusters it maps; compressed clusters packed byte by byte), or
with the L1 table after everything (``l1_last``), the layout that cannot be streamed.
Header fields can be overridden to make hostile images. The functional tests check
the real converter against images made by qemu-img itself.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import zstandard

ZERO = "zero"                   # a cluster with the "reads as zero" flag


@dataclass(frozen=True)
class Compressed:
    data: bytes                 # the cluster's content (compressed when built)


@dataclass(frozen=True)
class Sub:
    """An extended-L2 cluster: per-subcluster data (bytes), ZERO or None (unallocated)."""
    parts: tuple


@dataclass
class Qcow2:
    size: int
    clusters: dict = field(default_factory=dict)     # guest cluster index -> content
    cluster_bits: int = 16
    version: int = 3
    compression: int = 0            # 0 zlib, 1 zstd
    extended_l2: bool = False
    l1_last: bool = False
    header: dict = field(default_factory=dict)       # overrides: name -> value

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def l2_entries(self) -> int:
        return self.cluster_size // (16 if self.extended_l2 else 8)

    def expected(self) -> bytes:
        """What qemu-img convert -O raw gives for this image."""
        out = bytearray(self.size)
        cs = self.cluster_size
        for index, content in self.clusters.items():
            if isinstance(content, bytes):
                data = content
            elif isinstance(content, Compressed):
                data = content.data
            elif isinstance(content, Sub):
                sub = cs // 32
                data = b"".join(part if isinstance(part, bytes) else bytes(sub)
                                for part in content.parts)
            else:
                continue
            end = min(self.size, index * cs + cs)
            out[index * cs:end] = data.ljust(cs, b"\0")[:end - index * cs]
        return bytes(out)

    def build(self) -> bytes:
        cs = self.cluster_size
        l1_needed = -(-self.size // (self.l2_entries * cs))
        out = bytearray(cs)                         # header cluster
        l1_clusters = max(1, -(-l1_needed * 8 // cs))
        l1_offset = None
        if not self.l1_last:
            l1_offset = len(out)
            out += bytes(l1_clusters * cs)
        l1 = [0] * l1_needed
        for table in range(l1_needed):
            first = table * self.l2_entries
            mapped = sorted(i for i in self.clusters if first <= i < first + self.l2_entries)
            if not mapped:
                continue
            l2_offset = len(out)
            out += bytes(cs)
            l1[table] = l2_offset | 1 << 63
            entries = {i: self._store(out, self.clusters[i]) for i in mapped}
            for i, entry in entries.items():
                slot = l2_offset + (i - first) * (16 if self.extended_l2 else 8)
                struct.pack_into(">Q", out, slot, entry[0])
                if self.extended_l2:
                    struct.pack_into(">Q", out, slot + 8, entry[1])
            self._pad(out)
        if self.l1_last:
            l1_offset = len(out)
            out += bytes(l1_clusters * cs)
        struct.pack_into(f">{l1_needed}Q", out, l1_offset, *l1)
        self._header(out, l1_offset, max(l1_needed, 1))
        return bytes(out)

    def _pad(self, out: bytearray) -> None:
        out += bytes(-len(out) % self.cluster_size)

    def _store(self, out: bytearray, content) -> tuple[int, int]:
        """Append ``content``; its (L2 entry, subcluster bitmap)."""
        cs = self.cluster_size
        if content == ZERO:
            return 1, 0
        if isinstance(content, Compressed):
            data = self._compress(content.data)
            offset = len(out)
            out += data
            sectors = (offset % 512 + len(data) + 511) // 512 - 1
            shift = 62 - (self.cluster_bits - 8)
            return 1 << 62 | sectors << shift | offset, 0
        self._pad(out)
        offset = len(out)
        if isinstance(content, Sub):
            sub, bitmap = cs // 32, 0
            for i, part in enumerate(content.parts):
                if isinstance(part, bytes):
                    bitmap |= 1 << i
                elif part == ZERO:
                    bitmap |= 1 << (32 + i)
            out += b"".join(p if isinstance(p, bytes) else bytes(sub) for p in content.parts)
            return (offset if bitmap & 0xFFFFFFFF else 0) | 1 << 63, bitmap
        out += content.ljust(cs, b"\0")
        return offset | 1 << 63, 0xFFFFFFFF if self.extended_l2 else 0

    def _compress(self, data: bytes) -> bytes:
        data = data.ljust(self.cluster_size, b"\0")
        if self.compression == 1:
            return zstandard.ZstdCompressor().compress(data)
        packer = zlib.compressobj(6, zlib.DEFLATED, -12)
        return packer.compress(data) + packer.flush()

    def _header(self, out: bytearray, l1_offset: int, l1_size: int) -> None:
        fields = {"magic": b"QFI\xfb", "version": self.version, "backing_file_offset": 0,
                  "backing_file_size": 0, "cluster_bits": self.cluster_bits,
                  "size": self.size, "crypt_method": 0, "l1_size": l1_size,
                  "l1_table_offset": l1_offset, "refcount_table_offset": 0,
                  "refcount_table_clusters": 0, "nb_snapshots": 0, "snapshots_offset": 0,
                  "incompatible_features": (8 if self.compression else 0)
                  | (16 if self.extended_l2 else 0),
                  "compatible_features": 0, "autoclear_features": 0, "refcount_order": 4,
                  "header_length": 112, "compression_type": self.compression}
        fields.update(self.header)
        struct.pack_into(">4sIQIIQIIQQIIQ", out, 0, *(fields[name] for name in (
            "magic", "version", "backing_file_offset", "backing_file_size", "cluster_bits",
            "size", "crypt_method", "l1_size", "l1_table_offset", "refcount_table_offset",
            "refcount_table_clusters", "nb_snapshots", "snapshots_offset")))
        if fields["version"] >= 3:
            struct.pack_into(">QQQIIB", out, 72, fields["incompatible_features"],
                             fields["compatible_features"], fields["autoclear_features"],
                             fields["refcount_order"], fields["header_length"],
                             fields["compression_type"])
