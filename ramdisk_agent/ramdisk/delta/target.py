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
that refuses O_DIRECT), the read-back starts only after the ``fsync`` and drops the
(then clean) cached pages first, as before.

The first LAY_OUT bytes of writes are laid out in their aligned buffers ahead
(:func:`lay_out`, called beside the source check, before anything may be written),
so the write phase after the check only sends them: the per-run Python work
(joining runs, copying them into the buffers) is off the apply's tail.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import logging
import mmap
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

from ramdisk_agent.ramdisk.delta import ioqueue
from ramdisk_agent.ramdisk.delta.ranges import (
    ALIGN,
    Range,
    RangeCheck,
    align_up,
    extents,
    windows,
)
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

LOG = logging.getLogger(__name__)
RUN = 8 << 20           #: largest single write (a run of neighbouring operations)
PIECE = 1 << 20         #: largest single read of the read-back
BATCH = 16 << 20        #: bytes of one batch of requests, in flight at once
GROUP = 4 << 20         #: written bytes handed to the read-back at a time
LAY_OUT = 64 << 20      #: written bytes laid out in memory during the source check

Progress = Callable[[int, int], None]


def write(path: str, ops: list[fmt.Operation], blobs: Mapping[int, bytes],
          source_fd: int | None, progress: Progress, check: ReadBack | None = None,
          laid_out: Sequence[list[_Batch]] = ()) -> int:
    """Write ``ops`` (target order) to ``path``, copies read from ``source_fd``; fsync;
    the bytes written. ``check`` gets every group of operations to read back: as soon
    as the group is written where its reads reach the device, else after the fsync.
    ``laid_out`` holds the batches of the first groups, made ahead by :func:`lay_out`."""
    total = sum(op.length for op in ops)
    early = check is not None and check.direct
    progress(0, total)      # before the first write: from here on the disk may change
    with _Writer(path) as writer:
        for index, group in enumerate(_groups(ops, GROUP)):
            batches = laid_out[index] if index < len(laid_out) else \
                _batches_of(group, blobs, source_fd)
            for batch in batches:
                writer.send(batch)      # returns when the batch's writes have completed
                progress(writer.done, total)
            if early:
                assert check is not None
                check.submit(group)     # raises a mismatch the read-back found so far
    if check is not None and not early:
        check.submit(ops)
    progress(total, total)
    return total


def lay_out(ops: list[fmt.Operation], blobs: Mapping[int, bytes],
            limit: int = LAY_OUT) -> list[list[_Batch]]:
    """The batches of the first groups of ``ops`` (about ``limit`` bytes), built in
    memory before the writes may begin (during the source check): the write phase
    then only sends them. Copies need the source and are never laid out here."""
    laid: list[list[_Batch]] = []
    size = 0
    for group in _groups(ops, GROUP):
        if size >= limit or any(op.op is fmt.Op.COPY for op in group):
            break
        laid.append(_batches_of(group, blobs, None))
        size += sum(op.length for op in group)
    return laid


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


class _Batch:
    """Runs laid out for one queue request list: the aligned ones in one aligned
    buffer (``requests`` point into it), the others to be written buffered."""

    def __init__(self, capacity: int):
        self.buffer = mmap.mmap(-1, max(ALIGN, min(BATCH, align_up(capacity))))
        self.requests: list[ioqueue.Request] = []
        self.buffered: list[tuple[int, bytes]] = []
        self.used = 0

    def close(self) -> None:
        self.buffer.close()


def _batches_of(ops: list[fmt.Operation], blobs: Mapping[int, bytes],
                source_fd: int | None) -> list[_Batch]:
    """``ops``' runs in batches of at most BATCH bytes of aligned runs."""
    left = sum(op.length for op in ops)
    batches = [_Batch(left)]
    for offset, data in _runs(ops, blobs, source_fd):
        left -= len(data)
        if offset % ALIGN or len(data) % ALIGN or len(data) > BATCH:
            batches[-1].buffered.append((offset, data))
            continue
        if batches[-1].used + len(data) > len(batches[-1].buffer):
            batches.append(_Batch(left + len(data)))
        batch = batches[-1]
        batch.buffer[batch.used:batch.used + len(data)] = data
        batch.requests.append((offset, len(data), batch.used))
        batch.used += len(data)
    return batches


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
    """Batches sent O_DIRECT through the queue, the runs O_DIRECT cannot take buffered."""

    def __init__(self, path: str):
        self.path, self.done = path, 0
        with contextlib.ExitStack() as stack:
            self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            stack.callback(os.close, self.fd)
            self.queue = stack.enter_context(ioqueue.open_direct_writes(path))
            self._stack = stack.pop_all()       # closed by __exit__ from here on

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                _fsync(self.fd, self.path)
        finally:
            self._stack.close()

    def send(self, batch: _Batch) -> None:
        """Write ``batch``; return when every request of it has completed. Closes it."""
        try:
            for offset, data in batch.buffered:
                _pwrite_all(self.fd, data, offset)
                self.done += len(data)
            if batch.requests and self.queue is not None:
                self._queue(batch)
            elif batch.requests:
                self._buffered(batch)
            self.done += batch.used
        finally:
            batch.close()

    def _queue(self, batch: _Batch) -> None:
        assert self.queue is not None
        try:
            self.queue.write(batch.requests, batch.buffer)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise _write_failed(batch.requests[0][0], exc) from None
            LOG.warning("O_DIRECT write refused on %s: buffered from now on", self.path)
            self.queue = None       # writing the same bytes again is harmless
            self._buffered(batch)

    def _buffered(self, batch: _Batch) -> None:
        for offset, length, at in batch.requests:
            _pwrite_all(self.fd, batch.buffer[at:at + length], offset)


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
            if not self.direct:     # submitted after the fsync: the pages are clean now
                os.posix_fadvise(self._reads.fd, 0, 0, os.POSIX_FADV_DONTNEED)
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
