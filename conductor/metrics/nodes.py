"""``metalcast_nodes``: nodes by provision state, power state, maintenance and fault.

One grouped query at scrape time (a handful of rows whatever the fleet's size), one
family with four labels: PromQL sums over the ones it does not need
(``sum by (provision_state) (metalcast_nodes)``).
"""
from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from conductor.db.schema import nodes

LABELS = ("provision_state", "power_state", "maintenance", "fault")
_GROUPED = sa.select(nodes.c.provision_state, nodes.c.power_state, nodes.c.maintenance,
                     nodes.c.fault, sa.func.count()).group_by(
    nodes.c.provision_state, nodes.c.power_state, nodes.c.maintenance, nodes.c.fault)


def label_values(provision: str | None, power: str | None, maintenance: bool | None,
                 fault: str | None) -> list[str]:
    """A group's labels: an unset state reads "none", no fault reads ""."""
    return [provision or "none", power or "none", "true" if maintenance else "false",
            fault or ""]


class NodeCollector(Collector):
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "metalcast_nodes", "Nodes by provision state, power state, maintenance and "
            "fault.", labels=LABELS)
        with self.engine.connect() as conn:
            for provision, power, maintenance, fault, count in conn.execute(_GROUPED):
                family.add_metric(label_values(provision, power, maintenance, fault), count)
        yield family
