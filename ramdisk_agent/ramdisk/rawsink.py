"""Where a stream converter's raw output lands on the disk.

:class:`RawSink` takes the converter's three kinds of output for a ``DiskTarget``
(``ramdisk_agent.ramdisk.imagewrite``): slices of page-aligned download buffers go
straight to the disk (``O_DIRECT``, no copy; several in flight through
``pipeline.SliceWriters`` when given); other bytes (inflated compressed clusters,
pieces at unaligned offsets) are gathered in one aligned staging buffer and written
in large pieces; ranges that must read as zeros are zeroed without writing them where
the target allows, the way ``qemu-img convert -n`` does:

* a block device: the ``BLKZEROOUT`` ioctl (the kernel uses the device's WRITE
  ZEROES/unmap, or writes zero pages itself), on whole logical sectors;
* a regular file: ``fallocate(PUNCH_HOLE)``, else ``fallocate(ZERO_RANGE)``;
* else (or where those are refused): zeros written from an aligned buffer.

:attr:`RawSink.zero_method` says which one was used, for the log.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import stat
import struct
from typing import Any, Protocol

LOG = logging.getLogger(__name__)

ALIGN = 4096
STAGE_BYTES = 4 << 20
ZERO_PIECE = 1 << 20
BLKZEROOUT = 0x127F         # _IO(0x12, 127): zero a byte range of a block device
BLKSSZGET = 0x1268          # _IO(0x12, 104): logical sector size
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
#: errnos that mean "this way of zeroing is not available here": try the next one
UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS, errno.ENODEV}

_LIBC_FALLOCATE: Any
try:
    _LIBC_FALLOCATE = ctypes.CDLL(None, use_errno=True).fallocate
    _LIBC_FALLOCATE.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
except (OSError, AttributeError):   # no dynamic libc with fallocate: zeros are written
    _LIBC_FALLOCATE = None


class Target(Protocol):
    """What the sink needs of ``pipeline.DiskTarget``."""
    fd: int
    path: str

    def write(self, offset: int, data: memoryview) -> None: ...


class Writers(Protocol):
    """What the sink needs of ``pipeline.SliceWriters``: writes that run on their own."""

    def submit(self, offset: int, data: memoryview) -> None: ...


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _LIBC_FALLOCATE is None:
        raise OSError(errno.ENOSYS, "fallocate is not available")
    if _LIBC_FALLOCATE(fd, mode, offset, length):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _blkzeroout(fd: int, offset: int, length: int) -> None:
    fcntl.ioctl(fd, BLKZEROOUT, struct.pack("=QQ", offset, length))


#: (name, call) in the order they are tried, per kind of target
BLOCK_METHODS = [("BLKZEROOUT", _blkzeroout)]
FILE_METHODS = [
    ("fallocate(PUNCH_HOLE)", lambda fd, offset, length: _fallocate(
        fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)),
    ("fallocate(ZERO_RANGE)", lambda fd, offset, length: _fallocate(
        fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)),
]
WRITTEN = "written zeros"


def _sector_size(fd: int) -> int:
    try:
        return struct.unpack("=i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
    except OSError:
        return 512


class RawSink:
    """The converter's writes, staged writes and zero ranges onto ``target``."""

    def __init__(self, target: Target, stage_bytes: int = STAGE_BYTES,
                 writers: Writers | None = None):
        self.target, self.writers = target, writers
        self._map = mmap.mmap(-1, stage_bytes)
        self._stage = memoryview(self._map)
        self._at = self._fill = 0           # staged bytes: guest offset and count
        block = stat.S_ISBLK(os.fstat(target.fd).st_mode)
        self.granule = _sector_size(target.fd) if block else 1   # what zeroing takes
        self._methods = list(BLOCK_METHODS if block else FILE_METHODS)
        self.zero_method: str | None = None

    def write(self, offset: int, data: memoryview) -> None:
        """``data`` in page-aligned memory: straight to the disk when ``offset`` is aligned
        (by ``writers``, when given, without waiting for it)."""
        if offset % ALIGN:
            self.stage(offset, data)
        elif self.writers is not None:
            self.writers.submit(offset, data)
        else:
            self.target.write(offset, data)

    def stage(self, offset: int, data: bytes | memoryview) -> None:
        """Copy ``data`` into the staging buffer; written when it is full or not contiguous."""
        view = memoryview(data)
        while view:
            if self._fill and (offset != self._at + self._fill
                               or self._fill == len(self._stage)):
                self.flush()
            if not self._fill:
                self._at = offset
            count = min(len(view), len(self._stage) - self._fill)
            self._stage[self._fill:self._fill + count] = view[:count]
            self._fill += count
            offset, view = offset + count, view[count:]

    def zero(self, offset: int, length: int) -> None:
        """Make ``length`` bytes at ``offset`` read as zeros."""
        end = offset + length
        first = -(-offset // self.granule) * self.granule
        last = max(first, end // self.granule * self.granule)
        for edge, stop in ((offset, min(first, end)), (last, end)):
            if stop > edge:             # part sectors: written like data
                self.stage(edge, bytes(stop - edge))
        if last > first:
            self._zero_range(first, last - first)

    def _zero_range(self, offset: int, length: int) -> None:
        while self._methods:
            name, call = self._methods[0]
            try:
                call(self.target.fd, offset, length)
            except OSError as exc:
                if exc.errno not in UNSUPPORTED:
                    raise
                LOG.info("%s refused on %s (%s): trying the next way to zero", name,
                         self.target.path, exc)
                self._methods.pop(0)
                continue
            self.zero_method = name
            return
        self.zero_method = WRITTEN
        self.flush()
        zeros = mmap.mmap(-1, min(length, ZERO_PIECE))
        try:
            view = memoryview(zeros)
            for at in range(offset, offset + length, len(view)):
                self._write_unaligned(at, view[:min(len(view), offset + length - at)])
            view.release()
        finally:
            zeros.close()

    def flush(self) -> None:
        if self._fill:
            self._write_unaligned(self._at, self._stage[:self._fill])
            self._fill = 0

    def close(self, flush: bool = True) -> None:
        """Write what is staged (unless after a failure) and free the buffer."""
        try:
            if flush:
                self.flush()
        finally:
            self._stage.release()
            self._map.close()

    def _write_unaligned(self, offset: int, view: memoryview) -> None:
        """The head up to the next aligned offset buffered, the rest by the target."""
        head = min(len(view), -offset % ALIGN)
        if head:
            done = 0
            while done < head:
                done += os.pwrite(self.target.fd, view[done:head], offset + done)
        if len(view) > head:
            self.target.write(offset + head, view[head:])
