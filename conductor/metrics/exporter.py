"""The appliance's registry: the recorders (built first: the store, the boot servers and
the engine get them) and then the collectors of row counts, and the text it renders."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from conductor.metrics.boot import BootMetrics, OpenSessions
from conductor.metrics.events import EngineMetrics
from conductor.metrics.nodes import NodeCollector
from conductor.metrics.orchestration import StrategyCollector
from conductor.metrics.patching import PatchCollector
from conductor.metrics.provisioning import ProvisionTimer
from conductor.metrics.updates import UpdateInstanceCollector

if TYPE_CHECKING:
    from conductor.patching.controller import PatchController


class Recorders:
    """The event recorders of one appliance, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.provisioning = ProvisionTimer(self.registry)
        self.engine = EngineMetrics(self.registry)
        self.boot = BootMetrics(self.registry)


class Exporter:
    """The recorders' registry with the row-count collectors; renders ``/metrics``."""

    #: What generate_latest() writes; every Prometheus 2.x reads it (the newer
    #: "version=1.0.0" label of prometheus_client's LATEST is unknown to 2.x).
    content_type = CONTENT_TYPE_PLAIN_0_0_4

    def __init__(self, recorders: Recorders, collectors: Iterable[Collector]):
        self.recorders = recorders
        self.registry = recorders.registry
        for collector in collectors:
            self.registry.register(collector)

    def render(self) -> bytes:
        """Every family in Prometheus' text format 0.0.4."""
        return generate_latest(self.registry)


def row_collectors(engine: sa.Engine, patching: PatchController | None,
                   open_sessions: Callable[[], dict[str, int]]) -> list[Collector]:
    """The families read at scrape time: rows of the database, sessions of the boot
    servers (``open_sessions``: protocol -> count)."""
    return [NodeCollector(engine), PatchCollector(engine, patching),
            StrategyCollector(engine), UpdateInstanceCollector(engine),
            OpenSessions(open_sessions)]
