"""``metalcast_orchestration_strategy``: the sw-manager strategy (at most one) by type
and state, read from its row at scrape time (1 while it exists, no sample without)."""
from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from conductor.db.schema import sw_update_strategies

_STRATEGIES = sa.select(sw_update_strategies.c.name, sw_update_strategies.c.state,
                        sa.func.count()).group_by(sw_update_strategies.c.name,
                                                  sw_update_strategies.c.state)


class StrategyCollector(Collector):
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "metalcast_orchestration_strategy", "The orchestration strategy by type "
            "(sw-patch, image-update) and state.", labels=("strategy", "state"))
        with self.engine.connect() as conn:
            for name, state, count in conn.execute(_STRATEGIES):
                family.add_metric([name, state], count)
        yield family
