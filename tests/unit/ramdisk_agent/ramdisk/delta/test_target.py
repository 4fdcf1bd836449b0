"""Writing a delta's new bytes and reading them back (ramdisk_agent/ramdisk/delta/target.py):
neighbouring operations become one O_DIRECT request in a batch, what O_DIRECT cannot take
goes through the page cache, and the read-back fails on any written range the disk does
not hold, naming it."""
from __future__ import annotations

import errno
import hashlib
import os
import zlib

import pytest

from ramdisk_agent.ramdisk.delta import ioqueue, target
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

pytestmark = pytest.mark.usefixtures("inline_thread_pools")

BLOCK = 4096


def _replace(dst: int, data: bytes) -> fmt.Operation:
    return fmt.Operation(fmt.Op.REPLACE, dst, len(data), hashlib.sha256(data).digest(),
                         offset=0, size=len(zlib.compress(data)))


def _zero(dst: int, length: int) -> fmt.Operation:
    return fmt.Operation(fmt.Op.ZERO, dst, length, hashlib.sha256(bytes(length)).digest())


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(64 * BLOCK))
    return path


def _written(disk, ops, blobs, laid_out=()):
    seen = []
    written = target.write(str(disk), ops, blobs, None, lambda done, total: seen.append(done),
                           laid_out=laid_out)
    return written, seen


def _recording(monkeypatch, module, name, calls):
    real = getattr(module, name)

    def record(*args):
        calls.append(args)
        return real(*args)
    monkeypatch.setattr(module, name, record)


def test_neighbouring_operations_are_one_write(disk, monkeypatch):
    a, b, c = os.urandom(BLOCK), os.urandom(2 * BLOCK), os.urandom(BLOCK)
    ops = [_replace(BLOCK, a), _zero(2 * BLOCK, BLOCK), _replace(3 * BLOCK, b),
           _replace(40 * BLOCK, c)]
    blobs = {op.dst: data for op, data in zip([ops[0], ops[2], ops[3]], (a, b, c))}
    batches, buffered = [], []
    _recording(monkeypatch, ioqueue.AioQueue, "write", batches)
    _recording(monkeypatch, os, "pwrite", buffered)
    written, seen = _written(disk, ops, blobs)
    assert [requests for _, requests, _ in batches] == [
        [(BLOCK, 4 * BLOCK, 0), (40 * BLOCK, BLOCK, 4 * BLOCK)]]   # one O_DIRECT batch
    assert buffered == []
    assert written == 5 * BLOCK and seen[0] == 0 and seen[-1] == 5 * BLOCK
    data = disk.read_bytes()
    assert data[BLOCK:5 * BLOCK] == a + bytes(BLOCK) + b
    assert data[40 * BLOCK:41 * BLOCK] == c
    assert target.read_back(str(disk), ops, lambda done, total: None) == 5 * BLOCK


def test_batches_split_at_the_buffer_size(disk, monkeypatch):
    monkeypatch.setattr(target, "BATCH", 2 * BLOCK)
    ops = [_zero(offset, BLOCK) for offset in range(0, 20 * BLOCK, 2 * BLOCK)]
    batches = []
    _recording(monkeypatch, ioqueue.AioQueue, "write", batches)
    _written(disk, ops, {})
    assert [len(requests) for _, requests, _ in batches] == [2] * 5
    assert target.read_back(str(disk), ops, lambda done, total: None) == 10 * BLOCK


def test_an_unaligned_run_goes_through_the_page_cache(disk, monkeypatch):
    tail = os.urandom(BLOCK - 100)                  # the image ends inside a block
    ops = [_zero(0, BLOCK), _replace(63 * BLOCK, tail)]
    buffered = []
    real = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: buffered.append(
        (offset, len(data))) or real(fd, data, offset))
    _written(disk, ops, {63 * BLOCK: tail})
    assert buffered == [(63 * BLOCK, BLOCK - 100)]
    data = disk.read_bytes()
    assert data[:BLOCK] == bytes(BLOCK) and data[63 * BLOCK:64 * BLOCK - 100] == tail
    assert target.read_back(str(disk), ops, lambda done, total: None) == 2 * BLOCK - 100


