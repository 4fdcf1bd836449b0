"""Periodic power-state sync: compare each node's recorded power state with its BMC's.

As Ironic's ``_sync_power_states``: every sweep covers the nodes this conductor is
responsible for (affinity to it, or none) that are not locked, not waiting for an
agent or still in enroll, and have no power action pending. Each check holds the
node lock. A mismatch is recorded (or, with ``force_power_state_during_sync``,
the recorded state is pushed to the hardware). A BMC that fails
``power_state_sync_max_retries`` sweeps in a row puts its node into maintenance
with fault "power failure"; such nodes keep being checked and leave maintenance
by themselves once their BMC answers again.

The consecutive-failure count lives in ``driver_internal_info`` (key
``power_sync_failures``), not in process memory as in Ironic: it survives a
conductor restart and a takeover by another conductor, operators see it in the
API, and it needs no schema change. It is only written under the node lock.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from conductor import errors, states
from conductor.cluster.ring import runs_here
from conductor.db.queries import Store
from conductor.db.records import Node
from conductor.drivers.base import PowerState
from conductor.engine.task import Task

if TYPE_CHECKING:
    from conductor.config import Settings
    from conductor.drivers.registry import DriverRegistry
    from conductor.metrics.events import EngineMetrics

LOG = logging.getLogger(__name__)
S = states.State

#: A node -> its conductor by the hash ring (None: no live conductor serves it).
OwnerOf = Callable[[Node], "str | None"]

#: The fault a node gets when its BMC stops answering (Ironic's faults.POWER_FAILURE).
POWER_FAILURE = "power failure"
#: driver_internal_info key holding the consecutive failed checks.
FAILURES_KEY = "power_sync_failures"
#: Provision states never synced: BMC not verified yet, or an agent is in charge.
EXCLUDED_STATES = (S.ENROLL, S.VERIFYING, S.DEPLOYWAIT, S.CLEAN_WAIT, S.INSPECT_WAIT,
                   S.RESCUEWAIT, S.SERVICE_WAIT, S.ADOPTFAIL)
#: Recorded states the force mode can push to the hardware.
FORCEABLE = (PowerState.ON, PowerState.OFF)


class Outcome(str, enum.Enum):
    """What one check of one node did."""

    IN_SYNC = "in sync"            #: the BMC agrees with the recorded state
    RECORDED = "recorded"          #: they differed: the BMC's state was recorded
    FORCED = "forced"              #: they differed: the recorded state was pushed
    FAILED = "failed"              #: the BMC did not answer (or pushing failed); counted
    MAINTENANCE = "maintenance"    #: ...for the max_retries-th time: node in maintenance
    RECOVERED = "recovered"        #: a "power failure" node's BMC answered again
    SKIPPED = "skipped"            #: locked or changed since listed; checked next sweep


#: Outcomes that count as a BMC error (metalcast_bmc_errors_total).
BMC_ERRORS = frozenset({Outcome.FAILED, Outcome.MAINTENANCE})


@dataclasses.dataclass
class SyncSummary:
    """The result of one sweep: each node's outcome and how long the sweep took."""

    outcomes: dict[str, Outcome] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    #: driver -> checks whose BMC failed (to read, or to take a pushed state).
    bmc_errors: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter)

    @property
    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(o.value for o in self.outcomes.values()))

    def __str__(self) -> str:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())) or "no nodes"
        return f"{len(self.outcomes)} node(s) in {self.seconds:.2f}s: {parts}"


def check_settings(settings: Settings) -> None:
    """Refuse sync settings that would break the loop (a pool of 0, no retries)."""
    if settings.conductor.sync_power_state_workers < 1:
        raise errors.ConfigError(reason="conductor.sync_power_state_workers must be >= 1")
    if settings.conductor.power_state_sync_max_retries < 1:
        raise errors.ConfigError(reason="conductor.power_state_sync_max_retries must be >= 1")


def sync_power_states(store: Store, settings: Settings, drivers: DriverRegistry,
                      host: str | None = None,
                      pool: ThreadPoolExecutor | None = None,
                      owner_of: OwnerOf | None = None) -> SyncSummary:
    """Run one sweep; with no ``pool``, one of ``sync_power_state_workers`` threads.
    With ``owner_of`` (the hash ring), only the nodes it maps to ``host``; without,
    the nodes ``host`` acted on last or no one did."""
    check_settings(settings)
    host = host or settings.conductor.host
    if pool is not None:
        return _sweep(store, settings, drivers, host, pool, owner_of)
    with ThreadPoolExecutor(settings.conductor.sync_power_state_workers,
                            "metalcast-power-sync") as own:
        return _sweep(store, settings, drivers, host, own, owner_of)


