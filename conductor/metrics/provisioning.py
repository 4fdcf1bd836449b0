"""``metalcast_provision_duration_seconds``: how long deploys, rebuilds and cleanings
take, from the state change that starts one to the one that ends it.

The store calls :meth:`ProvisionTimer.transition` after every committed provision
state change (``Store(on_transition=...)``), whichever code path made it. A deploy
starts on entering the deploy states (``deploying``, ``wait call-back``) and ends on
leaving them (``active``: success, anything else: failure); from ``active`` it is a
rebuild. Cleaning likewise (``cleaning``, ``clean wait``; success is ``available`` or
``manageable``). A start this process did not see (a restart, another conductor)
observes nothing.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram

#: phase -> (its states, the states that end it well)
PHASES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "deploy": (frozenset({"deploying", "wait call-back"}), frozenset({"active"})),
    "clean": (frozenset({"cleaning", "clean wait"}), frozenset({"available", "manageable"})),
}
#: A deploy started from these states is a rebuild.
REBUILD_FROM = frozenset({"active"})
#: Deploys take minutes (a virtual lab: seconds), large images up to hours.
BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200)
#: Starts remembered at most (nodes deleted mid-operation never end theirs).
MAX_TRACKED = 100_000


def _phase(state: str | None) -> str | None:
    for name, (states, _ends) in PHASES.items():
        if state in states:
            return name
    return None


class ProvisionTimer:
    def __init__(self, registry: CollectorRegistry,
                 clock: Callable[[], float] = time.monotonic):
        self.histogram = Histogram(
            "metalcast_provision_duration_seconds", "Duration of deploys, rebuilds and "
            "cleanings, by result.", ("operation", "result"), buckets=BUCKETS,
            registry=registry)
        self.clock = clock
        self._started: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def transition(self, node_id: int, old: str | None, new: str | None) -> None:
        """A committed provision state change of one node."""
        before, after = _phase(old), _phase(new)
        if before == after:
            return
        now = self.clock()
        with self._lock:
            started = self._started.pop(node_id, None) if before else None
            if after:
                if len(self._started) >= MAX_TRACKED:
                    self._started.pop(next(iter(self._started)))
                operation = "rebuild" if after == "deploy" and old in REBUILD_FROM else after
                self._started[node_id] = (operation, now)
        if before and started is not None:
            operation, at = started
            result = "success" if new in PHASES[before][1] else "failure"
            self.histogram.labels(operation, result).observe(now - at)
