"""Engine events: power-sync sweeps, BMC errors by driver, agent heartbeats and the
wait states that timed out waiting for an agent. Given to PowerSync, Workers and
AgentService when the appliance builds them."""
from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram

SWEEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.sweeps = Histogram(
            "metalcast_power_sync_duration_seconds", "Duration of one power-state sync "
            "sweep over this conductor's nodes.", buckets=SWEEP_BUCKETS, registry=registry)
        self.bmc_errors = Counter(
            "metalcast_bmc_errors", "Power-sync checks that failed, by driver: the BMC did "
            "not answer or report a state (or kept refusing a pushed one), or the check "
            "failed unexpectedly.", ("driver",), registry=registry)
        self.heartbeats = Counter(
            "metalcast_agent_heartbeats", "Agent heartbeats received, by result (accepted: "
            "recorded; refused: bad token, URL or certificate).", ("result",),
            registry=registry)
        self.timeouts = Counter(
            "metalcast_agent_callback_timeouts", "Nodes failed because no agent called "
            "back in time, by the wait state they were in.", ("state",), registry=registry)

    def power_sweep(self, seconds: float, bmc_errors: Mapping[str, int]) -> None:
        self.sweeps.observe(seconds)
        for driver, count in bmc_errors.items():
            self.bmc_errors.labels(driver).inc(count)

    def heartbeat(self, accepted: bool) -> None:
        self.heartbeats.labels("accepted" if accepted else "refused").inc()

    def callback_timeout(self, state: str) -> None:
        self.timeouts.labels(state).inc()
