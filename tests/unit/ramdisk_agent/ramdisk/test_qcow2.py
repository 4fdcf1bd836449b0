"""The streaming qcow2 converter on bytes: layouts, refusals, and what it keeps.

Images come from ``qcow2_builder`` (qemu-img's layout, or the L1 table last); the
sink is a bytearray. tests/functional/test_agent_qcow2.py checks the same code against
images qemu-img made and against ``qemu-img convert -O raw``.
"""
from __future__ import annotations

import mmap
import os
import struct
import zlib

import pytest

from ramdisk_agent.errors import ImageWriteError
from ramdisk_agent.ramdisk import qcow2
from ramdisk_agent.ramdisk.qcow2 import NotStreamable
from ramdisk_agent.ramdisk.qcow2stream import StreamConverter
from tests.unit.ramdisk_agent.ramdisk.qcow2_builder import ZERO, Compressed, Qcow2, Sub

KIB, MIB = 1 << 10, 1 << 20


class MemorySink:
    """The disk as a bytearray pre-filled with 0xa5; records how each byte came."""

    def __init__(self, size: int):
        self.disk = bytearray(b"\xa5" * size)
        self.writes: list[tuple[int, int]] = []
        self.staged: list[tuple[int, int]] = []
        self.zeros: list[tuple[int, int]] = []

    def write(self, offset, data):
        self.writes.append((offset, len(data)))
        self.disk[offset:offset + len(data)] = data

    def stage(self, offset, data):
        self.staged.append((offset, len(data)))
        self.disk[offset:offset + len(data)] = data

    def zero(self, offset, length):
        self.zeros.append((offset, length))
        self.disk[offset:offset + length] = bytes(length)


def convert(data: bytes, piece: int = 4 * MIB, capacity: int = 8 * MIB,
            length: int | None | str = "known", **options) -> MemorySink:
    sink = MemorySink(capacity)
    converter = StreamConverter(sink, capacity, len(data) if length == "known" else length,
                                **options)
    for at in range(0, len(data), piece):
        converter.feed(memoryview(data)[at:at + piece])
    assert converter.finish() == converter.header.size
    return sink


def same(got: bytes | bytearray, expected: bytes) -> bool:
    """Equal, or an assertion naming the first byte that differs (not 2 MiB of repr)."""
    got = bytes(got[:len(expected)])
    assert len(got) == len(expected), f"{len(got)} bytes, expected {len(expected)}"
    if got != expected:
        first = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
        raise AssertionError(f"byte {first:#x} differs: {got[first:first + 8]!r} != "
                             f"{expected[first:first + 8]!r}")
    return True


def pattern(seed: int, size: int = 64 * KIB) -> bytes:
    return bytes((seed * 7 + i * 13) % 251 for i in range(size))


