"""Convert a qcow2 image to raw while it downloads: one forward pass, no scratch copy.

``qemu-img convert -O qcow2`` writes the header, the refcount table, the L1 table and
then each L2 table just before the data clusters it maps, so every table arrives before
the bytes it describes. :class:`StreamConverter` is fed the image's bytes in order
(any piece sizes). It reads the header, then the L1 table and the L2 tables as they
pass, sends each data cluster (or inflated compressed cluster) to its guest offset,
and has every range the tables leave unallocated or mark zero zeroed: the disk then
reads exactly as ``qemu-img convert -O raw`` of the image.

Bytes no known table maps when they pass (refcount blocks, or data whose table comes
later) are kept, oldest dropped first, up to ``retain_limit`` bytes; a table that
points back at bytes no longer kept raises :class:`NotStreamable`, and so does a
layout with more than ``max_pending`` ranges waiting at once: the caller falls back to
a scratch file and qemu-img. The converter does no I/O itself: its :class:`Sink`
writes and zeroes (``ramdisk_agent.ramdisk.rawsink`` on a disk, a bytearray in tests).
"""
from __future__ import annotations

import bisect
import heapq
import itertools
import struct
from typing import Protocol

from ramdisk_agent.errors import ImageWriteError
from ramdisk_agent.ramdisk.qcow2 import (
    HEADER_BYTES,
    Header,
    NotStreamable,
    Run,
    decode_l1,
    decode_l2,
    decompress,
    parse_header,
)

ALIGN = 4096                # a view this far into a page-aligned chunk may go O_DIRECT
RETAIN_LIMIT = 16 << 20     # unclaimed bytes kept for tables that come after their data
MAX_PENDING = 32768         # ranges waiting at once (qemu-img's layout: one L2's worth)
TABLE_PIECE = 64 << 10      # table bytes decoded at a time
KEPT_PIECE = 1 << 20        # kept bytes copied out at a time


class Sink(Protocol):
    """Where the raw disk image goes."""

    def write(self, offset: int, data: memoryview) -> None:
        """``data`` lies in page-aligned memory (a slice of a chunk fed in)."""

    def stage(self, offset: int, data: bytes | memoryview) -> None:
        """Any other bytes: copied before the call returns."""

    def zero(self, offset: int, length: int) -> None:
        """The range must read as zeros."""


class _Region:
    """A byte range of the image the converter waits for; fed in order by ``take``."""
    __slots__ = ("start", "end")

    def __init__(self, start: int, end: int):
        self.start, self.end = start, end

    def take(self, offset: int, data: bytes | memoryview, direct: bool) -> None:
        raise NotImplementedError


class _Table(_Region):
    """An L1 or L2 table: entries decoded as they arrive, pieces split anywhere.

    ``parse(base, index, words)`` gets the table's guest ``base`` (L2), the index of
    the first entry and the entries as 64-bit words, at most :data:`TABLE_PIECE` bytes
    of them at a time (a big table never becomes one big tuple).
    """
    __slots__ = ("entry_size", "parse", "base", "carry", "index")

    def __init__(self, start: int, end: int, entry_size: int, parse, base: int = 0):
        super().__init__(start, end)
        self.entry_size, self.parse, self.base = entry_size, parse, base
        self.carry, self.index = b"", 0

    def take(self, offset: int, data: bytes | memoryview, direct: bool) -> None:
        if self.carry:
            data = self.carry + bytes(data)
        usable = len(data) - len(data) % self.entry_size
        self.carry = bytes(data[usable:])
        for at in range(0, usable, TABLE_PIECE):
            piece = data[at:min(usable, at + TABLE_PIECE)]
            self.parse(self.base, self.index, struct.unpack_from(f">{len(piece) // 8}Q",
                                                                 piece))
            self.index += len(piece) // self.entry_size


class _Data(_Region):
    """Data clusters contiguous on the host and the guest."""
    __slots__ = ("guest", "sink")

    def __init__(self, run: Run, sink: Sink):
        super().__init__(run.host, run.host + run.length)
        self.guest, self.sink = run.guest, sink

    def take(self, offset: int, data: bytes | memoryview, direct: bool) -> None:
        at = self.guest + offset - self.start
        if direct and isinstance(data, memoryview):
            self.sink.write(at, data)
        else:
            self.sink.stage(at, data)


