"""Stream an image from HTTP(S) onto a disk, hashing it on the way.

The fast path (raw images) is a three-stage pipeline over a few page-aligned
``mmap`` buffers: the calling thread fills a buffer from the socket (``readinto``:
one ``recv_into(MSG_WAITALL)`` per buffer for a plain HTTP body, see
``download._SocketBody``; no copy but the kernel's), a hash thread feeds it to
``hashlib`` (which releases the GIL) and two writer threads ``pwrite`` buffers with
``O_DIRECT`` (two writes in flight, see ``pipeline.Writers``); the stages work on
different buffers at once, like ``curl | tee >(sha256sum) | dd oflag=direct``.
:class:`WriteResult` ``busy`` says how long each stage worked: the busiest one
limited the write.

What limits it is the hash, slowed by sharing the CPU. Measured with
``bench/image_write.py`` (1 GiB over loopback, 2-core VM, quiet): SHA-256 alone
1,790 MB/s (0.60 CPU s/GiB, SHA-NI); the write to a file 1,394 MB/s, the hash
stage busy 96 % of the time, so running at ~1,450 MB/s: per GiB this process used
0.97 CPU s (hash, socket copy 0.19, writers, Python), the image server 0.16 and
kernel threads 0.11, and the reader and hash threads waited on the run queue for
part of it (a second core is shared by the server, the socket copy and the disk's
own work). To a loop device 1,053 MB/s: the same stream phase, then a quarter of
the time in the final ``fsync``, which writes the loop's page-cached backing file
(``dd oflag=direct conv=fsync`` pays it too). Buffers: 6 x 4 MiB (24 MiB, within
L3); 8 or 16 MiB chunks measured no different in CPU per GiB.
``O_DIRECT`` needs aligned offsets and lengths, so the
last partial block goes through a second, buffered descriptor followed by
``fsync``. Where the kernel refuses ``O_DIRECT`` (tmpfs on old kernels, some
filesystems) the writer falls back to buffered writes and one ``fsync`` at the end;
:class:`WriteResult` says which was used.

Failure policy (a wrong checksum, a failed download or write): the first MiB of the
disk is zeroed before the error is raised, so a half-written or unverified image is
never mistaken for a bootable one (no partition table, no boot sector), and the node
can simply be deployed again.

qcow2 images are converted to raw while they download, through the same buffers and
hash stage, by ``qcow2stream.StreamConverter`` (header checks, tables, compressed
clusters) writing through ``rawsink.RawSink`` (zero ranges by BLKZEROOUT or
fallocate; data runs handed to ``pipeline.SliceWriters``, four writes in flight, so
the converter does not wait for each run's O_DIRECT write: 653 runs of a 1 GiB
half-allocated image took 1.5-3.7 s of a 2.8-4.1 s write one at a time): no scratch
copy. Where the image's layout does not allow one pass (a
table after the data it maps, beyond what may be kept in memory), the image is
downloaded again (hashed on the fly) to a scratch file, inspected with
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
import time
import urllib.parse
from dataclasses import dataclass, field

from ramdisk_agent.errors import ImageChecksumError, ImageWriteError, InvalidContent
from ramdisk_agent.ramdisk.download import DownloadOptions, HttpStream
from ramdisk_agent.ramdisk.pipeline import (
    BUFFERS,
    CHUNK,
    SLICE_WRITERS,
    WRITERS,
    DiskTarget,
    SliceWriters,
    Stage,
    Writers,
    device_size,
    hash_stored,
    pwrite_all,
    release,
)
from ramdisk_agent.ramdisk.qcow2 import NotStreamable
from ramdisk_agent.ramdisk.qcow2stream import StreamConverter
from ramdisk_agent.ramdisk.rawsink import RawSink
from ramdisk_agent.wire import checksum
from ramdisk_agent.wire.errors import ChecksumError

LOG = logging.getLogger(__name__)

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
    #: seconds each stage spent working (read, hash, write, sync): the busiest one
    #: limited the write, a stage far below ``seconds`` waited on the others
    busy: dict[str, float] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6 if self.seconds else 0.0


def stream_raw(url: str, target_path: str, hash_algo: str = "sha256",
               options: DownloadOptions | None = None, direct: bool = True,
               scratch: bool = False) -> WriteResult:
    """Download ``url`` onto ``target_path`` from byte 0, hashing on the fly.

    ``scratch`` marks a growable download file (qcow2): no size limit, no raw check.
    """
    start = time.monotonic()
    hasher = hashlib.new(hash_algo)
    target = DiskTarget(target_path, direct=direct, growable=scratch)
    maps = [mmap.mmap(-1, CHUNK) for _ in range(BUFFERS + WRITERS)]
    free: queue.Queue = queue.Queue()
    for m in maps:
        free.put(memoryview(m))
    writer = Writers(WRITERS, lambda off, buf, n: target.write(off, buf[:n]), free)
    hashing = Stage("image-hash", lambda off, buf, n: hasher.update(buf[:n]), writer.jobs,
                    free)
    writer.start()
    hashing.start()
    busy: dict[str, float] = {}
    ok = False
    try:
        with HttpStream(url, options) as stream:
            if stream.length is not None:
                target.check_fits(stream.length)
            offset = _pump(stream, free, hashing.jobs, writer, check_raw=not scratch,
                           busy=busy)
            resumes = stream.resumes
        ok = True
    finally:
        hashing.jobs.put(None)
        writer.join()
        syncing = time.monotonic()
        target.close(sync=ok and writer.error is None)
        busy.update(hash=hashing.busy, write=writer.busy, sync=time.monotonic() - syncing)
        release(free, maps)
    if writer.error is not None:
        raise ImageWriteError(f"Writing to {target_path} failed: {writer.error}")
    return WriteResult(offset, time.monotonic() - start, hasher.hexdigest(),
                       target.direct_used, resumes, busy=busy)


def _pump(stream: HttpStream, free: queue.Queue, jobs: queue.Queue,
          writer: Stage | Writers, check_raw: bool, busy: dict[str, float] | None = None) -> int:
    """Fill free buffers from ``stream`` and queue them; the byte count read.

    ``busy["read"]`` gets the seconds spent reading (not waiting for a free buffer).
    """
    offset, reading = 0, 0.0
    while writer.error is None:
        buffer = free.get()
        started = time.monotonic()
        length = stream.fill(buffer)
        reading += time.monotonic() - started
        if busy is not None:
            busy["read"] = reading
        if offset == 0 and check_raw and bytes(buffer[:4]) == QCOW2_MAGIC:
            free.put(buffer)
            raise ImageWriteError("The image is qcow2 but disk_format says raw")
        jobs.put((offset, buffer, length))
        offset += length
        if length < CHUNK:
            break
    return offset


def read_back(path: str, size: int, hash_algo: str) -> str:
    """Hash the first ``size`` bytes of ``path`` as they are on the disk (O_DIRECT)."""
    hasher = hashlib.new(hash_algo)
    hash_stored(path, size, hasher)
    return hasher.hexdigest()


def wipe_start(path: str, length: int = WIPE_BYTES) -> None:
    """Zero the start of the disk so a failed image is never booted."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            pwrite_all(fd, memoryview(bytes(min(length, device_size(path)))), 0)
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
    """Convert the qcow2 onto the disk as it downloads; where its layout does not
    allow one pass, download it again to a scratch file for qemu-img."""
    try:
        return _stream_qcow2(spec, target_path, options)
    except NotStreamable as exc:
        LOG.warning("qcow2 image %s cannot be converted while it downloads (%s): "
                    "downloading it to a scratch file for qemu-img instead", spec.url, exc)
    return _write_qcow2_scratch(spec, target_path, options, scratch_dir)


