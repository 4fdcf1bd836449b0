"""Source verification of delta payloads (ramdisk_agent/ramdisk/delta/source.py): batching of
copy ranges into aligned reads, and every range still checked on its own."""
from __future__ import annotations

import hashlib
import os

import pytest

from ramdisk_agent.ramdisk.delta import source
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

# The read-back and source checks hash ranges on a thread pool; here it runs inline.
pytestmark = pytest.mark.usefixtures("inline_thread_pools")

KIB = 1024


def _copy(data: bytes, src: int, length: int, dst: int | None = None) -> fmt.Operation:
    return fmt.Operation(fmt.Op.COPY, src if dst is None else dst, length,
                         hashlib.sha256(data[src:src + length]).digest(), src=src)


def test_plan_groups_neighbours_and_splits_on_gaps_and_size():
    data = bytes(64 << 20)
    ops = [_copy(data, 0, 100 * KIB), _copy(data, 104 * KIB, 200 * KIB),
           _copy(data, 3 << 20, 4 * KIB),                    # 2.7 MiB hole: new batch
           _copy(data, (3 << 20) + 8 * KIB, 8 << 20)]        # would pass 8 MiB: new batch
    batches = source.plan(ops)
    assert [len(b.ops) for b in batches] == [2, 1, 1]
    assert (batches[0].start, batches[0].end) == (0, 304 * KIB)
    assert all(b.start % source.ALIGN == 0 and b.end % source.ALIGN == 0 for b in batches)


def test_plan_sorts_by_source_and_keeps_oversized_ranges_whole():
    data = bytes(40 << 20)
    ops = [_copy(data, 20 << 20, 4 * KIB, dst=0), _copy(data, 0, 20 << 20, dst=4 * KIB)]
    batches = source.plan(ops)
    assert [b.ops[0].src for b in batches] == [0, 20 << 20]
    assert batches[0].end - batches[0].start == 20 << 20   # read window by window


@pytest.fixture
def disk(tmp_path):
    data = os.urandom(24 << 20)
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    return path, data


def test_verify_checks_unaligned_and_oversized_ranges(disk):
    path, data = disk
    ops = [_copy(data, 1, 4095), _copy(data, 5000, 123), _copy(data, 8192, 20 << 20),
           _copy(data, (20 << 20) + 9000, 100)]
    seen = []
    assert source.verify(str(path), ops, lambda done, total: seen.append(done)) == \
        sum(op.length for op in ops)
    assert seen[-1] == sum(op.length for op in ops)


def test_verify_names_the_range_that_differs(disk):
    path, data = disk
    ops = [_copy(data, offset, 64 * KIB) for offset in range(0, 16 << 20, 128 * KIB)]
    with open(path, "r+b") as stream:
        stream.seek((5 << 20) + 10)
        stream.write(b"\0" if data[(5 << 20) + 10] else b"\1")
    with pytest.raises(DeltaError, match=f"bytes {5 << 20}-{(5 << 20) + 64 * KIB}: "
                       "this delta is for another image version"):
        source.verify(str(path), ops, lambda done, total: None)


def test_verify_of_a_range_past_the_end_fails(disk):
    path, data = disk
    op = fmt.Operation(fmt.Op.COPY, 0, 8192, hashlib.sha256(bytes(8192)).digest(),
                       src=len(data) - 4096)
    with pytest.raises(DeltaError, match="another image version"):
        source.verify(str(path), [op], lambda done, total: None)
