"""Roll-out progress: instances per version at evenly spaced moments, and its SVG."""
from __future__ import annotations

import datetime

from api.console.chart import rollout_svg
from conductor.updates.progress import EARLIER, progress

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def test_versions_move_across_the_fleet_over_time():
    seen = [(1, "2.0.0", at(0)), (2, "2.0.0", at(0)), (3, "1.0.0", at(50)),
            (4, "10.0.0", at(0))]
    done = [(1, "2.0.0", at(40)), (2, "2.0.0", at(80)),
            (4, "2.0.0", at(20)), (4, "10.0.0", at(60))]
    data = progress(seen, done, at(100), buckets=11)    # every 10 s
    assert data.versions == [EARLIER, "1.0.0", "2.0.0", "10.0.0"]   # numeric order
    assert data.counts[EARLIER] == [3, 3, 2, 2, 1, 1, 1, 1, 0, 0, 0]
    assert data.counts["1.0.0"] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert data.counts["2.0.0"] == [0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 2]
    assert data.counts["10.0.0"] == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert data.total == 4 and data.times[-1] == at(100)


def test_zone_aware_times_count_as_utc_and_no_instance_draws_no_chart():
    aware = at(0).replace(tzinfo=datetime.UTC)
    data = progress([(1, "1.0.0", at(0))], [], aware + datetime.timedelta(seconds=5), 3)
    assert data.counts == {"1.0.0": [1, 1, 1]}
    assert b"No instance" in str(rollout_svg(progress([], [], aware))).encode()


def test_version_names_are_escaped_in_the_chart():
    data = progress([(1, "<script>x", at(0))], [], at(10), 4)
    svg = str(rollout_svg(data))
    assert "<script>" not in svg and "&lt;script&gt;x" in svg
    assert svg.count("<polygon") == 1
