"""Raw tar headers, checked before Python's ``tarfile`` parses them.

tarfile (Python 3.11 before 3.11.10, CVE-2024-6232) looks for ``hdrcharset`` in a
pax extended header with a regular expression that backtracks quadratically on a
run of digits, and reads a header of any declared size into memory first: a
96 KiB header held the GIL for ~14 s (16 KiB: 0.4 s, 32 KiB: 1.8 s measured on
3.11.7). This module walks the 512-byte headers itself, in the order tarfile
will, and refuses what no patch needs before tarfile sees a byte of it:

* an extended header (pax ``x``/``g``/``X``, GNU long name ``L``/``K``) larger
  than MAX_EXTENDED (a path is at most 4 KiB), or more than MAX_EXTENDED_TOTAL
  of them in one archive;
* pax records that move where members start (``size``, ``GNU.sparse.*``) and GNU
  sparse members, so the member boundaries seen here are the ones tarfile sees;
* malformed headers (bad checksum or number), more headers than the caller
  allows, and declared data beyond ``max_data`` (checked before it is read).

A gzip stream is decompressed in bounded chunks, as tarfile will read it.
"""
from __future__ import annotations

import gzip
import io
import re
import struct
import zlib
from pathlib import Path
from typing import IO

from conductor.patching.metadata import PatchFormatError

BLOCK = 512
CHUNK = 1 << 20
#: One extended header; a longer one is refused (a path is at most 4 KiB).
MAX_EXTENDED = 8 << 10
#: All extended headers of one archive together.
MAX_EXTENDED_TOTAL = 1 << 20
PAX_TYPES = (b"x", b"g", b"X")
LONGNAME_TYPES = (b"L", b"K")
#: Types tarfile reads no data blocks after, whatever their size field says.
NO_DATA_TYPES = (b"1", b"2", b"3", b"4", b"5", b"6")
#: A pax record as tarfile 3.11 matches it (anchored: linear, unlike its search).
PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
#: pax keywords that change where the next member starts or how it is read.
MOVING_KEYWORDS = (b"size", b"GNU.sparse.")


class _Reader:
    """A stream read in blocks, with ``skip`` for data nobody needs to see here."""

    def __init__(self, stream: IO[bytes] | io.BufferedIOBase, seekable: bool):
        self.stream, self.seekable = stream, seekable

    def read(self, size: int) -> bytes:
        return self.stream.read(size)

    def skip(self, size: int) -> None:
        if self.seekable:
            self.stream.seek(size, 1)
            return
        while size:
            chunk = self.stream.read(min(size, CHUNK))
            if not chunk:
                return          # truncated: tarfile fails on it later, with its own error
            size -= len(chunk)


def _number(field: bytes, what: str) -> int:
    """tarfile's ``nti``: base-256 when the high bit is set, else octal text."""
    if field[0] in (0o200, 0o377):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0o377 else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise PatchFormatError(reason=f"{what}: a tar header holds an invalid number "
                               f"{text[:20]!r}") from None


def _checksum_ok(header: bytes, what: str) -> bool:
    expected = _number(header[148:156], what)
    return expected in (256 + sum(struct.unpack_from("148B8x356B", header)),
                        256 + sum(struct.unpack_from("148b8x356b", header)))


def _pax_keywords(data: bytes) -> list[bytes]:
    """The keywords tarfile will find in a pax header (same records, same walk)."""
    keywords, pos = [], 0
    while match := PAX_RECORD.match(data, pos):
        length = int(match.group(1))
        if length == 0:
            break               # tarfile refuses the header ("invalid header")
        keywords.append(match.group(2))
        pos += length
    return keywords


def _extended(reader: _Reader, kind: bytes, size: int, what: str) -> None:
    padded = -(-size // BLOCK) * BLOCK
    data = reader.read(padded)[:size]
    if kind in PAX_TYPES:
        for keyword in _pax_keywords(data):
            if keyword.startswith(MOVING_KEYWORDS):
                raise PatchFormatError(reason=f"{what}: pax keyword {keyword[:40]!r} "
                                       "is refused")


def _walk(reader: _Reader, what: str, max_headers: int, max_data: int) -> None:
    headers = extended_total = data_total = 0
    while True:
        header = reader.read(BLOCK)
        if len(header) < BLOCK or header.count(0) == BLOCK:
            return              # end of archive (or truncated: tarfile stops there too)
        headers += 1
        if headers > max_headers:
            raise PatchFormatError(reason=f"{what}: more than {max_headers} tar headers")
        if not _checksum_ok(header, what):
            raise PatchFormatError(reason=f"{what}: a tar header has a bad checksum "
                                   "(corrupt or not a tar archive)")
        kind, size = header[156:157], _number(header[124:136], what)
        if size < 0:
            raise PatchFormatError(reason=f"{what}: a tar header declares a negative size")
        if kind == b"S":
            raise PatchFormatError(reason=f"{what}: GNU sparse members are refused")
        if kind in PAX_TYPES or kind in LONGNAME_TYPES:
            if size > MAX_EXTENDED:
                raise PatchFormatError(reason=f"{what}: an extended tar header of {size} "
                                       f"bytes (more than {MAX_EXTENDED}) is refused")
            extended_total += size
            if extended_total > MAX_EXTENDED_TOTAL:
                raise PatchFormatError(reason=f"{what}: extended tar headers exceed "
                                       f"{MAX_EXTENDED_TOTAL} bytes")
            _extended(reader, kind, size, what)
            continue
        # A V7 directory is a regular entry named "dir/": tarfile skips no data for it.
        v7_dir = kind == b"\0" and header[:100].split(b"\0", 1)[0].endswith(b"/")
        if kind in NO_DATA_TYPES or v7_dir:
            continue
        data_total += size
        if data_total > max_data:
            raise PatchFormatError(reason=f"{what}: members declare more than {max_data} "
                                   "bytes, more than allowed (a compression bomb?)")
        reader.skip(-(-size // BLOCK) * BLOCK)


def scan_file(path: Path, what: str, max_headers: int, max_data: int) -> None:
    """Check the headers of the tar file ``path`` (without tarfile); raise if refused."""
    with open(path, "rb") as stream:
        _walk(_Reader(stream, seekable=True), what, max_headers, max_data)


def scan_gzip(path: Path, what: str, max_headers: int, max_data: int) -> None:
    """Check the headers of the gzip-compressed tar ``path``, decompressing in chunks."""
    with open(path, "rb") as raw:
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                _walk(_Reader(stream, seekable=False), what, max_headers, max_data)
        except gzip.BadGzipFile as exc:
            raise PatchFormatError(reason=f"{what} is not a valid archive: {exc}") from None
        except (EOFError, zlib.error) as exc:
            raise PatchFormatError(reason=f"{what} archive is corrupt or truncated: "
                                   f"{exc}") from None


def scan_bytes(data: bytes, what: str, max_headers: int) -> None:
    """Check the headers of a small tar held in memory."""
    _walk(_Reader(io.BytesIO(data), seekable=True), what, max_headers, len(data))
