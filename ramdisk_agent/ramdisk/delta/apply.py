"""Apply a delta payload onto a disk, verifying the source before writing anything.

Order of work, so that a bad payload or a disk that is not the expected source is
refused while the disk is still untouched:

1. the manifest signature (format.read_header) and the payload's size;
2. every ``copy`` range of the source disk against its digest (source.py: one
   sequential pass of large O_DIRECT reads, hashed while the next are read) and, on
   a thread alongside it, the data section's SHA-256 and every ``replace``/``zero``
   operation decompressed and hashed in memory, then the first writes laid out in
   aligned buffers (CPU work while the disk streams; nothing is written yet);
3. only then the writes and a read-back of every written range from the device
   (target.py: O_DIRECT, many reads in flight; each group of ranges is read back
   while the next is written).

A failure in steps 1-2 leaves the disk as it was. A failure in step 3 (an I/O
error, a read-back mismatch) leaves it half-written: ``DeltaError`` says so and the
caller must fall back to the full image. Nothing here reports success for a disk
whose every operation digest was not seen to match.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import mmap
import os
import time
import zlib
from collections.abc import Callable

from ramdisk_agent.ramdisk.delta import source as source_check
from ramdisk_agent.ramdisk.delta import target as target_io
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class ApplyResult:
    """What an application did, for the command result and the benchmark."""

    operations: int = 0
    target_size: int = 0        #: bytes of the image the disk now holds
    verified_bytes: int = 0     #: source bytes hashed (copy operations)
    written_bytes: int = 0      #: bytes written to the target
    seconds: float = 0.0
    #: Seconds per phase (header, verify-source, verify-data, write incl. fsync,
    #: read-back), in the log line and the bench: where an apply's time goes. The data
    #: is checked, and the first writes laid out in memory, alongside the source pass:
    #: "verify-data" is only the wait left for that after the pass.
    phases: dict[str, float] = dataclasses.field(default_factory=dict)

    def lap(self, phase: str, since: float) -> float:
        """Record ``phase`` as lasting from ``since`` to now; now."""
        now = time.monotonic()
        self.phases[phase] = round(now - since, 3)
        return now


def apply(payload_path: str, source: str, target: str | None, public_key,
          progress: Callable[[str, int, int], None] | None = None,
          version: str | None = None) -> ApplyResult:
    """Apply ``payload_path`` to ``source``; write to ``target`` (None: in place).
    ``version``, when given, must be the manifest's version text."""
    started = time.monotonic()
    progress = progress or (lambda stage, done, total: None)
    in_place = target is None or os.path.realpath(target) == os.path.realpath(source)
    result = ApplyResult()
    with open(payload_path, "rb") as stream:
        manifest, header = fmt.read_header(stream, public_key)
        if version is not None and manifest.version != version:
            raise DeltaError(f"the payload updates to version {manifest.version!r}, the "
                             f"deploy asked for {version!r}")
        data = _map_data(stream, header, manifest)
    try:
        _apply(manifest, data, source, None if in_place else target, progress, result,
               result.lap("header", started))
    finally:
        data.close()
    result.seconds = time.monotonic() - started
    LOG.info("Delta %s applied: %d operations, %d bytes verified, %d written in %.2fs (%s)",
             manifest.version or "(unversioned)", result.operations, result.verified_bytes,
             result.written_bytes, result.seconds,
             ", ".join(f"{phase} {secs:.2f}s" for phase, secs in result.phases.items()))
    return result


def _map_data(stream, header: int, manifest: fmt.Manifest) -> _Slice | _EmptyMap:
    """The data section, mapped; its digest is checked by _verify_new_data."""
    size = os.fstat(stream.fileno()).st_size
    if size != header + manifest.data_size:
        raise DeltaError(f"payload data section is {size - header} bytes, the manifest "
                             f"says {manifest.data_size}: truncated or padded payload")
    if manifest.data_size == 0:
        return _EmptyMap()
    return _Slice(mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ), header)


