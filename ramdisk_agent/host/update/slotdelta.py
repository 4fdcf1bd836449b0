"""Apply a delta from the active slot into the passive one in a single pass.

The ramdisk's applier (ramdisk/delta/apply.py) works in place on one disk, so it must
prove the whole source before its first write and read every write back. Here the
target is another partition, already marked unbootable, so the order can be the
cheap one - and what is checked stays the same:

1. before anything is written: the manifest's signature (format.read_header), the
   payload's size, the data section against its signed SHA-256, the operation digests
   against the signed target digest, both slot sizes;
2. one pass over the target in 4 MiB windows, in order: ``copy`` bytes read from the
   active slot (O_DIRECT where aligned), ``replace`` bytes decompressed, ``zero``
   bytes; a hash stage checks every operation's bytes against its signed digest
   (ranges.RangeCheck) while two writer threads put the windows on the passive slot
   with O_DIRECT (the image writer's pipeline, ramdisk/pipeline.py);
3. fsync; every operation seen to match, or DeltaError - and the slot stays
   unbootable (install.py makes it bootable only after this returns).

This is one read of the active slot and one write of the passive slot: the floor of
any delta into the other slot (bench/ab_update.py).

:func:`apply_in_place` is the cheaper case: the passive slot holds the delta's source
(a delta from the version before last, which A/B alternation leaves there). Only the
changed ranges are written; the copies are read where they lie and checked against
their digests like any other operation, and the written ranges are read back and
checked after the fsync - so every byte of the slot is verified either way.
"""
from __future__ import annotations

import bisect
import concurrent.futures
import errno
import hashlib
import logging
import mmap
import os
import queue
import time
import zlib
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ed25519

from ramdisk_agent.ramdisk.delta.ranges import ALIGN, Range, RangeCheck, split
from ramdisk_agent.ramdisk.pipeline import (
    BUFFERS,
    CHUNK,
    WRITERS,
    DiskTarget,
    Stage,
    Writers,
    device_size,
    release,
)
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

LOG = logging.getLogger(__name__)
ZEROS = bytes(CHUNK)
#: SHA-256 threads checking the target's operations. Measured on the 2-core bench machine
#: under load from other work (512 MiB slot, A/B in one run): 1 lane 0.91-0.98 s, 2 lanes
#: 0.85-1.31 s - a second hashing thread only competes with the reader and writers.
LANES = 1
#: Reads in flight while the changed ranges of a delta in place are read back.
READ_BACK_THREADS = 8


def _checked(payload_path: str, key: ed25519.Ed25519PublicKey, version: str
             ) -> tuple[fmt.Manifest, mmap.mmap | None, int]:
    """The verified manifest, the mapped payload and the data section's start."""
    with open(payload_path, "rb") as stream:
        manifest, header = fmt.read_header(stream, key)
        if manifest.version != version:
            raise DeltaError(f"the payload updates to version {manifest.version!r}, the "
                             f"offer was for {version!r}")
        size = os.fstat(stream.fileno()).st_size
        if size != header + manifest.data_size:
            raise DeltaError(f"payload data section is {size - header} bytes, the manifest "
                             f"says {manifest.data_size}: truncated or padded payload")
        data = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) \
            if manifest.data_size else None
    if fmt.target_digest(op.sha256 for op in manifest.operations) != manifest.target_sha256:
        raise DeltaError("operation digests do not add up to the target digest")
    section = hashlib.sha256(memoryview(data)[header:] if data is not None else b"")
    if section.digest() != manifest.data_sha256:
        raise DeltaError("payload data section does not match its signed SHA-256")
    return manifest, data, header


def apply_into(payload_path: str, source: str, target: str, key: ed25519.Ed25519PublicKey,
               version: str, progress: Callable[[float], None] = lambda fraction: None) -> int:
    """Write the delta's target image into ``target`` reading ``source``; its size."""
    manifest, data, header = _checked(payload_path, key, version)
    try:
        for path, needed, what in ((source, manifest.source_size, "active"),
                                   (target, manifest.target_size, "passive")):
            if device_size(path) < needed:
                raise DeltaError(f"the {what} slot holds {device_size(path)} bytes, the "
                                 f"payload needs {needed}")
        _pipeline(manifest, _Producer(manifest, data, header, source), target, progress)
    finally:
        if data is not None:
            data.close()
    return manifest.target_size


def _mismatch(item: Range) -> DeltaError:
    return DeltaError(f"target bytes {item.start}-{item.end} do not match their signed "
                      "digest: the slot read (the active one, or the passive one for a "
                      "delta in place) does not hold the payload's source")