def _sweep(store: Store, settings: Settings, drivers: DriverRegistry, host: str,
           pool: ThreadPoolExecutor, owner_of: OwnerOf | None = None) -> SyncSummary:
    started = time.monotonic()
    nodes = store.nodes_for_power_sync(None if owner_of else host,
                                       settings.conductor.hardware_types,
                                       [s.value for s in EXCLUDED_STATES], POWER_FAILURE)
    if owner_of is not None:
        nodes = [node for node in nodes
                 if runs_here(owner_of(node), node.conductor_affinity, host)]
    # Failing nodes first (Ironic queues them first too): a BMC that recovered is
    # noticed at the start of a sweep, not after every healthy node.
    nodes.sort(key=lambda n: (not _failing(n), n.id))
    futures = [(node, pool.submit(check_node, store, node, host, settings, drivers))
               for node in nodes]
    summary = SyncSummary()
    for node, future in futures:
        try:
            summary.outcomes[node.uuid] = future.result()
        except CancelledError:  # the conductor is stopping
            summary.outcomes[node.uuid] = Outcome.SKIPPED
        except Exception:  # e.g. the database failed at release
            LOG.exception("Node %s: power state sync failed", node.uuid)
            summary.outcomes[node.uuid] = Outcome.FAILED
        if summary.outcomes[node.uuid] in BMC_ERRORS:
            summary.bmc_errors[node.driver] += 1
    summary.seconds = time.monotonic() - started
    return summary


def _failing(node: Node) -> bool:
    return bool(node.fault == POWER_FAILURE or (node.driver_internal_info or {}).get(
        FAILURES_KEY))


def check_node(store: Store, node: Node, host: str, settings: Settings,
               drivers: DriverRegistry) -> Outcome:
    """Check one node; never raises (a sweep must cover every node).

    Like Ironic's shared lock: a healthy node whose BMC agrees with the record is
    read without locking and costs no database write; the exclusive lock is taken
    only when something must be written (mismatch, failure count, recovery).
    """
    if _agrees_without_lock(store, node, host, drivers):
        return Outcome.IN_SYNC
    try:
        store.reserve(node, host, expect={"provision_state": node.provision_state,
                                          "target_power_state": None,
                                          "maintenance": node.maintenance})
    except errors.NotFound:
        return Outcome.SKIPPED  # deleted since listed
    except errors.Conflict:
        LOG.debug("Node %s: locked or changed, power sync skips it this time", node.uuid)
        return Outcome.SKIPPED
    task = Task(store, node, host, drivers)
    try:
        # Re-read under the lock: driver_info or driver_internal_info may have
        # changed since the sweep listed the node, and we write the latter.
        task.node = store.get_node_by_id(node.id)
        return _sync(task, settings)
    except Exception:  # one node's bug must not end the sweep
        LOG.exception("Node %s: power state sync failed unexpectedly", node.uuid)
        return Outcome.FAILED
    finally:
        task.release()


def _agrees_without_lock(store: Store, node: Node, host: str,
                         drivers: DriverRegistry) -> bool:
    if node.maintenance or _failing(node) or node.power_state is None:
        return False
    task = Task(store, node, host, drivers)
    try:
        return bool(task.power.get_power_state(task).value == node.power_state)
    except Exception:  # noqa: BLE001 - the locked path retries and counts the failure
        return False


def _sync(task: Task, settings: Settings) -> Outcome:
    node = task.node
    try:
        actual = task.power.get_power_state(task)
        if actual is PowerState.ERROR:
            raise errors.DriverError(reason="the BMC reports power state 'error'")
    except Exception as exc:  # noqa: BLE001 - any failure to read counts (as Ironic)
        return _failed(task, settings, exc)
    if node.maintenance:  # only "power failure" nodes are listed while in maintenance
        return _recovered(task, actual)
    recorded = node.power_state
    if recorded == actual.value:
        if _failures(node):
            task.update(driver_internal_info=_with_failures(node, 0))
        return Outcome.IN_SYNC
    if settings.conductor.force_power_state_during_sync and _forceable(node):
        return _force(task, settings, actual)
    if recorded is not None:
        LOG.warning("Node %s: power state changed outside metalcast: recorded %r, the BMC "
                    "reports %r; recording %r", node.uuid, recorded, actual.value,
                    actual.value)
    task.update(power_state=actual.value, driver_internal_info=_with_failures(node, 0))
    return Outcome.RECORDED


def _forceable(node: Node) -> bool:
    if node.power_state not in {p.value for p in FORCEABLE}:
        return False  # nothing sensible to push (never read, or "error")
    # A node that must never be powered off is never forced off.
    return not (node.power_state == PowerState.OFF.value and node.disable_power_off)


def _force(task: Task, settings: Settings, actual: PowerState) -> Outcome:
    """Push the recorded state; each push counts until a sweep finds the states equal."""
    node = task.node
    attempt = _failures(node) + 1
    limit = settings.conductor.power_state_sync_max_retries
    if attempt > limit:
        return _to_maintenance(task, actual, (
            f"Power state sync pushed {node.power_state!r} to the hardware {limit} "
            f"time(s), but the BMC still reports {actual.value!r}; recorded "
            f"{actual.value!r}."))
    LOG.warning("Node %s: the BMC reports %r but %r is recorded; pushing %r to the "
                "hardware (attempt %d of %d)", node.uuid, actual.value, node.power_state,
                node.power_state, attempt, limit)
    try:
        task.power.set_power_state(task, PowerState(node.power_state))
    except Exception as exc:  # noqa: BLE001 - a failed push is one more failed attempt
        LOG.error("Node %s: pushing power state %r failed (attempt %d of %d): %s",
                  node.uuid, node.power_state, attempt, limit, errors.error_text(exc))
    task.update(driver_internal_info=_with_failures(node, attempt))
    return Outcome.FORCED


