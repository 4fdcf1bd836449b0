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
(a delta from the version before last, which A/B alternation leaves there). It is the
ramdisk's in-place applier: one pass over the slot checks every byte of the result
(copies where they lie, new data in memory) before anything is written; then only the
changed ranges are written and read back - so every byte of the slot is verified
either way.
"""
from __future__ import annotations

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

from ramdisk_agent.ramdisk.delta import apply as delta_apply
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
    delta's source (the passive slot's version, the one before last); its size.

    This is the ramdisk's in-place applier (ramdisk/delta/apply.py), one code path for
    both: one pass over the slot (delta/source.py: large O_DIRECT reads in flight ahead
    of the hashing) checks every copy range where it lies - in place a copy's source
    bytes are its result bytes - while the new data is checked in memory beside it, so
    every byte of the resulting slot is checked against its signed operation digest
    (and those add up to the signed target digest) BEFORE anything is written: a slot
    not holding the source, or a bad payload, leaves the slot as it was. Then only the
    changed ranges are written (native AIO, O_DIRECT) and read back from the device
    (a write that did not land fails). One read of the slot plus the changed writes,
    instead of a read of the active slot plus a write of the whole passive one."""
    weights = {"verify-source": (0.0, 0.8), "write": (0.8, 0.15), "read-back": (0.95, 0.05)}

    def fraction(stage: str, done: int, total: int) -> None:
        base, share = weights.get(stage, (0.0, 0.0))
        progress(base + share * done / max(total, 1))
    result = delta_apply.apply(payload_path, target, None, key, fraction, version)
    LOG.info("Delta %s applied in place into %s: %d of %d bytes written and read back",
             version, target, result.written_bytes, result.target_size)
    return result.target_size


def _pipeline(manifest: fmt.Manifest, producer: _Producer, target_path: str,
              progress: Callable[[float], None]) -> None:
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
    target = DiskTarget(target_path)
    maps = [mmap.mmap(-1, CHUNK) for _ in range(BUFFERS + WRITERS)]
    free: queue.Queue = queue.Queue()
    for m in maps:
        free.put(memoryview(m))
    writers = Writers(WRITERS, lambda off, buf, n: target.write(off, buf[:n]), free)
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
