"""pipeline.SliceWriters: slices of the download buffers written on their own threads.

A buffer may be reused only once every write of its slices is done; a failed write
is reported (to the producer and after ``join``) without losing a buffer; writes
the kernel does only in part are finished.
"""
from __future__ import annotations

import errno
import mmap
import os
import queue
import threading

import pytest

from ramdisk_agent.ramdisk.pipeline import DiskTarget, SliceWriters

KIB = 1 << 10


class GatedTarget:
    """Records writes into a bytearray; each write waits until ``gate`` is set."""

    def __init__(self, size: int, fail_at: int | None = None):
        self.disk = bytearray(size)
        self.gate = threading.Event()
        self.fail_at = fail_at

    def write(self, offset: int, data: memoryview) -> None:
        assert self.gate.wait(10)
        if offset == self.fail_at:
            raise OSError(errno.EIO, "Input/output error")
        self.disk[offset:offset + len(data)] = data


def buffers(count: int, size: int = 64 * KIB):
    maps = [mmap.mmap(-1, size) for _ in range(count)]
    return maps, [memoryview(m) for m in maps]


def test_a_buffer_is_freed_only_after_its_writes_and_its_producer_are_done():
    target, free = GatedTarget(256 * KIB), queue.Queue()
    maps, (first, second) = buffers(2)
    first[:] = b"a" * len(first)
    second[:] = b"b" * len(second)
    writers = SliceWriters(3, target, free)
    writers.start()
    writers.submit(0, first[:16 * KIB])
    writers.submit(128 * KIB, first[32 * KIB:48 * KIB])
    writers.put(first)                  # the converter is done with it: writes pending
    writers.put(second)                 # no writes at all: free at once
    assert free.get(timeout=10) is second
    assert free.empty()                 # the first is still being written from
    target.gate.set()
    assert free.get(timeout=10) is first
    writers.join()
    assert target.disk[:16 * KIB] == b"a" * 16 * KIB
    assert target.disk[128 * KIB:144 * KIB] == b"a" * 16 * KIB
    assert target.disk[16 * KIB:128 * KIB] == bytes(112 * KIB)
    assert writers.error is None
    first.release()
    second.release()
    for m in maps:
        m.close()                       # the writers left no view of the buffers behind


def test_writes_submitted_before_the_producer_lets_go_keep_the_buffer():
    target, free = GatedTarget(64 * KIB), queue.Queue()
    target.gate.set()
    _, (buffer,) = buffers(1)
    writers = SliceWriters(2, target, free)
    writers.start()
    writers.submit(0, buffer[:4 * KIB])
    writers.join()                       # the write is done, the producer not yet
    assert free.empty()
    writers.put(buffer)
    assert free.get_nowait() is buffer


def test_a_failed_write_is_reported_and_no_buffer_is_lost():
    target, free = GatedTarget(256 * KIB, fail_at=64 * KIB), queue.Queue()
    target.gate.set()
    _, views = buffers(3)
    writers = SliceWriters(2, target, free)
    writers.start()
    writers.submit(64 * KIB, views[0][:4 * KIB])
    writers.put(views[0])
    assert free.get(timeout=10) is views[0]
    assert isinstance(writers.error, OSError)
    with pytest.raises(OSError, match="Input/output error"):
        writers.submit(0, views[1][:4 * KIB])        # the producer learns at once
    writers.put(views[1])
    writers.put(views[2])
    writers.join()
    assert {id(free.get_nowait()) for _ in range(2)} == {id(views[1]), id(views[2])}
    assert target.disk == bytes(256 * KIB)           # nothing written after the failure


def test_writes_the_kernel_does_in_part_are_finished(tmp_path, monkeypatch):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xa5" * 512 * KIB)
    real_pwrite, calls = os.pwrite, []

    def short_pwrite(fd, data, offset):         # at most 5000 bytes per call
        calls.append(offset)
        return real_pwrite(fd, memoryview(data)[:5000], offset)

    monkeypatch.setattr(os, "pwrite", short_pwrite)
    target, free = DiskTarget(str(disk)), queue.Queue()
    maps, (buffer,) = buffers(1, 256 * KIB)
    buffer[:] = bytes(range(256)) * KIB
    writers = SliceWriters(2, target, free)
    writers.start()
    writers.submit(0, buffer[:128 * KIB])
    writers.submit(192 * KIB, buffer[128 * KIB:256 * KIB - 100])   # an unaligned tail
    writers.put(buffer)
    writers.join()
    target.close()
    monkeypatch.undo()
    written = disk.read_bytes()
    assert written[:128 * KIB] == bytes(range(256)) * 512
    assert written[192 * KIB:320 * KIB - 100] == (bytes(range(256)) * KIB)[128 * KIB:-100]
    assert written[128 * KIB:192 * KIB] == b"\xa5" * 64 * KIB
    assert written[320 * KIB - 100:] == b"\xa5" * (192 * KIB + 100)
    assert len(calls) > 2 * 128 * KIB // 5000     # the writes really were cut short
    assert free.get_nowait() is buffer
    buffer.release()
    maps[0].close()