def test_o_direct_refused_at_write_time_falls_back_to_the_page_cache(disk, monkeypatch):
    def refused(self, requests, buffer):
        raise OSError(errno.EINVAL, "Invalid argument")
    monkeypatch.setattr(ioqueue.AioQueue, "write", refused)
    ops = [_zero(0, BLOCK), _zero(8 * BLOCK, 2 * BLOCK)]
    assert _written(disk, ops, {})[0] == 3 * BLOCK
    data = disk.read_bytes()
    assert data[:BLOCK] == bytes(BLOCK) and data[8 * BLOCK:10 * BLOCK] == bytes(2 * BLOCK)


@pytest.mark.parametrize("where", ["queue", "pwrite", "fsync"])
def test_a_failed_write_says_the_disk_is_half_written(disk, monkeypatch, where):
    def failing(*args):
        raise OSError(errno.EIO, "Input/output error")
    module, name = {"queue": (ioqueue.AioQueue, "write"), "pwrite": (os, "pwrite"),
                    "fsync": (os, "fsync")}[where]
    monkeypatch.setattr(module, name, failing)
    ops = [_zero(BLOCK, BLOCK), _replace(63 * BLOCK, b"x" * 100)]
    with pytest.raises(DeltaError, match="Input/output error.*half-written"):
        _written(disk, ops, {63 * BLOCK: b"x" * 100})


def test_read_back_names_the_range_the_disk_does_not_hold(disk):
    ops = [_zero(offset, BLOCK) for offset in range(0, 64 * BLOCK, 4 * BLOCK)]
    _written(disk, ops, {})
    with open(disk, "r+b") as stream:        # as if one write had not landed
        stream.seek(20 * BLOCK + 7)
        stream.write(b"\1")
    seen = []
    with pytest.raises(DeltaError, match=f"read-back of bytes {20 * BLOCK}-{21 * BLOCK} "
                       "does not match: the disk is half-written"):
        target.read_back(str(disk), ops, lambda done, total: seen.append(done))
    assert seen[0] == 0


def test_read_back_of_a_range_past_the_end_fails(disk):
    op = _zero(63 * BLOCK, 2 * BLOCK)        # the disk ends one block into it
    with pytest.raises(DeltaError, match="read-back of bytes"):
        target.read_back(str(disk), [op], lambda done, total: None)


def test_read_back_spans_batches_and_large_operations(disk, tmp_path, monkeypatch):
    monkeypatch.setattr(target, "BATCH", 4 * BLOCK)
    monkeypatch.setattr(target, "PIECE", 2 * BLOCK)
    big = tmp_path / "big.img"
    data = os.urandom(64 * BLOCK)
    big.write_bytes(data)
    ops = [fmt.Operation(fmt.Op.COPY, 0, 30 * BLOCK + 5,
                         hashlib.sha256(data[:30 * BLOCK + 5]).digest()),
           _replace(40 * BLOCK, data[40 * BLOCK:41 * BLOCK])]
    assert target.read_back(str(big), ops, lambda done, total: None) == 31 * BLOCK + 5


def _ordered(monkeypatch, events):
    """Record the writer's completed batches, its fsync and each group read back."""
    real_send, real_check = target._Writer.send, target.ReadBack._check

    def send(writer, batch):
        sent = [offset for offset, _, _ in batch.requests]
        real_send(writer, batch)
        events.append(("written", sent))

    def check(read_back, ops):
        events.append(("read back", [op.dst for op in ops]))
        return real_check(read_back, ops)
    monkeypatch.setattr(target._Writer, "send", send)
    monkeypatch.setattr(target.ReadBack, "_check", check)
    monkeypatch.setattr(target, "_fsync", lambda fd, path: events.append(("fsync", path)))


def _write_checked(disk, ops, blobs):
    with target.ReadBack(str(disk), sum(op.length for op in ops),
                         lambda done, total: None) as check:
        written = target.write(str(disk), ops, blobs, None, lambda done, total: None, check)
        return written, check.finish()