def apply_in_place(payload_path: str, target: str, key: ed25519.Ed25519PublicKey,
                   version: str, progress: Callable[[float], None] = lambda fraction: None
                   ) -> int:
    """Write the delta's target image into ``target`` where ``target`` holds the
    delta's source (the passive slot's version, the one before last): copies are
    read where they are and checked against their digests, only ``replace`` and
    ``zero`` ranges are written, then read back and checked again (a write that did
    not land fails here). One read of the slot plus the changed writes, instead of a
    read of the active slot plus a write of the whole passive one. Its size."""
    manifest, data, header = _checked(payload_path, key, version)
    try:
        moved = next((op for op in manifest.operations
                      if op.op is fmt.Op.COPY and op.src != op.dst), None)
        if moved is not None:
            raise DeltaError(f"the copy to {moved.dst} reads {moved.src}: a delta that "
                             "moves data cannot be applied in place")
        needed = max(manifest.source_size, manifest.target_size)
        if device_size(target) < needed:
            raise DeltaError(f"the passive slot holds {device_size(target)} bytes, the "
                             f"payload needs {needed}")
        changes = [op for op in manifest.operations if op.op is not fmt.Op.COPY]
        # buffered writes: the changed ranges are many small ones, which the page
        # cache and the fsync's elevator merge (one O_DIRECT pwrite each: ~2x slower,
        # measured on a 256 MiB slot); _read_back reads the disk with O_DIRECT
        _pipeline(manifest, _Producer(manifest, data, header, target), target, progress,
                  _ChangedRanges(changes).write, direct=False)
    finally:
        if data is not None:
            data.close()
    _read_back(target, changes)
    LOG.info("Delta %s applied in place into %s: %d of %d bytes written and read back",
             manifest.version, target, sum(op.length for op in changes), manifest.target_size)
    return manifest.target_size


class _ChangedRanges:
    """Writes only the parts of a window that the delta changes (``changes``: the
    operations that are not copies, in target order)."""

    def __init__(self, changes: list[fmt.Operation]):
        self.changes = changes
        self.ends = [op.dst + op.length for op in changes]

    def write(self, target: DiskTarget, offset: int, buffer: memoryview, length: int) -> None:
        end = offset + length
        index = bisect.bisect_right(self.ends, offset)
        while index < len(self.changes) and self.changes[index].dst < end:
            op = self.changes[index]
            start, stop = max(op.dst, offset), min(op.dst + op.length, end)
            target.write(start, buffer[start - offset:stop - offset])
            index += 1


def _read_back(target: str, changes: list[fmt.Operation]) -> None:
    """Every written range as the disk now holds it, against its signed digest. The
    ranges are many small ones (scattered 4 KiB blocks): read one at a time they cost
    more than the whole apply, so :data:`READ_BACK_THREADS` read at once."""
    reader = _Producer.reader(target)

    def check(op: fmt.Operation) -> None:
        with mmap.mmap(-1, op.length) as buffer:
            view = memoryview(buffer)
            try:
                reader._read(view, op.dst, 0)
                if hashlib.sha256(view).digest() != op.sha256:
                    raise DeltaError(f"target bytes {op.dst}-{op.dst + op.length} read "
                                     "back from the passive slot do not match their signed "
                                     "digest: the write did not land")
            finally:
                view.release()
    try:
        with concurrent.futures.ThreadPoolExecutor(READ_BACK_THREADS, "read-back") as pool:
            for done in pool.map(check, changes):
                del done
    finally:
        reader.close()


def _pipeline(manifest: fmt.Manifest, producer: _Producer, target_path: str,
              progress: Callable[[float], None],
              write: Callable[[DiskTarget, int, memoryview, int], None] | None = None,
              direct: bool = True) -> None:
    ranges = [Range(op.dst, op.length, op.sha256) for op in manifest.operations]
    lanes = [RangeCheck(lane, _mismatch) for lane in split(ranges, LANES)]
    pool = concurrent.futures.ThreadPoolExecutor(len(lanes), "delta-check")

    def check(offset: int, buffer: memoryview, length: int) -> None:
        """Every lane hashes its operations' part of the window, in parallel (hashlib
        releases the GIL): one SHA-256 thread is slower than the disk's reads."""
        if len(lanes) == 1:
            lanes[0].feed(offset, buffer[:length])
            return
        for done in [pool.submit(lane.feed, offset, buffer[:length]) for lane in lanes]:
            done.result()
    target = DiskTarget(target_path, direct=direct)
    maps = [mmap.mmap(-1, CHUNK) for _ in range(BUFFERS + WRITERS)]
    free: queue.Queue = queue.Queue()
    for m in maps:
        free.put(memoryview(m))
    write = write or (lambda disk, off, buf, n: disk.write(off, buf[:n]))
    writers = Writers(WRITERS, lambda off, buf, n: write(target, off, buf, n), free)
    hashing = Stage("delta-check", check, writers.jobs, free)
    writers.start()
    hashing.start()
    ok, reading, started = False, 0.0, time.monotonic()
    try:
        size = manifest.target_size
        for offset in range(0, size, CHUNK):
            if hashing.error is not None or writers.error is not None:
                break
            buffer = free.get()
            length = min(CHUNK, size - offset)
            began = time.monotonic()
            try:
                producer.fill(buffer[:length], offset)
            except BaseException:
                free.put(buffer)
                raise
            reading += time.monotonic() - began
            hashing.jobs.put((offset, buffer, length))
            progress((offset + length) / size)
        ok = True
    finally:
        hashing.jobs.put(None)
        writers.join()
        target.close(sync=ok and writers.error is None and hashing.error is None)
        release(free, maps)
        producer.close()
        pool.shutdown()
    for error in (hashing.error, writers.error):
        if isinstance(error, DeltaError):
            raise error
        if error is not None:
            raise DeltaError(f"writing the passive slot failed: {error}")
    for lane in lanes:
        lane.finish()
    LOG.info("Delta %s applied into %s: %d bytes in %.2fs (busy: read %.2fs, check %.2fs, "
             "write %.2fs)", manifest.version, target_path, manifest.target_size,
             time.monotonic() - started, reading, hashing.busy, writers.busy)


