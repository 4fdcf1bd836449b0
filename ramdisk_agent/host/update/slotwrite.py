"""Stream a full update image into the passive slot, resumable across restarts.

Built from the ramdisk image writer's parts (ramdisk/pipeline.py, download.py): a
reader filling page-aligned buffers from the socket, a hash stage, two ``O_DIRECT``
writer threads - the same pipeline as ``curl | tee >(sha256sum) | dd oflag=direct``.
What a slot needs beyond ``imagewrite.stream_raw``:

- it stops at the announced size: a server sending more is refused before a byte
  beyond the payload is written (the slot path already ends at the slot's end);
- it starts at a checkpoint: the hash state of the bytes already in the slot is
  rebuilt by reading them back (O_DIRECT) - Python cannot persist a SHA-256 state -
  and the download continues with ``Range: bytes=<checkpoint>-``;
- ``checkpoint(offset)`` is called as the written prefix grows (every 64 MiB), so
  the engine can persist it. Writers finish out of order; only a prefix that is
  written entirely counts.

Whatever a checkpoint claims, nothing is trusted: the final SHA-256 over the whole
slot must equal the signed one before the slot is made bootable.
"""
from __future__ import annotations

import dataclasses
import hashlib
import mmap
import queue
import threading
import time
from collections.abc import Callable

from ramdisk_agent.errors import AgentError, UpdateEngineError
from ramdisk_agent.ramdisk.download import DownloadOptions, HttpStream
from ramdisk_agent.ramdisk.pipeline import (
    BUFFERS,
    CHUNK,
    WRITERS,
    DiskTarget,
    Stage,
    Writers,
    hash_stored,
    release,
)

CHECKPOINT_BYTES = 64 << 20
DOWNLOAD_TRANSFER_ERROR, SIZE_MISMATCH, WRITE_ERROR = 9, 11, 14


@dataclasses.dataclass
class SlotWrite:
    size: int
    seconds: float
    sha256: str
    resumed_from: int
    direct_io: bool


class _Prefix:
    """The length of the written prefix, from out-of-order completions."""

    def __init__(self, start: int, report: Callable[[int], None], every: int):
        self.done, self.pending = start, {}  # type: ignore[var-annotated]
        self.report, self.every, self.last = report, every, start
        self.lock = threading.Lock()

    def finished(self, offset: int, length: int) -> None:
        with self.lock:
            self.pending[offset] = length
            while self.done in self.pending:
                self.done += self.pending.pop(self.done)
            if self.done - self.last >= self.every:
                self.last = self.done
                self.report(self.done)


def rehash(path: str, length: int, hasher) -> None:
    """Feed the first ``length`` bytes of ``path``, as stored, to ``hasher``."""
    got = hash_stored(path, length, hasher)
    if got < length:
        raise UpdateEngineError(f"{path} ends at byte {got}, before the checkpoint "
                                f"{length}", WRITE_ERROR)


def stream_into(url: str, path: str, size: int, *, start: int = 0,
                options: DownloadOptions | None = None,
                checkpoint: Callable[[int], None] = lambda offset: None,
                progress: Callable[[int], None] = lambda offset: None,
                every: int = CHECKPOINT_BYTES) -> SlotWrite:
    """Write bytes ``[start, size)`` of ``url`` to ``path``; the SHA-256 of all ``size``."""
    if start % CHUNK or not 0 <= start <= size:
        start = 0                 # a checkpoint is always a whole number of chunks
    began = time.monotonic()
    hasher = hashlib.sha256()
    target = DiskTarget(path)
    target.check_fits(size)
    if start:
        rehash(path, start, hasher)
    maps = [mmap.mmap(-1, CHUNK) for _ in range(BUFFERS + WRITERS)]
    free: queue.Queue = queue.Queue()
    for m in maps:
        free.put(memoryview(m))
    prefix = _Prefix(start, checkpoint, every)

    def write(offset: int, buffer: memoryview, length: int) -> None:
        target.write(offset, buffer[:length])
        prefix.finished(offset, length)
    writers = Writers(WRITERS, write, free)
    hashing = Stage("slot-hash", lambda off, buf, n: hasher.update(buf[:n]), writers.jobs,
                    free)
    writers.start()
    hashing.start()
    ok = False
    try:
        _pump(url, options, start, size, free, hashing.jobs, writers, progress)
        ok = True
    except AgentError as exc:
        if isinstance(exc, UpdateEngineError):
            raise
        raise UpdateEngineError(f"download of {url} failed: {exc.message}",
                                DOWNLOAD_TRANSFER_ERROR) from None
    finally:
        hashing.jobs.put(None)
        writers.join()
        target.close(sync=ok and writers.error is None)
        release(free, maps)
    if writers.error is not None:
        raise UpdateEngineError(f"writing the slot {path} failed: {writers.error}", WRITE_ERROR)
    return SlotWrite(size, time.monotonic() - began, hasher.hexdigest(), start,
                     target.direct_used)


def _pump(url: str, options: DownloadOptions | None, start: int, size: int,
          free: queue.Queue, jobs: queue.Queue, writers: Writers,
          progress: Callable[[int], None]) -> None:
    stream = HttpStream(url, options)
    stream.offset = start             # the first request asks for Range: bytes=start-
    with stream:
        if stream.length is not None and stream.length != size:
            raise UpdateEngineError(f"{url} is {stream.length} bytes, the offer said {size}",
                                    SIZE_MISMATCH)
        offset = start
        while offset < size and writers.error is None:
            buffer = free.get()
            want = min(CHUNK, size - offset)
            got = stream.fill(buffer[:want])
            if got < want:
                free.put(buffer)
                raise UpdateEngineError(f"{url} ended at byte {offset + got}, the offer "
                                        f"said {size}", SIZE_MISMATCH)
            jobs.put((offset, buffer, got))
            offset += got
            progress(offset)
        if writers.error is None and stream.readinto(memoryview(bytearray(1))):
            raise UpdateEngineError(f"{url} is longer than the {size} bytes offered",
                                    SIZE_MISMATCH)