def mixed(**kwargs) -> Qcow2:
    """Data, a zero-flagged cluster, gaps (unallocated), compressed clusters, and a
    data cluster in a second L2 table (clusters of 4 KiB: an L2 maps 2 MiB)."""
    cs = 1 << kwargs.get("cluster_bits", 12)
    clusters = {0: pattern(1, cs), 1: pattern(2, cs), 3: ZERO, 4: Compressed(pattern(3, cs)),
                5: Compressed(b"metalcast " * (cs // 10)), 9: pattern(4, cs),
                600: pattern(5, cs)}
    return Qcow2(size=3 * MIB + 1536, clusters=clusters, **{"cluster_bits": 12, **kwargs})


@pytest.mark.parametrize("piece", [4 * MIB, 4096, 1000, 61])
@pytest.mark.parametrize("version", [2, 3])
def test_streamed_image_reads_as_qemu_img_would_convert_it(piece, version):
    image = mixed(version=version)
    sink = convert(image.build(), piece)
    assert same(sink.disk, image.expected())
    assert sink.disk[image.size:] == b"\xa5" * (8 * MIB - image.size)   # past the size


def test_zero_ranges_are_merged_and_data_is_written_from_the_buffer():
    image = mixed()
    data = image.build()
    aligned = mmap.mmap(-1, len(data))     # page-aligned, as the agent's buffers
    aligned[:] = data
    sink = MemorySink(8 * MIB)
    converter = StreamConverter(sink, 8 * MIB, len(data))
    converter.feed(memoryview(aligned))
    converter.finish()
    assert same(sink.disk, image.expected())
    assert (0, 8 * KIB) in sink.writes                 # clusters 0-1: one direct write
    assert (16 * KIB, 4 * KIB) in sink.staged           # compressed: inflated, staged
    # cluster 2 (unallocated), 3 (zero flag); 6-8; 10-511 with the rest of that L2 table
    # and the next one up to cluster 600; then to the end of the disk
    assert sink.zeros == [(8 * KIB, 8 * KIB), (24 * KIB, 12 * KIB),
                          (40 * KIB, 590 * 4 * KIB), (601 * 4 * KIB, image.size - 601 * 4 * KIB)]


def test_zstd_and_extended_l2_subclusters():
    sub = 64 * KIB // 32
    parts = tuple(pattern(i, sub) if i % 3 == 0 else ZERO if i % 3 == 1 else None
                  for i in range(32))
    image = Qcow2(size=2 * MIB, cluster_bits=16, compression=1, extended_l2=True,
                  clusters={0: Sub(parts), 1: Compressed(pattern(9)), 3: pattern(8),
                            5: Sub((None,) * 31 + (pattern(7, sub),))})
    sink = convert(image.build(), piece=5000)
    assert same(sink.disk, image.expected())


def test_l1_after_the_data_is_served_from_what_was_kept():
    image = mixed(l1_last=True)
    sink = convert(image.build(), piece=64 * KIB)
    assert same(sink.disk, image.expected())


def test_l1_after_more_data_than_may_be_kept_is_not_streamable():
    with pytest.raises(NotStreamable, match="no longer kept"):
        convert(mixed(l1_last=True).build(), piece=4 * KIB, retain_limit=8 * KIB)


def test_too_many_ranges_ahead_is_not_streamable():
    clusters = {i: pattern(i, 4 * KIB) for i in range(0, 200, 2)}  # 100 separate runs
    image = Qcow2(size=MIB, cluster_bits=12, clusters=clusters)
    assert same(convert(image.build()).disk, image.expected())
    with pytest.raises(NotStreamable, match="more than 50 ranges"):
        convert(image.build(), max_pending=50)


def header_with(**fields) -> bytes:
    return Qcow2(size=MIB, clusters={0: pattern(1)}, header=fields).build()


@pytest.mark.parametrize("fields, message", [
    ({"magic": b"QFI\x00"}, "does not start with the qcow2 magic"),
    ({"version": 4}, "version 4 is not supported"),
    ({"backing_file_offset": 512, "backing_file_size": 8}, "backing file are refused"),
    ({"crypt_method": 2}, r"encrypted qcow2 images are refused \(crypt_method 2\)"),
    ({"cluster_bits": 8}, "cluster_bits 8 is out of range"),
    ({"cluster_bits": 22}, "cluster_bits 22 is out of range"),
    ({"incompatible_features": 2}, "is marked corrupt"),
    ({"incompatible_features": 4}, "external data file"),
    ({"incompatible_features": 1 << 40}, "unknown incompatible features 0x10000000000"),
    ({"compression_type": 1}, "compression_type 1 is invalid"),
    ({"compression_type": 7, "incompatible_features": 8}, "compression_type 7 is invalid"),
    ({"header_length": 1 << 20}, "header_length 1048576 is invalid"),
    ({"l1_size": 1 << 31}, "L1 table of 2147483648 entries is too large"),
    ({"l1_size": 0}, "L1 table of 0 entries is too small"),
    ({"l1_table_offset": 64 * KIB + 8}, "L1 table offset 0x10008 is invalid"),
    ({"l1_table_offset": 0}, "L1 table offset 0x0 is invalid"),
    ({"size": 1 << 62, "l1_size": 1 << 20}, "L1 table of 1048576 entries is too small"),
    ({"size": 9 * MIB}, "Image does not fit on the disk: virtual size 9437184"),
])
def test_hostile_or_unsupported_headers_are_refused(fields, message):
    with pytest.raises(ImageWriteError, match=message):
        convert(header_with(**fields))


def test_extended_l2_needs_large_clusters():
    image = Qcow2(size=MIB, cluster_bits=12, extended_l2=True, clusters={})
    with pytest.raises(ImageWriteError, match="need clusters of 16 KiB"):
        convert(image.build())


def test_dirty_images_are_read():
    """DIRTY only means stale refcounts: qemu reads such images read-only too."""
    image = Qcow2(size=MIB, clusters={1: pattern(1)}, header={"incompatible_features": 1})
    assert same(convert(image.build()).disk, image.expected())


def patched(image: Qcow2, entry_at: int, value: int) -> bytes:
    data = bytearray(image.build())
    struct.pack_into(">Q", data, entry_at, value)
    return bytes(data)


def first_l2(data: bytes) -> int:
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    return struct.unpack_from(">Q", data, l1_offset)[0] & qcow2.OFFSET_MASK


def test_tables_pointing_past_the_end_are_refused_at_once_or_at_the_end():
    image = Qcow2(size=MIB, clusters={0: pattern(1)})
    data = image.build()
    far = patched(image, struct.unpack_from(">Q", data, 40)[0], 1 << 63 | 1 << 40)
    with pytest.raises(ImageWriteError, match="L2 table at byte 1099511627776 lies beyond"):
        convert(far)
    with pytest.raises(ImageWriteError, match=r"ends at byte \d+ but its tables refer "
                                              "to bytes from 1099511627776 on"):
        convert(far, length=None)           # no Content-Length: found at the end
    with pytest.raises(ImageWriteError, match="truncated"):
        convert(data[:-1000], length=None)  # the last data cluster cut short


def test_unaligned_table_and_cluster_offsets_are_corrupt():
    image = Qcow2(size=MIB, clusters={0: pattern(1)})
    data = image.build()
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    with pytest.raises(ImageWriteError, match="unaligned L2 table offset 0x20200"):
        convert(patched(image, l1_offset, 1 << 63 | (2 * 64 * KIB + 512)))
    with pytest.raises(ImageWriteError, match="data cluster offset 0x30200"):
        convert(patched(image, first_l2(data), 1 << 63 | (3 * 64 * KIB + 512)))


def test_corrupt_compressed_clusters():
    image = Qcow2(size=MIB, clusters={0: Compressed(pattern(1))})
    data = bytearray(image.build())
    entry = struct.unpack_from(">Q", data, first_l2(bytes(data)))[0]
    offset = entry & ((1 << 54) - 1)
    data[offset:offset + 16] = b"\xff" * 16                      # not deflate
    with pytest.raises(ImageWriteError, match="compressed cluster at byte .* is corrupt"):
        convert(bytes(data))
    short = Qcow2(size=MIB, clusters={0: Compressed(pattern(1))}).build()
    entry_at = first_l2(short)
    small = bytearray(short)   # a valid deflate stream of only 10 bytes, in place
    packer = zlib.compressobj(6, zlib.DEFLATED, -12)
    tiny = packer.compress(b"0123456789") + packer.flush()
    small[offset:offset + len(tiny)] = tiny
    struct.pack_into(">Q", small, entry_at, 1 << 62 | offset)
    with pytest.raises(ImageWriteError, match="inflates to 10 bytes, not 65536"):
        convert(bytes(small))


def test_compressed_cluster_bombs_stop_at_one_cluster():
    """A compressed entry claiming the largest size, over data that inflates without
    end: the output stops at the cluster size (as qemu's), the input at the entry's."""
    image = Qcow2(size=MIB, clusters={0: Compressed(pattern(1))})
    data = bytearray(image.build())
    entry_at = first_l2(bytes(data))
    offset = struct.unpack_from(">Q", data, entry_at)[0] & ((1 << 54) - 1)
    packer = zlib.compressobj(9, zlib.DEFLATED, -12)
    bomb = packer.compress(bytes(64 * MIB)) + packer.flush()
    data[offset:] = bomb
    data += bytes(-len(data) % 512)
    struct.pack_into(">Q", data, entry_at, 1 << 62 | 0xFF << 54 | offset)   # 256 sectors
    sink = convert(bytes(data), capacity=2 * MIB)
    assert bytes(sink.disk[:MIB]) == bytes(MIB)


def test_compressed_cluster_may_end_past_the_file():
    """qemu rounds a compressed cluster's size up to whole sectors, which may pass the
    end of the file; it reads zeros there. The converter clips the range."""
    content = os.urandom(32 * KIB)
    image = Qcow2(size=64 * KIB, clusters={0: Compressed(content)})
    data = image.build()
    entry = struct.unpack_from(">Q", data, first_l2(data))[0]
    offset = entry & ((1 << 54) - 1)
    packer = zlib.compressobj(6, zlib.DEFLATED, -12)
    stream = packer.compress(content.ljust(64 * KIB, b"\0")) + packer.flush()
    end = offset + len(stream)
    assert end % 512 and end < offset + ((entry >> 54) + 1) * 512 - offset % 512
    for length in ("known", None):
        sink = convert(data[:end], length=length)      # the file ends with the stream
        assert same(sink.disk, image.expected())


def test_header_split_across_pieces_and_an_empty_stream():
    image = mixed()
    sink = convert(image.build(), piece=50)
    assert same(sink.disk, image.expected())
    with pytest.raises(ImageWriteError, match="does not start with the qcow2 magic"):
        convert(b"")
    with pytest.raises(ImageWriteError, match="v3 header is truncated"):
        convert(image.build()[:90])