class _Producer:
    """The target's bytes window by window: copies read from the source, replace data
    decompressed, zeros."""

    def __init__(self, manifest: fmt.Manifest | None, data: mmap.mmap | None, header: int,
                 source: str):
        self.ops = manifest.operations if manifest is not None else []
        self.data, self.header = data, header
        self.source_size = device_size(source)
        self.index = 0
        self.blob: tuple[int, bytes] | None = None
        self.fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.direct_fd: int | None = os.open(source, os.O_RDONLY | os.O_CLOEXEC |
                                                 os.O_DIRECT)
        except OSError:
            self.direct_fd = None

    @classmethod
    def reader(cls, path: str) -> _Producer:
        """Reads of ``path`` only (:meth:`_read`), O_DIRECT where aligned."""
        return cls(None, None, 0, path)

    def close(self) -> None:
        for fd in (self.fd, self.direct_fd):
            if fd is not None:
                os.close(fd)

    def fill(self, window: memoryview, offset: int) -> None:
        """The target's bytes ``[offset, offset + len(window))`` into ``window``. Copies
        from the same offset (all a block-level builder makes) come from one read of
        the whole window - one large O_DIRECT read as dd makes - the rest op by op."""
        position, end = offset, offset + len(window)
        whole = self._in_place_copy(offset, end)
        if whole:
            self._read(window, offset, 0)
        while position < end:
            op = self.ops[self.index]
            if op.dst + op.length <= position:
                self.index += 1
                continue
            take = min(op.dst + op.length, end) - position
            into, inner = window[position - offset:position - offset + take], position - op.dst
            if op.op is fmt.Op.COPY:
                if not (whole and op.src == op.dst):
                    self._read(into, op.src + inner, position - offset)
            elif op.op is fmt.Op.REPLACE:
                into[:] = self._replace(op)[inner:inner + take]
            else:
                into[:] = ZEROS[:take]
            position += take

    def _in_place_copy(self, start: int, end: int) -> bool:
        """Whether ``[start, end)`` holds a copy from the same offset of the source."""
        index = self.index
        while index < len(self.ops) and self.ops[index].dst < end:
            op = self.ops[index]
            if op.op is fmt.Op.COPY and op.src == op.dst and op.dst + op.length > start:
                return end <= self.source_size
            index += 1
        return False

    def _read(self, into: memoryview, offset: int, at: int) -> None:
        """Fill ``into`` (at byte ``at`` of a page-aligned buffer) from ``offset``."""
        aligned = self.direct_fd is not None and not (offset % ALIGN or len(into) % ALIGN
                                                      or at % ALIGN)
        fd = self.direct_fd if aligned else self.fd
        done = 0
        while done < len(into):
            try:
                got = os.preadv(fd, [into[done:]], offset + done)   # type: ignore[arg-type]
            except OSError as exc:
                if fd == self.fd or exc.errno != errno.EINVAL:
                    raise DeltaError(f"reading the active slot at byte {offset + done} "
                                     f"failed: {exc}") from None
                fd = self.fd                  # O_DIRECT refused here: buffered
                continue
            if not got:
                raise DeltaError(f"the active slot ends at byte {offset + done}")
            done += got

    def _replace(self, op: fmt.Operation) -> bytes:
        if self.blob is None or self.blob[0] != op.dst:
            assert self.data is not None
            start = self.header + op.offset
            try:
                raw = zlib.decompressobj().decompress(self.data[start:start + op.size],
                                                      op.length + 1)
            except zlib.error as exc:
                raise DeltaError(f"replace at {op.dst}: corrupt data ({exc})") from None
            if len(raw) != op.length:
                raise DeltaError(f"replace at {op.dst}: {len(raw)} bytes, not {op.length}")
            self.blob = (op.dst, raw)
        return self.blob[1]