def _failed(task: Task, settings: Settings, exc: BaseException) -> Outcome:
    node = task.node
    if node.maintenance:  # already a power failure: stay there, nothing new to write
        LOG.debug("Node %s: BMC still not answering: %s", node.uuid, errors.error_text(exc))
        return Outcome.FAILED
    count = _failures(node) + 1
    limit = settings.conductor.power_state_sync_max_retries
    if count >= limit:
        return _to_maintenance(task, None, (
            f"Power state sync could not get the power state {count} time(s) in a row "
            f"(power_state_sync_max_retries = {limit}): {errors.error_text(exc).rstrip('.')}. The "
            "node leaves maintenance by itself once its BMC answers again."), count)
    LOG.warning("Node %s: could not get the power state (attempt %d of %d): %s",
                node.uuid, count, limit, errors.error_text(exc))
    task.update(driver_internal_info=_with_failures(node, count))
    return Outcome.FAILED


def _to_maintenance(task: Task, actual: PowerState | None, reason: str,
                    count: int | None = None) -> Outcome:
    """Maintenance with fault "power failure"; the power state becomes what the BMC
    said, or unknown (None) when it said nothing, as Ironic records it."""
    node = task.node
    internal = _with_failures(node, count if count is not None else _failures(node))
    task.update(maintenance=True, fault=POWER_FAILURE, maintenance_reason=reason,
                power_state=actual.value if actual else None, driver_internal_info=internal)
    LOG.error("Node %s: put into maintenance (fault %r): %s", node.uuid, POWER_FAILURE,
              reason)
    return Outcome.MAINTENANCE


def _recovered(task: Task, actual: PowerState) -> Outcome:
    node = task.node
    task.update(maintenance=False, fault=None, maintenance_reason=None,
                power_state=actual.value, driver_internal_info=_with_failures(node, 0))
    LOG.warning("Node %s: BMC answers again (power %r); left maintenance, fault %r "
                "cleared", node.uuid, actual.value, POWER_FAILURE)
    return Outcome.RECOVERED


def _failures(node: Node) -> int:
    try:
        return int((node.driver_internal_info or {}).get(FAILURES_KEY) or 0)
    except (TypeError, ValueError):
        return 0


def _with_failures(node: Node, count: int) -> dict[str, Any]:
    info = dict(node.driver_internal_info or {})
    if count:
        info[FAILURES_KEY] = count
    else:
        info.pop(FAILURES_KEY, None)
    return info



class PowerSync:
    """The periodic task: one sweep per call, on its own small bounded pool."""

    def __init__(self, store: Store, settings: Settings, drivers: DriverRegistry,
                 metrics: EngineMetrics | None = None, owner_of: OwnerOf | None = None):
        check_settings(settings)
        self.store = store
        #: The node's conductor by the hash ring: a sweep syncs only this one's nodes
        #: (None: those it acted on last, or no one did).
        self.owner_of = owner_of
        #: Records each sweep's duration and BMC errors; None: not recorded.
        self.metrics = metrics
        self.settings = settings
        self.drivers = drivers
        self._pool = ThreadPoolExecutor(settings.conductor.sync_power_state_workers,
                                        "metalcast-power-sync")
        self._closed = threading.Event()

    @classmethod
    def for_settings(cls, store: Store, settings: Settings, drivers: DriverRegistry,
                     metrics: EngineMetrics | None = None,
                     owner_of: OwnerOf | None = None) -> PowerSync | None:
        """The periodic sync, or None when [conductor] sync_power_state_interval is 0."""
        if settings.conductor.sync_power_state_interval <= 0:
            return None
        return cls(store, settings, drivers, metrics, owner_of)

    def sweep(self) -> SyncSummary | None:
        if self._closed.is_set():
            return None
        try:
            summary = _sweep(self.store, self.settings, self.drivers,
                             self.settings.conductor.host, self._pool, self.owner_of)
        except RuntimeError:
            if self._closed.is_set():  # submit() after close(): the conductor is stopping
                return None
            raise
        interval = self.settings.conductor.sync_power_state_interval
        if summary.seconds > 3 * interval:
            LOG.warning("Power state sync took %.1fs, more than 3 x its interval (%ss): "
                        "raise conductor.sync_power_state_workers or the interval",
                        summary.seconds, interval)
        LOG.info("Power state sync: %s", summary)
        if self.metrics is not None:
            self.metrics.power_sweep(summary.seconds, summary.bmc_errors)
        return summary

    def close(self, wait: bool = True) -> None:
        """Cancel the checks not yet started; with ``wait``, let running ones finish."""
        self._closed.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)
