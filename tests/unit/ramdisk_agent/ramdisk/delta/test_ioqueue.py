"""Scattered reads and writes with many in flight (ramdisk_agent/ramdisk/delta/ioqueue.py):
native AIO through ctypes and its thread-pool twin move the same bytes, the AIO queue
stays usable after a failed request, and a request can never point the kernel outside
the buffer. The twin's pool runs inline here."""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
import platform

import pytest

from ramdisk_agent.ramdisk.delta import ioqueue

pytestmark = pytest.mark.usefixtures("inline_thread_pools")

KIB = 1024
SIZE = 1 << 20


@pytest.fixture
def disk(tmp_path):
    data = os.urandom(SIZE + 1000)          # the last block is partial
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    return str(path), data


REQUESTS = [(SIZE - 8 * KIB, 8 * KIB, 0), (4 * KIB, 4 * KIB, 8 * KIB),
            (512 * KIB, 64 * KIB, 12 * KIB), (SIZE, 4 * KIB, 76 * KIB)]   # last: EOF


def _expected(data: bytes) -> tuple[list[int], bytes]:
    counts = [len(data[o:o + n]) for o, n, _ in REQUESTS]
    return counts, b"".join(data[o:o + n] for o, n, _ in REQUESTS)


def _read(reads, requests=REQUESTS) -> tuple[list[int], bytes]:
    buffer = mmap.mmap(-1, 256 * KIB)
    try:
        counts = reads.read(requests, buffer)
        return counts, b"".join(buffer[at:at + got] for (_, _, at), got in
                                zip(requests, counts))
    finally:
        buffer.close()


def test_aio_reads_what_is_on_disk_and_stops_at_the_end(disk):
    path, data = disk
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    reads = ioqueue.AioQueue(fd, depth=2)       # fewer slots than requests: refills
    try:
        assert _read(reads) == _expected(data)
    finally:
        reads.close()
        os.close(fd)


def test_thread_reads_are_the_same(disk):
    path, data = disk
    fd = os.open(path, os.O_RDONLY)
    reads = ioqueue.ThreadQueue(fd)
    try:
        assert _read(reads) == _expected(data)
    finally:
        reads.close()
        os.close(fd)


def test_a_failed_aio_read_is_reported_and_the_queue_stays_usable(disk):
    path, data = disk
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    reads = ioqueue.AioQueue(fd)
    try:
        with pytest.raises(OSError) as failed:      # O_DIRECT refuses an odd offset
            _read(reads, [(0, 4 * KIB, 0), (1, 4 * KIB, 4 * KIB), (8 * KIB, 4 * KIB,
                                                                     8 * KIB)])
        assert failed.value.errno == errno.EINVAL
        assert _read(reads) == _expected(data)      # no stale completion left behind
    finally:
        reads.close()
        os.close(fd)


@pytest.mark.parametrize("request_", [(0, 4 * KIB, 256 * KIB - 4 * KIB + 1),
                                      (0, -1, 0), (-4 * KIB, 4 * KIB, 0)])
def test_a_request_outside_the_buffer_is_refused_before_the_kernel_sees_it(disk, request_):
    path, _ = disk
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    reads = ioqueue.AioQueue(fd)
    try:
        with pytest.raises(ValueError, match="does not fit"):
            _read(reads, [request_])
        with pytest.raises(ValueError, match="does not fit"):
            _read(ioqueue.ThreadQueue(fd), [request_])
    finally:
        reads.close()
        os.close(fd)


def test_open_reads_uses_aio_with_o_direct(disk):
    path, data = disk
    with ioqueue.open_reads(path) as reads:
        assert isinstance(reads, ioqueue.AioQueue)
        assert fcntl.fcntl(reads.fd, fcntl.F_GETFL) & os.O_DIRECT   # the device, not the cache
        assert _read(reads) == _expected(data)


def test_open_reads_without_aio_reads_on_threads(disk, monkeypatch):
    path, data = disk
    monkeypatch.setattr(platform, "machine", lambda: "s390x")   # no syscall table
    with ioqueue.open_reads(path) as reads:
        assert isinstance(reads, ioqueue.ThreadQueue)
        assert _read(reads) == _expected(data)


def test_open_reads_where_o_direct_is_refused_reads_buffered(disk, monkeypatch):
    path, data = disk
    real = os.open

    def no_direct(name, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return real(name, flags, *args)
    monkeypatch.setattr(os, "open", no_direct)
    with ioqueue.open_reads(path) as reads:
        assert isinstance(reads, ioqueue.ThreadQueue)
        assert _read(reads) == _expected(data)


def test_open_reads_where_direct_reads_fail_reads_buffered(disk, monkeypatch):
    path, data = disk

    def refused(self, requests, buffer):
        raise OSError(errno.EINVAL, "Invalid argument")
    monkeypatch.setattr(ioqueue.AioQueue, "read", refused)      # opens, then refuses I/O
    with ioqueue.open_reads(path) as reads:
        assert isinstance(reads, ioqueue.ThreadQueue)
        assert not fcntl.fcntl(reads.fd, fcntl.F_GETFL) & os.O_DIRECT
        assert _read(reads) == _expected(data)


@pytest.mark.parametrize("kind", ["aio", "threads"])
def test_writes_land_where_asked(disk, kind):
    path, data = disk
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    queue = ioqueue.AioQueue(fd, depth=2) if kind == "aio" else ioqueue.ThreadQueue(fd)
    buffer = mmap.mmap(-1, 64 * KIB)
    new = os.urandom(64 * KIB)
    buffer.write(new)
    try:
        queue.write([(SIZE - 8 * KIB, 8 * KIB, 0), (0, 4 * KIB, 8 * KIB),
                     (512 * KIB, 52 * KIB, 12 * KIB)], buffer)
    finally:
        queue.close()
        os.close(fd)
        buffer.close()
    expected = bytearray(data)
    expected[SIZE - 8 * KIB:SIZE] = new[:8 * KIB]
    expected[:4 * KIB] = new[8 * KIB:12 * KIB]
    expected[512 * KIB:564 * KIB] = new[12 * KIB:]
    with open(path, "rb") as stream:
        assert stream.read() == expected


def test_open_direct_writes_is_none_where_o_direct_is_refused(disk, monkeypatch):
    path, _ = disk
    real = os.open

    def no_direct(name, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return real(name, flags, *args)
    monkeypatch.setattr(os, "open", no_direct)
    with ioqueue.open_direct_writes(path) as queue:
        assert queue is None