def test_each_group_is_read_back_as_soon_as_it_is_written(disk, monkeypatch):
    monkeypatch.setattr(target, "GROUP", 2 * BLOCK)
    ops = [_zero(offset, BLOCK) for offset in range(0, 12 * BLOCK, 2 * BLOCK)]
    events = []
    _ordered(monkeypatch, events)
    assert _write_checked(disk, ops, {}) == (6 * BLOCK, 6 * BLOCK)
    groups = [[0, 2 * BLOCK], [4 * BLOCK, 6 * BLOCK], [8 * BLOCK, 10 * BLOCK]]
    assert events == [event for group in groups
                      for event in (("written", group), ("read back", group))] + [
        ("fsync", str(disk))]


def test_reads_that_could_see_the_page_cache_wait_for_the_fsync(disk, monkeypatch):
    monkeypatch.setattr(target, "GROUP", 2 * BLOCK)
    real_init = target.ReadBack.__init__

    def buffered_reads(check, *args):
        real_init(check, *args)
        check.direct = False            # as ioqueue.open_reads where O_DIRECT is refused
    monkeypatch.setattr(target.ReadBack, "__init__", buffered_reads)
    ops = [_zero(offset, BLOCK) for offset in range(0, 8 * BLOCK, 2 * BLOCK)]
    events = []
    _ordered(monkeypatch, events)
    real_fadvise = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: (
        events.append(("dropped", advice)), real_fadvise(fd, offset, length, advice))[1])
    assert _write_checked(disk, ops, {}) == (4 * BLOCK, 4 * BLOCK)
    assert [kind for kind, _ in events] == ["written", "written", "fsync", "dropped",
                                            "read back"]
    assert events[-1] == ("read back", [op.dst for op in ops])


def test_a_group_that_did_not_land_stops_the_writes_of_later_groups(disk, monkeypatch):
    monkeypatch.setattr(target, "GROUP", 2 * BLOCK)
    ops = [_zero(offset, BLOCK) for offset in range(0, 12 * BLOCK, 2 * BLOCK)]
    real_send = target._Writer.send
    flushed = []

    def lose_the_first_group(writer, batch):
        flushed.append([offset for offset, _, _ in batch.requests])
        real_send(writer, batch)
        if len(flushed) == 1:
            with open(disk, "r+b") as stream:        # as if the write had not landed
                stream.seek(2 * BLOCK)
                stream.write(b"\1")
    monkeypatch.setattr(target._Writer, "send", lose_the_first_group)
    with pytest.raises(DeltaError, match=f"read-back of bytes {2 * BLOCK}-{3 * BLOCK} "
                       "does not match: the disk is half-written"):
        _write_checked(disk, ops, {})
    assert flushed == [[0, 2 * BLOCK], [4 * BLOCK, 6 * BLOCK]]   # the third never sent


def test_writes_laid_out_ahead_are_sent_as_they_are(disk, monkeypatch):
    monkeypatch.setattr(target, "GROUP", 2 * BLOCK)
    a, b = os.urandom(BLOCK), os.urandom(BLOCK)
    ops = [_replace(0, a), _zero(2 * BLOCK, BLOCK), _replace(4 * BLOCK, b),
           _zero(6 * BLOCK, 2 * BLOCK)]
    blobs = {0: a, 4 * BLOCK: b}
    laid = target.lay_out(ops, blobs, limit=3 * BLOCK)      # the first two groups
    assert [[batch.requests for batch in group] for group in laid] == [
        [[(0, BLOCK, 0), (2 * BLOCK, BLOCK, BLOCK)]], [[(4 * BLOCK, BLOCK, 0),
                                                        (6 * BLOCK, 2 * BLOCK, BLOCK)]]]
    monkeypatch.setattr(target, "_runs", lambda *args: pytest.fail("laid out twice"))
    assert _written(disk, ops, {}, laid)[0] == 5 * BLOCK
    data = disk.read_bytes()
    assert data[:BLOCK] == a and data[4 * BLOCK:5 * BLOCK] == b
    assert data[2 * BLOCK:3 * BLOCK] == bytes(BLOCK)
    assert data[6 * BLOCK:8 * BLOCK] == bytes(2 * BLOCK)
    assert all(batch.buffer.closed for group in laid for batch in group)