class _Compressed(_Region):
    """One compressed cluster: gathered, then inflated and staged."""
    __slots__ = ("run", "header", "sink", "data")

    def __init__(self, run: Run, end: int, header: Header, sink: Sink):
        super().__init__(run.host, end)
        self.run, self.header, self.sink, self.data = run, header, sink, bytearray()

    def take(self, offset: int, data: bytes | memoryview, direct: bool) -> None:
        self.data += data
        if offset + len(data) >= self.end:
            self.complete()

    def complete(self) -> None:
        self.sink.stage(self.run.guest, decompress(self.header, self.run, bytes(self.data)))
        self.data = bytearray()


class _Kept:
    """Bytes no region claimed when they passed, in stream order, at most ``limit``."""

    def __init__(self, limit: int):
        self.limit, self.size = limit, 0
        self.starts: list[int] = []
        self.blocks: list[bytearray] = []

    def add(self, first: int, data: memoryview, claimed: list[tuple[int, int]]) -> None:
        at, end = first, first + len(data)
        for start, stop in sorted(claimed) + [(end, end)]:
            if start > at and self.limit:
                self._append(at, data[at - first:start - first])
            at = max(at, stop)

    def _append(self, offset: int, piece: memoryview) -> None:
        if self.blocks and self.starts[-1] + len(self.blocks[-1]) == offset:
            self.blocks[-1] += piece
        else:
            self.starts.append(offset)
            self.blocks.append(bytearray(piece))
        self.size += len(piece)
        while self.size > self.limit:           # drop the oldest bytes first
            excess = self.size - self.limit
            if len(self.blocks[0]) <= excess:
                self.size -= len(self.blocks.pop(0))
                self.starts.pop(0)
            else:
                del self.blocks[0][:excess]
                self.starts[0] += excess
                self.size -= excess

    def get(self, start: int, stop: int) -> bytes:
        i = bisect.bisect_right(self.starts, start) - 1
        if i >= 0 and stop <= self.starts[i] + len(self.blocks[i]):
            return bytes(self.blocks[i][start - self.starts[i]:stop - self.starts[i]])
        raise NotStreamable(
            f"bytes {start}-{stop} of the image are mapped by a table that comes after "
            f"them, and they are no longer kept (at most {self.limit} bytes are)")


