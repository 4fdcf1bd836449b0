"""Write a delta's new bytes and read every written range back from the device.

The writes are runs of neighbouring operations (one request each), in disk order,
sent O_DIRECT through the AIO queue (ioqueue.py: DEPTH requests in flight) in
batches of BATCH bytes, then one ``fsync`` that flushes the device's cache. A run
O_DIRECT cannot take (an unaligned end of the disk, a file that refuses O_DIRECT)
goes through the page cache, which the same ``fsync`` flushes. The read-back is a
real read of the device, never of the page cache: the written ranges, joined where
they touch, are read with O_DIRECT in batches, and every operation's bytes are
hashed and compared with its signed digest (ranges.RangeCheck). A write the device
acknowledged but did not keep is caught there, even while the page cache still
holds the new bytes (tests/functional/test_delta_loopdev.py replays that on a loop
device).

The read-back runs on its own thread (:class:`ReadBack`, its own AIO context) a
group of operations (GROUP bytes) behind the writes: once a group's writes have
completed at the device, its ranges are read back while the next group is written
and the final ``fsync`` runs, so the apply's tail is about the longer of the two
instead of their sum. Reading a range before that ``fsync`` checks the same thing
as after it: an O_DIRECT read is answered by the device (its cache or its media,
as after a flush; the kernel first writes back any page-cache copy of the range,
so the few runs written buffered are read from the device too), and success still
needs the ``fsync`` to succeed. Where reads cannot bypass the page cache (a file
that refuses O_DIRECT), the read-back starts only after the ``fsync``, as before.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import logging
import mmap
import os
from collections.abc import Callable, Iterator, Mapping

from ramdisk_agent.ramdisk.delta import ioqueue
from ramdisk_agent.ramdisk.delta.ranges import ALIGN, Range, RangeCheck, extents, windows
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

LOG = logging.getLogger(__name__)
RUN = 8 << 20           #: largest single write (a run of neighbouring operations)
PIECE = 1 << 20         #: largest single read of the read-back
BATCH = 16 << 20        #: bytes of one batch of requests, in flight at once
GROUP = 4 << 20         #: written bytes handed to the read-back at a time

Progress = Callable[[int, int], None]


def write(path: str, ops: list[fmt.Operation], blobs: Mapping[int, bytes],
          source_fd: int | None, progress: Progress, check: ReadBack | None = None) -> int:
    """Write ``ops`` (target order) to ``path``, copies read from ``source_fd``; fsync;
    the bytes written. ``check`` gets every group of operations to read back: as soon
    as the group is written where its reads reach the device, else after the fsync."""
    total = sum(op.length for op in ops)
    early = check is not None and check.direct
    progress(0, total)      # before the first write: from here on the disk may change
    with _Writer(path) as writer:
        for group in _groups(ops, GROUP) if early else [ops]:
            for offset, data in _runs(group, blobs, source_fd):
                writer.add(offset, data)
                progress(writer.done, total)
            if early:
                assert check is not None
                writer.flush()          # the group's writes have completed
                check.submit(group)     # raises a mismatch the read-back found so far
    if check is not None and not early:
        check.submit(ops)
    progress(total, total)
    return total


def _groups(ops: list[fmt.Operation], size: int) -> Iterator[list[fmt.Operation]]:
    """``ops`` in order, cut into lists of about ``size`` bytes (whole operations)."""
    group: list[fmt.Operation] = []
    length = 0
    for op in ops:
        group.append(op)
        length += op.length
        if length >= size:
            yield group
            group, length = [], 0
    if group:
        yield group


def _runs(ops: list[fmt.Operation], blobs: Mapping[int, bytes],
          source_fd: int | None) -> Iterator[tuple[int, bytes]]:
    """Neighbouring operations' bytes joined into runs of at most RUN bytes."""
    start, size = 0, 0
    parts: list[bytes] = []
    for op in ops:
        for offset, data in _pieces(op, blobs, source_fd):
            if parts and (offset != start + size or size + len(data) > RUN):
                yield start, b"".join(parts)
                parts, size = [], 0
            if not parts:
                start = offset
            parts.append(data)
            size += len(data)
    if parts:
        yield start, b"".join(parts)


def _pieces(op: fmt.Operation, blobs: Mapping[int, bytes], source_fd: int | None):
    """``(target offset, bytes)`` of ``op``, at most RUN bytes each."""
    for at in range(0, op.length, RUN):
        length = min(RUN, op.length - at)
        if op.op is fmt.Op.REPLACE:
            yield op.dst + at, blobs[op.dst][at:at + length]
        elif op.op is fmt.Op.ZERO:
            yield op.dst + at, bytes(length)
        else:
            assert source_fd is not None, "copies are written only to another disk"
            data = os.pread(source_fd, length, op.src + at)
            if len(data) != length:
                raise DeltaError(f"short read of the source at byte {op.src + at}")
            yield op.dst + at, data


