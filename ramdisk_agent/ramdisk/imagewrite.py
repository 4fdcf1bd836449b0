"""Stream an image from HTTP(S) onto a disk, hashing it on the way.

The fast path (raw images) is a three-stage pipeline over a few page-aligned
``mmap`` buffers: the calling thread fills a buffer from the socket (``readinto``,
no copy), a hash thread feeds it to ``hashlib`` (which releases the GIL) and a
writer thread ``pwrite``\\ s it with ``O_DIRECT``; the stages work on different
buffers at once, like ``curl | tee >(sha256sum) | dd oflag=direct``.
``O_DIRECT`` needs aligned offsets and lengths, so the
last partial block goes through a second, buffered descriptor followed by
``fsync``. Where the kernel refuses ``O_DIRECT`` (tmpfs on old kernels, some
filesystems) the writer falls back to buffered writes and one ``fsync`` at the end;
:class:`WriteResult` says which was used.

Failure policy (a wrong checksum, a failed download or write): the first MiB of the
disk is zeroed before the error is raised, so a half-written or unverified image is
never mistaken for a bootable one (no partition table, no boot sector), and the node
can simply be deployed again.

qcow2 images are downloaded (hashed on the fly) to a scratch file, inspected with
``qemu-img info`` (no backing file, format really qcow2, fits on the disk) and
converted with ``qemu-img convert -O raw -t none -n`` onto the disk.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import queue
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass

from ramdisk_agent.errors import ImageChecksumError, ImageWriteError, InvalidContent
from ramdisk_agent.ramdisk.download import DownloadOptions, HttpStream
from ramdisk_agent.wire import checksum
from ramdisk_agent.wire.errors import ChecksumError

LOG = logging.getLogger(__name__)

ALIGN = 4096                 # O_DIRECT alignment valid for 512 and 4096 byte sectors
CHUNK = 4 << 20              # 4 MiB: the size dd and the lab measurements use
BUFFERS = 4                  # in flight between the reader and the writer
WIPE_BYTES = 1 << 20
QCOW2_MAGIC = b"QFI\xfb"


@dataclass
class ImageSpec:
    """What ``write_image`` needs from Ironic's ``image_info``."""
    url: str
    disk_format: str
    hash_algo: str
    hash_value: str

    @classmethod
    def from_image_info(cls, info: dict) -> ImageSpec:
        urls = info.get("urls") or []
        if not urls or not isinstance(urls, list):
            raise InvalidContent("image_info.urls must list at least one image URL")
        first = urllib.parse.urlsplit(urls[0]) if isinstance(urls[0], str) else None
        if first is None or first.scheme not in ("http", "https") or not first.netloc:
            # Only the scheme: an image URL may carry a credential (a temp URL signature).
            got = f"a {first.scheme or 'relative'} URL" if first else type(urls[0]).__name__
            raise InvalidContent(f"image_info.urls[0] must be an http(s) URL, not {got}")
        if info.get("image_type") == "partition":
            raise InvalidContent("Partition images are not supported; use a whole-disk image")
        try:   # the conductor's policy too (ramdisk_agent/wire/checksum.py)
            expected = checksum.parse(info.get("os_hash_algo"), info.get("os_hash_value"),
                                      info.get("checksum"))
        except ChecksumError as exc:
            raise InvalidContent(f"image_info: {exc}") from None
        fmt = info.get("disk_format") or "raw"
        fmt = fmt.lower() if isinstance(fmt, str) else fmt
        if fmt not in ("raw", "qcow2"):
            raise InvalidContent(f"disk_format {fmt!r} is not supported (raw, qcow2)")
        return cls(url=urls[0], disk_format=fmt, hash_algo=expected.algo,
                   hash_value=expected.value)


@dataclass
class WriteResult:
    """What was written, how fast, and how."""
    size: int
    seconds: float
    digest: str
    direct_io: bool
    resumes: int = 0
    verified: bool = False

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6 if self.seconds else 0.0


