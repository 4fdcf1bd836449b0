"""RawSink on a regular file: staging, unaligned pieces, and each way of zeroing.

(A block device, BLKZEROOUT, is in tests/functional/test_agent_qcow2.py: a loop device.)
"""
from __future__ import annotations

import errno
import os

import pytest

from ramdisk_agent.ramdisk import rawsink
from ramdisk_agent.ramdisk.rawsink import RawSink

KIB, MIB = 1 << 10, 1 << 20


class FileTarget:
    """DiskTarget's interface over a plain file, recording each write."""

    def __init__(self, path):
        self.path = str(path)
        self.fd = os.open(path, os.O_RDWR)
        self.writes: list[tuple[int, int]] = []

    def write(self, offset, data):
        self.writes.append((offset, len(data)))
        os.pwrite(self.fd, data, offset)


@pytest.fixture()
def target(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\xa5" * (4 * MIB))
    target = FileTarget(path)
    yield target
    os.close(target.fd)


def content(target) -> bytes:
    return os.pread(target.fd, 4 * MIB, 0)


def test_contiguous_staged_pieces_go_out_as_one_write(target):
    sink = RawSink(target, stage_bytes=64 * KIB)
    for i in range(4):
        sink.stage(8 * KIB + i * 3000, bytes([i + 1]) * 3000)    # unaligned pieces
    sink.stage(100 * KIB, b"x" * 70 * KIB)                      # not contiguous, > buffer
    sink.close()
    data = content(target)
    assert data[8 * KIB:8 * KIB + 12000] == b"".join(bytes([i + 1]) * 3000 for i in range(4))
    assert data[100 * KIB:170 * KIB] == b"x" * 70 * KIB
    assert data[:8 * KIB] == b"\xa5" * 8 * KIB and data[170 * KIB:171 * KIB] == b"\xa5" * KIB
    # the first run: its aligned part in one write; the second: a full buffer, then the rest
    assert target.writes == [(8 * KIB, 12000), (100 * KIB, 64 * KIB), (164 * KIB, 6 * KIB)]


def test_aligned_writes_go_straight_through_and_unaligned_are_staged(target):
    sink = RawSink(target)
    sink.write(64 * KIB, memoryview(b"a" * 8 * KIB))
    sink.write(512, memoryview(b"b" * 1024))
    assert target.writes == [(64 * KIB, 8 * KIB)]
    sink.close()
    data = content(target)
    assert data[64 * KIB:72 * KIB] == b"a" * 8 * KIB and data[512:1536] == b"b" * 1024


def test_zero_punches_a_hole_in_a_file(target):
    sink = RawSink(target)
    sink.zero(1000, 2 * MIB)
    sink.close()
    data = content(target)
    assert data[1000:1000 + 2 * MIB] == bytes(2 * MIB)
    assert data[:1000] == b"\xa5" * 1000 and data[1000 + 2 * MIB:] == b"\xa5" * (2 * MIB - 1000)
    assert sink.zero_method == "fallocate(PUNCH_HOLE)" and target.writes == []


def test_zero_falls_back_to_zero_range_then_to_written_zeros(target, monkeypatch):
    calls = []

    def refuse_punch(fd, mode, offset, length):
        calls.append(mode)
        if mode & rawsink.FALLOC_FL_PUNCH_HOLE:
            raise OSError(errno.EOPNOTSUPP, "not here")
        os.pwrite(fd, bytes(length), offset)

    monkeypatch.setattr(rawsink, "_fallocate", refuse_punch)
    sink = RawSink(target)
    sink.zero(4 * KIB, 8 * KIB)
    sink.zero(64 * KIB, 4 * KIB)
    assert sink.zero_method == "fallocate(ZERO_RANGE)"
    assert calls == [rawsink.FALLOC_FL_PUNCH_HOLE | 1, rawsink.FALLOC_FL_ZERO_RANGE | 1,
                     rawsink.FALLOC_FL_ZERO_RANGE | 1]          # punch tried once only

    def refuse_all(fd, mode, offset, length):
        raise OSError(errno.EOPNOTSUPP, "not here either")

    monkeypatch.setattr(rawsink, "_fallocate", refuse_all)
    sink = RawSink(target)
    sink.zero(100 * KIB + 512, 3 * MIB)
    sink.close()
    assert sink.zero_method == "written zeros"
    data = content(target)
    assert data[4 * KIB:12 * KIB] == bytes(8 * KIB) and data[64 * KIB:68 * KIB] == bytes(4 * KIB)
    assert data[100 * KIB + 512:100 * KIB + 512 + 3 * MIB] == bytes(3 * MIB)
    assert data[100 * KIB:100 * KIB + 512] == b"\xa5" * 512


def test_a_real_failure_is_not_taken_for_unsupported(target, monkeypatch):
    def broken(fd, mode, offset, length):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(rawsink, "_fallocate", broken)
    with pytest.raises(OSError, match="I/O error"):
        RawSink(target).zero(0, 4 * KIB)