def _apply(manifest, data, source, target, progress, result: ApplyResult,
           since: float) -> None:
    if target is None and any(op.op is fmt.Op.COPY and op.src != op.dst
                              for op in manifest.operations):
        raise DeltaError("this payload moves blocks; it cannot be applied in place")
    _check_size(source, manifest.source_size, "source")
    if fmt.target_digest(op.sha256 for op in manifest.operations) != manifest.target_sha256:
        raise DeltaError("operation digests do not add up to the target digest")
    result.operations = len(manifest.operations)
    result.target_size = manifest.target_size
    ops = [op for op in manifest.operations if target is not None or op.op is not fmt.Op.COPY]
    laid_out: list = []
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            new_data = pool.submit(_check_and_lay_out, manifest, data, ops, laid_out)
            result.verified_bytes = _verify_source(manifest, source, new_data, progress)
            since = result.lap("verify-source", since)
            blobs = new_data.result()
        since = result.lap("verify-data", since)
        dest = target or source
        _check_size(dest, manifest.target_size, "target")
        result.written_bytes = _write(ops, blobs, source, dest, target is not None,
                                      progress, result, since, laid_out)
    finally:
        for batches in laid_out:        # those not sent (a failure); sent ones are closed
            for batch in batches:
                batch.close()


def _check_size(path: str, needed: int, what: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    if size < needed:
        raise DeltaError(f"{what} {path} holds {size} bytes, the payload needs {needed}")


def _verify_source(manifest, source: str, new_data: concurrent.futures.Future,
                   progress) -> int:
    """Hash every copy range of the source (delta/source.py: big O_DIRECT reads); stop
    early when the data check running alongside has failed."""
    def step(done: int, total: int) -> None:
        if new_data.done() and (failure := new_data.exception()) is not None:
            raise failure
        progress("verify-source", done, total)

    copies = [op for op in manifest.operations if op.op is fmt.Op.COPY]
    return source_check.verify(source, copies, step)


def _check_and_lay_out(manifest, data, ops: list[fmt.Operation], laid_out: list) -> dict:
    """On the thread beside the source check: check the new data, then lay out the
    first writes in memory (target.lay_out) so that the write phase only sends them;
    the replace bytes by dst. Nothing touches the disk here."""
    blobs = _verify_new_data(manifest, data)
    laid_out.extend(target_io.lay_out(ops, blobs))
    return blobs


def _verify_new_data(manifest, data) -> dict[int, bytes]:
    """Check the data section's digest, then decompress and check every replace/zero
    operation; the replace bytes by dst."""
    if data.sha256() != manifest.data_sha256:
        raise DeltaError("payload data section does not match its signed SHA-256")
    blobs: dict[int, bytes] = {}
    zero_digests: dict[int, bytes] = {}
    for op in manifest.operations:
        if op.op is fmt.Op.REPLACE:
            try:
                raw = zlib.decompressobj().decompress(data[op.offset:op.offset + op.size],
                                                      op.length + 1)
            except zlib.error as exc:
                raise DeltaError(f"replace at {op.dst}: corrupt data ({exc})") from None
            if len(raw) != op.length or hashlib.sha256(raw).digest() != op.sha256:
                raise DeltaError(f"replace at {op.dst}: data does not match its digest")
            blobs[op.dst] = raw
        elif op.op is fmt.Op.ZERO:
            if op.length not in zero_digests:
                zero_digests[op.length] = hashlib.sha256(bytes(op.length)).digest()
            if zero_digests[op.length] != op.sha256:
                raise DeltaError(f"zero at {op.dst}: digest is not that of zeros")
    return blobs


def _write(ops, blobs, source, dest, copy_too: bool, progress, result: ApplyResult,
           since: float, laid_out: list) -> int:
    """Write the new bytes (and copies when the target is another disk) and read them
    back, each group while the next is written (target.py); "write" is the writes and
    the fsync, "read-back" the wait for the reads left after them."""
    src_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC) if copy_too else None
    try:
        with target_io.ReadBack(dest, sum(op.length for op in ops),
                                lambda done, total: progress("read-back", done, total)
                                ) as check:
            written = target_io.write(dest, ops, blobs, src_fd,
                                      lambda done, total: progress("write", done, total),
                                      check, laid_out)
            since = result.lap("write", since)
            check.finish()
    finally:
        if src_fd is not None:
            os.close(src_fd)
    result.lap("read-back", since)
    return written


class _Slice:
    """The data section of a mapped payload, addressed from 0."""

    def __init__(self, mapped: mmap.mmap, start: int):
        self._map, self._start = mapped, start

    def __getitem__(self, item: slice) -> bytes:
        return self._map[self._start + item.start:self._start + item.stop]

    def sha256(self) -> bytes:
        with memoryview(self._map) as view, view[self._start:] as section:
            return hashlib.sha256(section).digest()

    def close(self) -> None:
        self._map.close()


class _EmptyMap:
    def __getitem__(self, item: slice) -> bytes:
        return b""

    def sha256(self) -> bytes:
        return hashlib.sha256(b"").digest()

    def close(self) -> None:
        pass
