"""Patch hosts by state (a grouped query of ``patch_hosts``) and patches by state (the
patch controller's query, what ``sw-patch query`` shows; a few patches, not rows)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from conductor.db.schema import patch_hosts

if TYPE_CHECKING:
    from conductor.patching.controller import PatchController

_HOSTS = sa.select(patch_hosts.c.state, patch_hosts.c.out_of_date, patch_hosts.c.patch_failed,
                   sa.func.count()).group_by(patch_hosts.c.state, patch_hosts.c.out_of_date,
                                             patch_hosts.c.patch_failed)


class PatchCollector(Collector):
    """``metalcast_patch_hosts`` and, with a controller, ``metalcast_patches``."""

    def __init__(self, engine: sa.Engine, controller: PatchController | None):
        self.engine = engine
        self.controller = controller

    def collect(self) -> Iterator[GaugeMetricFamily]:
        hosts = GaugeMetricFamily(
            "metalcast_patch_hosts", "Patched hosts by state (query-hosts), whether they "
            "are patch current and whether their last install failed.",
            labels=("state", "patch_current", "patch_failed"))
        with self.engine.connect() as conn:
            for state, out_of_date, failed, count in conn.execute(_HOSTS):
                hosts.add_metric([state, "false" if out_of_date else "true",
                                  "true" if failed else "false"], count)
        yield hosts
        if self.controller is None:
            return
        patches = GaugeMetricFamily(
            "metalcast_patches", "Patches by state as sw-patch query shows them.",
            labels=("patch_state", "repo_state"))
        found = Counter((entry["patchstate"], entry["repostate"])
                        for entry in self.controller.query()["pd"].values())
        for (state, repo), count in sorted(found.items()):
            patches.add_metric([state, repo], count)
        yield patches
