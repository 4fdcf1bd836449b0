"""Config drive: a ``config-2`` GPT partition at the end of the disk.

The ``configdrive`` deploy argument is what Ironic sends: a base64 string of a
gzipped ISO9660 image, or an http(s) URL serving that string (or the raw/gzipped
ISO). After the whole-disk image is written, ``sgdisk`` moves the backup GPT to the
real end of the disk and adds partition ``config-2`` (at least 64 MiB) in the free
space at the end, in one call; the ISO is then written at the partition's first
sector with ``pwrite`` (the host kernel in the lab does not parse partitions, so no
partition device is needed). Only GPT images are supported; an MBR image gets a
clear error rather than a silently missing config drive.
"""
from __future__ import annotations

import base64
import binascii
import fcntl
import gzip
import logging
import os
import subprocess

from ramdisk_agent import gpt
from ramdisk_agent.errors import AgentError, InvalidContent
from ramdisk_agent.ramdisk.download import DownloadOptions, HttpStream

LOG = logging.getLogger(__name__)

MIB = 1 << 20
MIN_PARTITION = 64 * MIB
MAX_CONFIGDRIVE = 64 * MIB
LABEL = "config-2"
BLKRRPART = 0x125F


def decode(value, options: DownloadOptions | None = None) -> bytes:
    """The ISO bytes from Ironic's configdrive value (base64 gzip, or a URL)."""
    if not isinstance(value, str) or not value:
        raise InvalidContent("configdrive must be a base64 string or an http(s) URL")
    data = _fetch(value, options) if value.startswith(("http://", "https://")) else value.encode()
    if not data.startswith(b"\x1f\x8b") and not _looks_like_iso(data):
        try:
            data = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise InvalidContent(f"configdrive is not valid base64: {exc}") from None
    if data.startswith(b"\x1f\x8b"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InvalidContent(f"configdrive is not valid gzip: {exc}") from None
    if len(data) > MAX_CONFIGDRIVE:
        raise InvalidContent(f"configdrive is {len(data)} bytes; the limit is {MAX_CONFIGDRIVE}")
    return data


def _looks_like_iso(data: bytes) -> bool:
    return data[32769:32774] == b"CD001"


def _fetch(url: str, options: DownloadOptions | None) -> bytes:
    chunks, total = [], 0
    buffer = bytearray(MIB)
    with HttpStream(url, options) as stream:
        while got := stream.readinto(memoryview(buffer)):
            chunks.append(bytes(buffer[:got]))
            total += got
            if total > 2 * MAX_CONFIGDRIVE:
                raise InvalidContent(f"configdrive at {url} is too large")
    return b"".join(chunks)


def write(disk: str, value, options: DownloadOptions | None = None) -> int:
    """Add the config-2 partition to ``disk`` and write the ISO; its partition number."""
    data = decode(value, options)
    table = gpt.read_table(disk)
    if table.kind != "gpt":
        raise AgentError(f"Config drive needs a GPT whole-disk image; {disk} has {table.kind}")
    used = {p.number for p in table.partitions}
    number = next(n for n in range(1, 129) if n not in used)
    size = max(MIN_PARTITION, -(-len(data) // MIB) * MIB)
    _sgdisk(["-e", "-n", f"{number}:-{size // MIB}M:0", "-c", f"{number}:{LABEL}",
             "-t", f"{number}:0700", disk])
    part = next(p for p in gpt.read_table(disk).partitions if p.number == number)
    fd = os.open(disk, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, data, part.first_lba * gpt.SECTOR)
        os.fsync(fd)
        try:
            fcntl.ioctl(fd, BLKRRPART)   # let a real kernel see the new partition
        except OSError:
            pass
    finally:
        os.close(fd)
    LOG.info("Config drive (%s bytes) written to %s partition %s at sector %s",
             len(data), disk, number, part.first_lba)
    return number


def _sgdisk(args: list[str]) -> None:
    try:
        done = subprocess.run(["sgdisk", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise AgentError("sgdisk is not installed (Debian package gdisk)") from None
    if done.returncode:
        raise AgentError(f"sgdisk {' '.join(args)} failed: "
                         f"{(done.stderr or done.stdout).strip()}")
