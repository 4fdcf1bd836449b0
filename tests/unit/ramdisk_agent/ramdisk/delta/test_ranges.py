"""Planning reads over digest-checked ranges and checking the bytes as they arrive
(ramdisk_agent/ramdisk/delta/ranges.py): every range hashed whole, in order, whatever
the windows the reads were cut into."""
from __future__ import annotations

import hashlib
import os

import pytest

from ramdisk_agent.ramdisk.delta import ranges
from ramdisk_agent.wire.errors import DeltaError

KIB = 1024


def _range(data: bytes, start: int, length: int) -> ranges.Range:
    return ranges.Range(start, length, hashlib.sha256(data[start:start + length]).digest())


def _bad(item: ranges.Range) -> DeltaError:
    return DeltaError(f"bad {item.start}-{item.end}")


def test_extents_are_aligned_sorted_and_join_small_holes():
    data = bytes(64 * KIB)
    spans = ranges.extents([_range(data, 40 * KIB, 100), _range(data, 1, 4095),
                            _range(data, 8 * KIB + 5, 10)], max_gap=4 * KIB)
    assert spans == [(0, 12 * KIB), (40 * KIB, 44 * KIB)]   # 4 KiB hole joined, 28 not
    touching = ranges.extents([_range(data, 0, 4 * KIB), _range(data, 4 * KIB, 4 * KIB)],
                              max_gap=0)
    assert touching == [(0, 8 * KIB)]


def test_windows_cut_spans_at_the_size():
    assert ranges.windows([(0, 20 * KIB), (64 * KIB, 68 * KIB)], 8 * KIB) == [
        (0, 8 * KIB), (8 * KIB, 16 * KIB), (16 * KIB, 20 * KIB), (64 * KIB, 68 * KIB)]


def test_split_deals_ranges_by_bytes():
    data = bytes(64 * KIB)
    items = [_range(data, 0, 30 * KIB), _range(data, 30 * KIB, KIB),
             _range(data, 31 * KIB, KIB), _range(data, 32 * KIB, 20 * KIB)]
    lanes = ranges.split(items, 2)
    assert sorted(sum(r.length for r in lane) for lane in lanes) == [22 * KIB, 30 * KIB]
    assert sorted(r.start for lane in lanes for r in lane) == [r.start for r in items]
    assert ranges.split(items[:1], 4) == [items[:1]]    # no empty lanes


def _feed(check: ranges.RangeCheck, data: bytes, spans) -> int:
    done = 0
    for start, end in spans:
        done += check.feed(start, memoryview(data)[start:end])
    check.finish()
    return done


def test_ranges_spanning_windows_and_overlapping_are_checked_whole():
    data = os.urandom(96 * KIB)
    items = [_range(data, 3, 50 * KIB), _range(data, 10 * KIB, 5),       # overlapping
             _range(data, 60 * KIB, 30 * KIB + 7)]
    check = ranges.RangeCheck(items, _bad)
    spans = ranges.windows(ranges.extents(items, 16 * KIB), 8 * KIB)
    assert _feed(check, data, spans) == sum(r.length for r in items)


def test_a_changed_byte_fails_its_range():
    data = bytearray(os.urandom(32 * KIB))
    items = [_range(bytes(data), offset, 4 * KIB) for offset in range(0, 32 * KIB, 4 * KIB)]
    data[17 * KIB] ^= 1
    check = ranges.RangeCheck(items, _bad)
    with pytest.raises(DeltaError, match=f"bad {16 * KIB}-{20 * KIB}"):
        _feed(check, bytes(data), [(0, 12 * KIB), (12 * KIB, 32 * KIB)])


def test_bytes_that_never_came_fail_the_range():
    data = os.urandom(32 * KIB)
    item = _range(data, 4 * KIB, 16 * KIB)
    short = ranges.RangeCheck([item], _bad)          # the disk ended inside the range
    short.feed(0, memoryview(data)[:10 * KIB])
    with pytest.raises(DeltaError, match=f"bad {4 * KIB}-{20 * KIB}"):
        short.finish()
    holed = ranges.RangeCheck([item], _bad)          # a window in the middle missing
    holed.feed(0, memoryview(data)[:8 * KIB])
    with pytest.raises(DeltaError, match="bad"):
        holed.feed(12 * KIB, memoryview(data)[12 * KIB:24 * KIB])
    never = ranges.RangeCheck([item], _bad)
    with pytest.raises(DeltaError, match="bad"):
        never.finish()
