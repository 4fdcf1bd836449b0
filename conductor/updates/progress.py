"""Roll-out progress over time: how many instances ran each version at each moment,
from when each instance was first seen and when it first completed each version
(conductor/db/updates.py ``version_changes``). Pure: the console draws it.

An instance counts from its first check. Its version before its first completed update
is not kept (the check-in overwrites it), so until then it counts under EARLIER when it
has completed one since, under the version it runs now when it never has.
"""
from __future__ import annotations

import bisect
import dataclasses
import datetime
import itertools
from collections import defaultdict

from conductor.updates.policy import version_key

#: The label of an instance's version before its first completed update.
EARLIER = "earlier"
Change = tuple[int, str, datetime.datetime]


def naive(value: datetime.datetime) -> datetime.datetime:
    """Naive UTC, as SQLite returns times (PostgreSQL keeps the zone)."""
    return value if value.tzinfo is None else \
        value.astimezone(datetime.UTC).replace(tzinfo=None)


@dataclasses.dataclass(frozen=True)
class Progress:
    """``counts[version][i]``: instances running ``version`` at ``times[i]``."""

    times: list[datetime.datetime]
    versions: list[str]
    counts: dict[str, list[int]]

    @property
    def total(self) -> int:
        return max((sum(c[i] for c in self.counts.values()) for i in range(len(self.times))),
                   default=0)


def _timelines(seen: list[Change], done: list[Change]
               ) -> dict[int, list[tuple[datetime.datetime, str]]]:
    completed: dict[int, list[tuple[datetime.datetime, str]]] = defaultdict(list)
    for instance_id, version, when in done:
        completed[instance_id].append((naive(when), version))
    lines = {}
    for instance_id, version, created in seen:
        steps = sorted(completed.get(instance_id, []))
        first = EARLIER if steps else version
        created = naive(created)
        lines[instance_id] = [(min(created, steps[0][0]) if steps else created, first)] + steps
    return lines


def progress(seen: list[Change], done: list[Change], now: datetime.datetime,
             buckets: int = 48) -> Progress:
    """Counts at ``buckets`` evenly spaced moments from the first instance seen to
    ``now`` (the last is ``now``): a bisect per version change of an instance, then one
    running sum per version (O(changes x log buckets + versions x buckets))."""
    lines, now = _timelines(seen, done), naive(now)
    if not lines:
        return Progress([], [], {})
    start = min(line[0][0] for line in lines.values())
    span = max((now - start).total_seconds(), 1.0)
    times = [start + datetime.timedelta(seconds=span * i / (buckets - 1))
             for i in range(buckets)]
    steps: dict[str, list[int]] = defaultdict(lambda: [0] * (buckets + 1))
    for line in lines.values():   # each version's stretch adds 1 from its first moment on
        starts = [bisect.bisect_left(times, when) for when, _ in line] + [buckets]
        for k, (_, version) in enumerate(line):
            steps[version][starts[k]] += 1
            steps[version][starts[k + 1]] -= 1
    counts = {version: list(itertools.accumulate(diff[:buckets]))
              for version, diff in steps.items()}
    versions = sorted(counts, key=lambda v: (v != EARLIER, version_key(v) if v != EARLIER
                                             else ()))
    return Progress(times, versions, {v: counts[v] for v in versions})
