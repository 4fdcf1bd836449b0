"""What a TFTP read request asks for, checked before any byte is served.

Everything here is pure logic (no sockets), so the confinement and option rules
can be unit tested directly:

* ``parse_request`` decodes an RRQ/WRQ datagram with tftpy's packet classes (they
  are not the bottleneck: one call per transfer) and turns tftpy's errors into a
  ``TftpRefusal`` carrying the TFTP error code to answer with.
* ``confine`` maps the requested name onto a regular file inside the root.
* ``negotiate`` applies RFC 2347/2348/2349 bounds to the client's options.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpPacketTypes import TftpPacketOACK
from tftpy.TftpShared import TftpException

from conductor.errors import TftpRefusal
from conductor.netboot.limits import TftpLimits

#: TFTP error codes (RFC 1350 section 5, RFC 2347 for 8).
NOT_DEFINED, FILE_NOT_FOUND, ACCESS_VIOLATION, ILLEGAL_OPERATION = 0, 1, 2, 4
BAD_OPTIONS = 8

OPCODE_RRQ, OPCODE_WRQ, OPCODE_DATA, OPCODE_ACK, OPCODE_ERROR = 1, 2, 3, 4, 5

#: RFC 2348: valid block sizes; the server may answer a smaller one than asked.
MIN_BLKSIZE, MAX_BLKSIZE, DEFAULT_BLKSIZE = 8, 65464, 512
#: RFC 2349: the timeout option is 1..255 seconds; this server honours it only up to
#: ``TftpLimits.max_timeout`` (one silent client must not hold a transfer for minutes).
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255
#: A longer path than this is refused before touching the file system.
MAX_PATH = 1024
#: Option values longer than this are garbage (a 64-bit number has 20 digits).
MAX_VALUE_DIGITS = 20
#: netascii is converted in memory; PXE firmware always asks for octet.
MAX_NETASCII_SIZE = 16 * 1024 * 1024
MODES = ("octet", "netascii")


@dataclass
class Request:
    """A decoded RRQ: the name as sent, transfer mode and lower-cased options."""

    opcode: int
    filename: str
    mode: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class Negotiated:
    """Options the session runs with, and the OACK to send (empty: no OACK)."""

    blksize: int = DEFAULT_BLKSIZE
    timeout: float | None = None
    oack: dict[str, str] = field(default_factory=dict)


def parse_request(datagram: bytes) -> Request:
    """Decode an RRQ or WRQ; anything else or malformed is refused (code 4)."""
    if len(datagram) < 4 or datagram[1] not in (OPCODE_RRQ, OPCODE_WRQ) or datagram[0]:
        raise TftpRefusal(ILLEGAL_OPERATION, "Illegal TFTP operation")
    try:
        packet = TftpPacketFactory().parse(bytes(datagram))
        options = {str(k).lower(): str(v) for k, v in packet.options.items()}
        return Request(packet.opcode, packet.filename, packet.mode.lower(), options)
    except (TftpException, UnicodeDecodeError, ValueError) as exc:
        # tftpy raises TftpException on odd option counts / missing NULs, and
        # UnicodeDecodeError on non-ASCII names or values.
        raise TftpRefusal(ILLEGAL_OPERATION, f"Malformed request: {exc}") from None


def relative_name(filename: str) -> str:
    """The name as a clean root-relative path, or a refusal (code 2).

    A leading "/" is stripped, because PXE firmware and GRUB often ask for
    "/pxelinux.0" and mean the TFTP root (in.tftpd --secure does the same by
    chroot); so "/etc/passwd" names ROOT/etc/passwd, never the host's file.
    Empty and "." components are dropped; any ".." component is refused outright
    rather than resolved, so no name can climb out even inside the root.
    """
    if not filename or len(filename) > MAX_PATH:
        raise TftpRefusal(ACCESS_VIOLATION, "Access violation")
    if "\0" in filename:
        raise TftpRefusal(ACCESS_VIOLATION, "Access violation")
    parts = [part for part in filename.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise TftpRefusal(ACCESS_VIOLATION, "Access violation")
    return "/".join(parts)


def confine(root: Path, relative: str) -> tuple[int, int]:
    """Open ROOT/relative read-only; (fd, size) of a regular file inside the root.

    Symlinks are allowed only when their target stays inside the root (checked on
    the fully resolved path). The resolved path is opened with O_NOFOLLOW and
    O_NONBLOCK (a FIFO must not block the session) and checked with fstat, so
    what is served is the regular file that was checked.
    """
    real_root = os.path.realpath(root)
    resolved = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath([real_root, resolved]) != real_root:
        raise TftpRefusal(ACCESS_VIOLATION, "Access violation")
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TftpRefusal(FILE_NOT_FOUND, "File not found") from None
    except OSError:  # permissions, ELOOP (swapped for a symlink), ...
        raise TftpRefusal(ACCESS_VIOLATION, "Access violation") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise TftpRefusal(ACCESS_VIOLATION, "Access violation")
    return fd, info.st_size


def _number(value: str) -> int | None:
    """A decimal option value, or None for garbage (signs, spaces, huge strings)."""
    if not value.isascii() or not value.isdigit() or len(value) > MAX_VALUE_DIGITS:
        return None
    return int(value)


def negotiate(options: dict[str, str], size: int | None,
              max_timeout: int = TftpLimits.max_timeout) -> Negotiated:
    """Apply the option rules; unknown or garbage options are left out of the OACK.

    RFC 2347 lets a server ignore options it does not accept, so garbage never
    turns into an error: the client just gets the RFC 1350 defaults for it. A
    ``timeout`` above ``max_timeout`` is ignored the same way: RFC 2349 makes the
    OACK repeat the client's value, so the server cannot answer a smaller one.
    """
    result = Negotiated()
    blksize = _number(options.get("blksize", ""))
    if blksize is not None and blksize >= MIN_BLKSIZE:
        result.blksize = min(blksize, MAX_BLKSIZE)
        result.oack["blksize"] = str(result.blksize)
    timeout = _number(options.get("timeout", ""))
    if timeout is not None and MIN_TIMEOUT <= timeout <= min(max_timeout, MAX_TIMEOUT):
        result.timeout = float(timeout)
        result.oack["timeout"] = str(timeout)
    if "tsize" in options and _number(options["tsize"]) is not None and size is not None:
        result.oack["tsize"] = str(size)  # RRQ: the client sends 0, we answer the size
    return result


def oack_packet(options: dict[str, str]) -> bytes:
    """Encode an OACK with tftpy's packet class."""
    packet = TftpPacketOACK()
    packet.options = options
    return packet.encode().buffer


def error_packet(code: int, message: str) -> bytes:
    """An ERROR packet with our own message (tftpy only encodes its stock texts)."""
    return (OPCODE_ERROR.to_bytes(2, "big") + code.to_bytes(2, "big")
            + message.encode("ascii", "replace") + b"\0")


def to_netascii(data: bytes) -> bytes:
    """RFC 764 netascii: CR -> CR NUL, LF -> CR LF."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
