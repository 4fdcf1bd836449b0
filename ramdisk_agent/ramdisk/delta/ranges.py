"""Disk ranges with signed digests: the aligned reads that cover them, and the check of
the bytes as those reads return them.

Both checks of a delta apply use it: the source pass (source.py: every copy range of
the disk, before anything is written) and the read-back (target.py: every written
range, after the writes). Reads are planned as aligned windows (O_DIRECT wants 4 KiB
offsets and lengths) that may cover several ranges and the holes between them; the
bytes of each window are fed, in increasing offset order, to a :class:`RangeCheck`,
which hashes the part of each range the window holds and compares the SHA-256 when
the range is complete. A range is never accepted from fewer bytes than its length: a
hole in what was fed (a short read at the end of the disk) fails it like a mismatch.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable

from ramdisk_agent.wire.errors import DeltaError

ALIGN = 4096            #: O_DIRECT offset/length/buffer alignment (512 and 4K disks)


@dataclasses.dataclass(frozen=True)
class Range:
    """``[start, start + length)`` of a disk and the SHA-256 it must hash to."""

    start: int
    length: int
    sha256: bytes

    @property
    def end(self) -> int:
        return self.start + self.length


def align_down(value: int) -> int:
    return value - value % ALIGN


def align_up(value: int) -> int:
    return -(-value // ALIGN) * ALIGN


def extents(ranges: Iterable[Range], max_gap: int) -> list[tuple[int, int]]:
    """Aligned ``[start, end)`` extents covering ``ranges``, sorted; ranges less than
    ``max_gap`` bytes apart share one extent (the hole is read and ignored)."""
    merged: list[list[int]] = []
    for item in sorted(ranges, key=lambda r: r.start):
        start, end = align_down(item.start), align_up(item.end)
        if merged and start - merged[-1][1] <= max_gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def windows(spans: Iterable[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """``spans`` cut into aligned windows of at most ``size`` bytes, in order."""
    out = []
    for start, end in spans:
        for offset in range(start, end, size):
            out.append((offset, min(end, offset + size)))
    return out


def split(ranges: list[Range], parts: int) -> list[list[Range]]:
    """``ranges`` dealt into ``parts`` lists of about equal bytes (hashing lanes)."""
    lanes: list[list[Range]] = [[] for _ in range(max(1, parts))]
    loads = [0] * len(lanes)
    for item in sorted(ranges, key=lambda r: r.start):
        lane = loads.index(min(loads))
        lanes[lane].append(item)
        loads[lane] += item.length
    return [lane for lane in lanes if lane]


class _Open:
    """A range whose first bytes have been fed: its hash so far and the next offset."""

    __slots__ = ("range", "hasher", "position")

    def __init__(self, item: Range):
        self.range, self.hasher, self.position = item, hashlib.sha256(), item.start


class RangeCheck:
    """Checks ``ranges`` against bytes fed in increasing offset order.

    ``mismatch(range)`` builds the error raised for a range whose bytes do not hash to
    its digest, or that was not fed whole.
    """

    def __init__(self, ranges: Iterable[Range], mismatch: Callable[[Range], DeltaError]):
        self._ranges = sorted(ranges, key=lambda r: r.start)
        self._mismatch = mismatch
        self._next = 0
        self._open: list[_Open] = []

    def feed(self, offset: int, data: memoryview) -> int:
        """Hash what ``data`` (the disk at ``offset``) holds of each range; the bytes
        of the ranges this completed. Raises on the first range that does not match."""
        end = offset + len(data)
        while self._next < len(self._ranges) and self._ranges[self._next].start < end:
            self._open.append(_Open(self._ranges[self._next]))
            self._next += 1
        completed, still_open = 0, []
        for item in self._open:
            if item.position < offset:          # bytes before this window never came
                raise self._mismatch(item.range)
            last = min(item.range.end, end)
            if last > item.position:
                item.hasher.update(data[item.position - offset:last - offset])
                item.position = last
            if item.position < item.range.end:
                still_open.append(item)
            elif item.hasher.digest() != item.range.sha256:
                raise self._mismatch(item.range)
            else:
                completed += item.range.length
        self._open = still_open
        return completed

    def finish(self) -> None:
        """Fail on a range that was not fed whole (the reads ended early)."""
        if self._open:
            raise self._mismatch(self._open[0].range)
        if self._next < len(self._ranges):
            raise self._mismatch(self._ranges[self._next])
