"""``metalcast_update_instances``: update clients (Omaha instances) by group, version and
status, one grouped query of ``update_instances`` at scrape time: a roll-out's progress
is ``sum by (version) (metalcast_update_instances)`` over time.

Versions are what anonymous clients report: the series are capped (the largest
``MAX_SERIES`` groups; the rest are summed under version "other"), so made-up version
strings cannot blow up the scrape or Prometheus.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from conductor.db.schema import update_instances

MAX_SERIES = 200
_t = update_instances
_GROUPED = sa.select(_t.c.group_name, _t.c.version, _t.c.status, sa.func.count().label("n")
                     ).group_by(_t.c.group_name, _t.c.version, _t.c.status
                                ).order_by(sa.desc("n"))


class UpdateInstanceCollector(Collector):
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "metalcast_update_instances", "Update clients by group, reported version and "
            "status.", labels=("group", "version", "status"))
        with self.engine.connect() as conn:
            rows = conn.execute(_GROUPED).all()
        other: Counter[tuple[str, str]] = Counter()
        for index, (group, version, status, count) in enumerate(rows):
            if index < MAX_SERIES:
                family.add_metric([group, version, status], count)
            else:
                other[group, status] += count
        for (group, status), count in sorted(other.items()):
            family.add_metric([group, "other", status], count)
        yield family