class StreamConverter:
    """Fed a qcow2 image's bytes in order, sends its raw content to ``sink``.

    ``capacity`` is the disk's size (the virtual size must fit), ``length`` the image's
    size if known (tables pointing past it are refused at once; otherwise at the end).
    """

    def __init__(self, sink: Sink, capacity: float, length: int | None = None,
                 retain_limit: int = RETAIN_LIMIT, max_pending: int = MAX_PENDING,
                 disk: str = "the disk"):
        self.sink, self.capacity, self.length, self.disk = sink, capacity, length, disk
        self.max_pending = max_pending
        self.header: Header | None = None
        self.position = 0                   # stream bytes handed to regions so far
        self._head = bytearray()            # the start, while shorter than a header
        self._heap: list[tuple[int, int, _Region]] = []
        self._order = itertools.count()     # ties in the heap: first registered first
        self._kept = _Kept(retain_limit)
        self._zeros = (0, 0)                # zero range not yet sent: (offset, end)

    def feed(self, data: memoryview) -> None:
        """The next bytes of the image; slices of ``data`` are not kept after return.

        ``data`` should start in page-aligned memory (an mmap), so that aligned data
        clusters can be written from it directly.
        """
        if self.header is None:
            if self._head or len(data) < HEADER_BYTES:
                self._head += data
                if len(self._head) < HEADER_BYTES:
                    return
                self._start(bytes(self._head[:HEADER_BYTES]))
                data, self._head = memoryview(bytes(self._head)), bytearray()
                self._dispatch(data, direct=False)
                return
            self._start(bytes(data[:HEADER_BYTES]))
        self._dispatch(data, direct=True)

    def finish(self) -> int:
        """The stream ended: check nothing is missing, send the last zeros; virtual size."""
        if self.header is None:
            self._start(bytes(self._head))
            self._dispatch(memoryview(bytes(self._head)), direct=False)
        for at, _, region in sorted(self._heap, key=lambda item: item[:2]):
            if isinstance(region, _Compressed) and region.start < self.position:
                region.complete()       # qemu reads past the end of the file as zeros
                continue
            raise ImageWriteError(
                f"The qcow2 image ends at byte {self.position} but its tables refer to "
                f"bytes from {at} on: the download is truncated or the image corrupt")
        self._heap.clear()
        self._flush_zeros()
        assert self.header is not None
        return self.header.size

    def _start(self, head: bytes) -> None:
        header = self.header = parse_header(head)
        if header.size > self.capacity:
            raise ImageWriteError(f"Image does not fit on {self.disk}: virtual size "
                                  f"{header.size}, the disk has {self.capacity} bytes")
        if header.l1_needed:
            self._expect(_Table(header.l1_offset, header.l1_offset + header.l1_needed * 8,
                                8, self._parse_l1), "L1 table")

    def _parse_l1(self, _: int, first: int, entries: tuple[int, ...]) -> None:
        header = self.header
        assert header is not None
        for guest, table in decode_l1(header, first, entries):
            span = min(header.l2_coverage, header.size - guest)
            if not table:
                self._zero(guest, span)
                continue
            count = -(-span // header.cluster_size)
            self._expect(_Table(table, table + count * header.entry_size, header.entry_size,
                                self._parse_l2, guest), "L2 table")

    def _parse_l2(self, base: int, first: int, entries: tuple[int, ...]) -> None:
        header = self.header
        assert header is not None
        for run in decode_l2(header, base + first * header.cluster_size, entries):
            if run.kind == "zero":
                self._zero(run.guest, run.length)
            elif run.kind == "data":
                self._expect(_Data(run, self.sink), "data cluster")
            else:   # the range may pass the end of the file: qemu reads zeros there
                end = run.host + run.csize
                if self.length is not None and run.host < self.length:
                    end = min(end, self.length)
                self._expect(_Compressed(run, end, header, self.sink), "compressed cluster")

    def _expect(self, region: _Region, what: str) -> None:
        if self.length is not None and region.end > self.length:
            raise ImageWriteError(f"qcow2 {what} at byte {region.start} lies beyond the "
                                  f"end of the image ({self.length} bytes): the image is "
                                  "truncated or corrupt")
        if len(self._heap) >= self.max_pending:
            raise NotStreamable(f"more than {self.max_pending} ranges of the image are "
                                "mapped ahead of where the download is")
        heapq.heappush(self._heap, (region.start, next(self._order), region))

    def _dispatch(self, data: memoryview, direct: bool) -> None:
        """Hand the bytes at ``position`` to every region they belong to, in order."""
        first, end = self.position, self.position + len(data)
        heap, claimed = self._heap, []
        while heap and heap[0][0] < end:
            at, _, region = heapq.heappop(heap)
            upto = min(region.end, first)
            while at < upto:            # a table pointed back at bytes already passed
                piece = min(upto, at + KEPT_PIECE)
                region.take(at, self._kept.get(at, piece), False)
                at = piece
            stop = min(region.end, end)
            if at < stop:
                region.take(at, data[at - first:stop - first],
                            direct and (at - first) % ALIGN == 0)
                claimed.append((at, stop))
            if region.end > end:
                heapq.heappush(heap, (end, next(self._order), region))
        self._kept.add(first, data, claimed)
        self.position = end

    def _zero(self, offset: int, length: int) -> None:
        if offset != self._zeros[1]:
            self._flush_zeros()
            self._zeros = (offset, offset)
        self._zeros = (self._zeros[0], offset + length)

    def _flush_zeros(self) -> None:
        start, end = self._zeros
        if end > start:
            self.sink.zero(start, end - start)
        self._zeros = (end, end)