class _Writer:
    """Aligned runs O_DIRECT in batches through the queue, the others buffered."""

    def __init__(self, path: str):
        self.path, self.done = path, 0
        self.pending: list[ioqueue.Request] = []
        self.used = 0
        with contextlib.ExitStack() as stack:
            self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            stack.callback(os.close, self.fd)
            self.queue = stack.enter_context(ioqueue.open_direct_writes(path))
            self.buffer = mmap.mmap(-1, BATCH)
            stack.callback(self.buffer.close)
            self._stack = stack.pop_all()       # closed by __exit__ from here on

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                self.flush()
                _fsync(self.fd, self.path)
        finally:
            self._stack.close()

    def add(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``: queued in the batch, or buffered at once."""
        if self.queue is None or offset % ALIGN or len(data) % ALIGN or len(data) > BATCH:
            _pwrite_all(self.fd, data, offset)
            self.done += len(data)
            return
        if self.used + len(data) > BATCH:
            self.flush()
        self.buffer[self.used:self.used + len(data)] = data
        self.pending.append((offset, len(data), self.used))
        self.used += len(data)

    def flush(self) -> None:
        """Send the queued batch; return when every request of it has completed."""
        if not self.pending:
            return
        assert self.queue is not None
        try:
            self.queue.write(self.pending, self.buffer)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise _write_failed(self.pending[0][0], exc) from None
            LOG.warning("O_DIRECT write refused on %s: buffered from now on", self.path)
            self.queue = None       # writing the same bytes again is harmless
            for offset, length, at in self.pending:
                _pwrite_all(self.fd, self.buffer[at:at + length], offset)
        self.done += self.used
        self.pending, self.used = [], 0


def _write_failed(offset: int, exc: OSError) -> DeltaError:
    return DeltaError(f"write failed at byte {offset} ({exc}); the disk is now "
                      "half-written: deploy the full image")


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    try:
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                with view[done:] as rest:
                    done += os.pwrite(fd, rest, offset + done)
    except OSError as exc:
        raise _write_failed(offset, exc) from None


def _fsync(fd: int, path: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise DeltaError(f"flushing {path} failed ({exc}); the disk is now half-written: "
                         "deploy the full image") from None


def _not_kept(item: Range) -> DeltaError:
    return DeltaError(f"read-back of bytes {item.start}-{item.end} does not match: the "
                      "disk is half-written, deploy the full image")


def read_back(path: str, ops: list[fmt.Operation], progress: Progress) -> int:
    """Read every range of ``ops`` from the device and check its digest; the bytes."""
    with ReadBack(path, sum(op.length for op in ops), progress) as check:
        check.submit(ops)
        return check.finish()


class ReadBack:
    """Groups of written operations read back from the device on one thread, in the
    order submitted; :meth:`finish` waits for all of them and raises the first
    mismatch (so does :meth:`submit`, for one already found)."""

    def __init__(self, path: str, total: int, progress: Progress):
        self.total, self.done, self._progress = total, 0, progress
        self._futures: list[concurrent.futures.Future] = []
        with contextlib.ExitStack() as stack:
            self._reads = stack.enter_context(ioqueue.open_reads(path))
            self.buffer = mmap.mmap(-1, BATCH)
            stack.callback(self.buffer.close)
            pool = concurrent.futures.ThreadPoolExecutor(1, "delta-read-back")
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            self._pool = pool
            self._stack = stack.pop_all()       # closed by __exit__ from here on
        #: whether reads reach the device even where the page cache holds the range
        self.direct = self._reads.direct

    def __enter__(self) -> ReadBack:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def submit(self, ops: list[fmt.Operation]) -> None:
        """Read back ``ops`` (written, disk order) after the groups submitted before."""
        for future in self._futures:
            if future.done():
                future.result()
        if not self._futures:
            self._progress(0, self.total)
        self._futures.append(self._pool.submit(self._check, ops))

    def finish(self) -> int:
        """Wait for every group's read-back; the bytes checked."""
        for future in self._futures:
            future.result()
        self._progress(self.done, self.total)
        return self.done

    def _check(self, ops: list[fmt.Operation]) -> None:
        """Read one group's ranges from the device and hash them (its own thread)."""
        ranges = [Range(op.dst, op.length, op.sha256) for op in ops]
        check = RangeCheck(ranges, _not_kept)
        for batch in _batches(windows(extents(ranges, 0), PIECE)):
            got = self._reads.read(batch, self.buffer)
            with memoryview(self.buffer) as view:
                for (offset, _, at), count in zip(batch, got):
                    with view[at:at + count] as piece:
                        self.done += check.feed(offset, piece)
            self._progress(self.done, self.total)
        check.finish()


def _batches(pieces: list[tuple[int, int]]) -> list[list[ioqueue.Request]]:
    """Pieces as read requests, packed into batches of at most BATCH buffer bytes."""
    batches: list[list[ioqueue.Request]] = []
    used = BATCH
    for start, end in pieces:
        if used + end - start > BATCH:
            batches.append([])
            used = 0
        batches[-1].append((start, end - start, used))
        used += end - start
    return batches