def _stream_qcow2(spec: ImageSpec, target_path: str,
                  options: DownloadOptions | None) -> WriteResult:
    """Read, hash and convert (qcow2stream) on three threads; checksum before success."""
    start = time.monotonic()
    hasher = hashlib.new(spec.hash_algo)
    target = DiskTarget(target_path)
    free: queue.Queue = queue.Queue()
    writers = SliceWriters(SLICE_WRITERS, target, free)
    sink = RawSink(target, writers=writers)
    ok = False
    try:
        with HttpStream(spec.url, options) as stream:
            converter = StreamConverter(sink, target.capacity, stream.length, disk=target_path)
            busy = _convert_stream(stream, converter, hasher, free, writers, target_path)
            resumes = stream.resumes
        size = converter.finish()
        _check_digest(spec, hasher.hexdigest())
        syncing = time.monotonic()
        sink.close()
        ok = True
    finally:
        if not ok:
            sink.close(flush=False)
        target.close(sync=ok)
    busy["sync"] = time.monotonic() - syncing
    LOG.info("qcow2 %s streamed to %s; zero ranges by %s", spec.url, target_path,
             sink.zero_method or "none needed")
    return WriteResult(size, time.monotonic() - start, hasher.hexdigest(),
                       target.direct_used, resumes, busy=busy)


def _convert_stream(stream: HttpStream, converter: StreamConverter, hasher,
                    free: queue.Queue, writers: SliceWriters,
                    target_path: str) -> dict[str, float]:
    """The raw path's buffers and stages, with the converter as the last stage; its data
    runs written by ``writers``, which free each buffer once its runs are on the disk
    (and have all finished when this returns); the stages' busy seconds."""
    busy: dict[str, float] = {}
    maps = [mmap.mmap(-1, CHUNK) for _ in range(BUFFERS + WRITERS)]
    for m in maps:
        free.put(memoryview(m))
    convert = Stage("qcow2-convert", lambda off, buf, n: converter.feed(buf[:n]), None,
                    writers)
    hashing = Stage("image-hash", lambda off, buf, n: hasher.update(buf[:n]), convert.jobs,
                    free)
    writers.start()
    convert.start()
    hashing.start()
    try:
        _pump(stream, free, hashing.jobs, convert, check_raw=False, busy=busy)
    finally:
        hashing.jobs.put(None)
        convert.join()
        writers.join()          # before the disk is synced, or wiped after a failure
        release(free, maps)
    error = convert.error or writers.error
    if isinstance(error, OSError):
        raise ImageWriteError(f"Writing to {target_path} failed: {error}")
    if error is not None:
        raise error
    busy.update(hash=hashing.busy, convert=convert.busy,
                write=writers.busy / SLICE_WRITERS)
    return busy


def _write_qcow2_scratch(spec: ImageSpec, target_path: str, options: DownloadOptions | None,
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