def device_size(path: str) -> int:
    """Capacity of a block device or the current size of a disk image file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


class DiskTarget:
    """The disk opened for aligned direct writes, plus a buffered fd for the tail."""

    def __init__(self, path: str, direct: bool = True, growable: bool = False):
        if not os.path.exists(path):
            raise ImageWriteError(f"Target disk {path} does not exist")
        self.path = path
        self.capacity = float("inf") if growable else device_size(path)
        self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        self.direct_fd = self._open_direct() if direct else None
        self.direct_used = self.direct_fd is not None

    def _open_direct(self) -> int | None:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_DIRECT)
        except OSError as exc:
            LOG.warning("O_DIRECT unsupported on %s (%s): buffered writes + fsync",
                        self.path, exc)
            return None

    def check_fits(self, end: int) -> None:
        if end > self.capacity:
            raise ImageWriteError(f"Image does not fit on {self.path}: needs at least {end} "
                                  f"bytes, the disk has {self.capacity}")

    def write(self, offset: int, data: memoryview) -> None:
        """Write ``data`` at ``offset``: aligned part direct, the tail buffered."""
        self.check_fits(offset + len(data))
        aligned = len(data) - len(data) % ALIGN if self.direct_fd is not None else 0
        if aligned:
            assert self.direct_fd is not None   # aligned > 0 only with O_DIRECT
            try:
                _pwrite_all(self.direct_fd, data[:aligned], offset)
            except OSError as exc:
                if exc.errno != 22:     # EINVAL: the filesystem rejects O_DIRECT I/O
                    raise
                LOG.warning("O_DIRECT write refused on %s; buffered from now on", self.path)
                os.close(self.direct_fd)
                self.direct_fd, aligned, self.direct_used = None, 0, False
        if aligned < len(data):
            _pwrite_all(self.fd, data[aligned:], offset + aligned)

    def close(self, sync: bool = True) -> None:
        if sync:
            os.fsync(self.fd)
        for fd in (self.direct_fd, self.fd):
            if fd is not None:
                os.close(fd)
        self.direct_fd = None


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _fill(stream: HttpStream, buffer: memoryview) -> int:
    """Read until ``buffer`` is full or the body ends."""
    filled = 0
    while filled < len(buffer):
        got = stream.readinto(buffer[filled:])
        if not got:
            break
        filled += got
    return filled


class _Stage(threading.Thread):
    """One pipeline stage: ``work(offset, buffer, length)`` per job, then pass it on.

    The job goes to ``forward`` (the next stage's queue) or, for the last stage, its
    buffer goes back to ``free``. After an error the stage keeps passing jobs on
    without working, so no buffer is lost and the reader sees ``error``.
    """

    def __init__(self, name: str, work, forward: queue.Queue | None, free: queue.Queue):
        super().__init__(name=name, daemon=True)
        self.work, self.forward, self.free = work, forward, free
        self.jobs: queue.Queue = queue.Queue()
        self.error: BaseException | None = None

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is None:
                try:
                    self.work(*job)
                except BaseException as exc:  # noqa: BLE001 - reported to the reader thread
                    self.error = exc
            if self.forward is not None:
                self.forward.put(job)
            else:
                self.free.put(job[1])
        if self.forward is not None:
            self.forward.put(None)


def stream_raw(url: str, target_path: str, hash_algo: str = "sha256",
               options: DownloadOptions | None = None, direct: bool = True,
               scratch: bool = False) -> WriteResult:
    """Download ``url`` onto ``target_path`` from byte 0, hashing on the fly.

    ``scratch`` marks a growable download file (qcow2): no size limit, no raw check.
    """
    start = time.monotonic()
    hasher = hashlib.new(hash_algo)
    target = DiskTarget(target_path, direct=direct, growable=scratch)
    maps = [mmap.mmap(-1, CHUNK) for _ in range(BUFFERS)]
    free: queue.Queue = queue.Queue()
    for m in maps:
        free.put(memoryview(m))
    writer = _Stage("image-writer", lambda off, buf, n: target.write(off, buf[:n]), None, free)
    hashing = _Stage("image-hash", lambda off, buf, n: hasher.update(buf[:n]), writer.jobs,
                     free)
    writer.start()
    hashing.start()
    ok = False
    try:
        with HttpStream(url, options) as stream:
            if stream.length is not None:
                target.check_fits(stream.length)
            offset = _pump(stream, free, hashing.jobs, writer, check_raw=not scratch)
            resumes = stream.resumes
        ok = True
    finally:
        hashing.jobs.put(None)
        writer.join()
        target.close(sync=ok and writer.error is None)
        _release(free, maps)
    if writer.error is not None:
        raise ImageWriteError(f"Writing to {target_path} failed: {writer.error}")
    return WriteResult(offset, time.monotonic() - start, hasher.hexdigest(),
                       target.direct_used, resumes)


def _pump(stream: HttpStream, free: queue.Queue, jobs: queue.Queue, writer: _Stage,
          check_raw: bool) -> int:
    """Fill free buffers from ``stream`` and queue them; the byte count read."""
    offset = 0
    while writer.error is None:
        buffer = free.get()
        length = _fill(stream, buffer)
        if offset == 0 and check_raw and bytes(buffer[:4]) == QCOW2_MAGIC:
            free.put(buffer)
            raise ImageWriteError("The image is qcow2 but disk_format says raw")
        jobs.put((offset, buffer, length))
        offset += length
        if length < CHUNK:
            break
    return offset


def _release(free: queue.Queue, maps: list[mmap.mmap]) -> None:
    while not free.empty():
        free.get_nowait().release()
    for m in maps:      # a buffer still referenced after an error is left to the GC
        try:
            m.close()
        except BufferError:
            pass


def read_back(path: str, size: int, hash_algo: str) -> str:
    """Hash the first ``size`` bytes of ``path`` as they are on the disk (O_DIRECT)."""
    hasher = hashlib.new(hash_algo)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
    except OSError:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    buffer = mmap.mmap(-1, CHUNK)
    view = memoryview(buffer)
    try:
        offset = 0
        while offset < size:
            got = os.preadv(fd, [view], offset)
            if not got:
                break
            hasher.update(view[:min(got, size - offset)])
            offset += got
    finally:
        view.release()
        buffer.close()
        os.close(fd)
    return hasher.hexdigest()


def wipe_start(path: str, length: int = WIPE_BYTES) -> None:
    """Zero the start of the disk so a failed image is never booted."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            _pwrite_all(fd, memoryview(bytes(min(length, device_size(path)))), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        LOG.error("Could not wipe the start of %s after a failed write: %s", path, exc)


def write_image(spec: ImageSpec, target_path: str, options: DownloadOptions | None = None,
                verify: bool = False, scratch_dir: str | None = None) -> WriteResult:
    """Write ``spec`` to ``target_path``; checksum checked; disk wiped on any failure."""
    try:
        if spec.disk_format == "qcow2":
            result = _write_qcow2(spec, target_path, options, scratch_dir)
        else:
            result = stream_raw(spec.url, target_path, spec.hash_algo, options)
            _check_digest(spec, result.digest)
        if verify and spec.disk_format == "raw":
            again = read_back(target_path, result.size, spec.hash_algo)
            if again != spec.hash_value:
                raise ImageWriteError(f"Read-back verification of {target_path} failed: "
                                      f"{spec.hash_algo} {again} != {spec.hash_value}")
            result.verified = True
    except BaseException:
        wipe_start(target_path)
        raise
    LOG.info("Wrote %s (%s bytes, %s) to %s in %.1fs (%.0f MB/s, direct=%s, resumes=%s)",
             spec.url, result.size, spec.disk_format, target_path, result.seconds,
             result.mb_per_s, result.direct_io, result.resumes)
    return result


def _check_digest(spec: ImageSpec, digest: str) -> None:
    if digest != spec.hash_value:
        raise ImageChecksumError(
            f"Image checksum mismatch for {spec.url}: {spec.hash_algo} of the downloaded "
            f"data is {digest}, expected {spec.hash_value}")


def _write_qcow2(spec: ImageSpec, target_path: str, options: DownloadOptions | None,
                 scratch_dir: str | None) -> WriteResult:
    """Download to a scratch file (hashed), inspect, then qemu-img convert to raw."""
    start = time.monotonic()
    capacity = device_size(target_path)
    with tempfile.TemporaryDirectory(prefix="metalcast-image-", dir=scratch_dir) as tmp:
        scratch = os.path.join(tmp, "image.qcow2")
        with open(scratch, "wb"):
            pass
        fetched = stream_raw(spec.url, scratch, spec.hash_algo, options, direct=False,
                             scratch=True)
        _check_digest(spec, fetched.digest)
        virtual_size = _inspect_qcow2(scratch)
        if virtual_size > capacity:
            raise ImageWriteError(f"Image does not fit on {target_path}: virtual size "
                                  f"{virtual_size}, the disk has {capacity} bytes")
        _run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-t", "none", "-n",
              scratch, target_path])
    return WriteResult(virtual_size, time.monotonic() - start, fetched.digest, True,
                       fetched.resumes)


def _inspect_qcow2(path: str) -> int:
    """Virtual size of a safe qcow2 file (no backing or external data file)."""
    info = json.loads(_run(["qemu-img", "info", "--output=json", path]))
    if info.get("format") != "qcow2":
        raise ImageWriteError(f"disk_format is qcow2 but the image is {info.get('format')}")
    if info.get("backing-filename") or info.get("format-specific", {}).get(
            "data", {}).get("data-file"):
        raise ImageWriteError("qcow2 images with a backing or data file are refused")
    return int(info["virtual-size"])


def _run(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise ImageWriteError(
            f"{cmd[0]} is not installed (Debian package qemu-utils)") from None
    if done.returncode:
        raise ImageWriteError(f"{' '.join(cmd[:2])} failed: {done.stderr.strip()}")
    return done.stdout
