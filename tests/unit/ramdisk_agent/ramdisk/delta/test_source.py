"""Source verification of delta payloads (ramdisk_agent/ramdisk/delta/source.py): one pass
of aligned window reads in disk order, and every copy range still checked on its own.
The pipeline's threads run inline here; tests/integration/.../test_source_pipeline.py
runs them for real."""
from __future__ import annotations

import hashlib
import os

import pytest

from ramdisk_agent.ramdisk.delta import source
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

pytestmark = pytest.mark.usefixtures("inline_thread_pools")

KIB = 1024


def _copy(data: bytes, src: int, length: int, dst: int | None = None) -> fmt.Operation:
    return fmt.Operation(fmt.Op.COPY, src if dst is None else dst, length,
                         hashlib.sha256(data[src:src + length]).digest(), src=src)


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


def test_verify_reads_aligned_windows_in_order_and_skips_wide_holes(disk, monkeypatch):
    path, data = disk
    monkeypatch.setattr(source, "WINDOW", 8 << 20)          # the figures below are in it
    ops = [_copy(data, 100, 10 << 20),                      # two windows
           _copy(data, 13 << 20, 1 << 20),                  # 3 MiB hole: not read
           _copy(data, (14 << 20) + 512 * KIB, 3000)]       # 512 KiB hole: read through
    reads = []
    real = os.preadv

    def recording(fd, buffers, offset):
        reads.append((offset, sum(len(b) for b in buffers)))
        return real(fd, buffers, offset)
    monkeypatch.setattr(os, "preadv", recording)
    source.verify(str(path), ops, lambda done, total: None)
    end = (14 << 20) + 512 * KIB + 4 * KIB
    assert reads == [(0, 8 << 20), (8 << 20, (2 << 20) + 4 * KIB),
                     (13 << 20, end - (13 << 20))]


def test_verify_reports_progress_up_to_the_total(disk):
    path, data = disk
    ops = [_copy(data, offset, 256 * KIB) for offset in range(0, 20 << 20, 512 * KIB)]
    seen = []
    source.verify(str(path), ops, lambda done, total: seen.append((done, total)))
    total = sum(op.length for op in ops)
    assert seen[-1] == (total, total)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
