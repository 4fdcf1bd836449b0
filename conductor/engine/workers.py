"""Worker pool, per-node locks held across a worker's life, and periodic tasks.

The API thread takes the node lock (a conditional UPDATE) and moves the node into
its transient state; a worker thread inherits the lock, runs the action and
always releases it. A conductor that starts again releases its own stale locks
and fails the transient states it owned, so no node stays locked or stuck.
"""
from __future__ import annotations

import contextvars
import datetime
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from conductor import errors, states
from conductor.cluster.ring import runs_here
from conductor.config import Settings
from conductor.db import orphans
from conductor.db.queries import Store, utcnow
from conductor.db.records import Node
from conductor.drivers.power import forget_agent
from conductor.engine import intents
from conductor.engine.task import Task

if TYPE_CHECKING:
    from conductor.dns.registration import DnsRetry
    from conductor.drivers.registry import DriverRegistry
    from conductor.engine.power_sync import PowerSync
    from conductor.engine.takeover import Takeover
    from conductor.metrics.events import EngineMetrics

LOG = logging.getLogger(__name__)
S = states.State

#: How long stop() waits for periodic passes in flight (seconds, all of them together).
PERIODIC_STOP_WAIT = 30.0

#: Wait state -> the [conductor] key holding its timeout (seconds).
WAIT_TIMEOUTS = {
    S.DEPLOYWAIT: "deploy_callback_timeout",
    S.CLEAN_WAIT: "clean_callback_timeout",
    S.INSPECT_WAIT: "inspect_wait_timeout",
    S.RESCUEWAIT: "rescue_callback_timeout",
    S.SERVICE_WAIT: "service_callback_timeout",
}


class Workers:
    """A bounded pool; ``spawn`` refuses work (503) instead of queueing without end."""

    def __init__(self, store: Store, settings: Settings, drivers: DriverRegistry,
                 power_sync: PowerSync | None = None, dns_retry: DnsRetry | None = None,
                 metrics: EngineMetrics | None = None, takeover: Takeover | None = None,
                 owner_of: Callable[[Node], str | None] | None = None,
                 host_audit: Callable[[], object] | None = None):
        self.store = store
        self.settings = settings
        #: Builds the interfaces of every task this pool runs.
        self.drivers = drivers
        self.host = settings.conductor.host
        self._pool = ThreadPoolExecutor(settings.conductor.workers, "metalcast-worker")
        self._capacity = threading.BoundedSemaphore(
            settings.conductor.workers + settings.conductor.max_queued)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: The power-state sync, on its own small pool (None when disabled).
        self.power_sync = power_sync
        #: Retries of failed DNS updates (None when [dns] server is not set).
        self.dns_retry = dns_retry
        #: Counts the callback timeouts (conductor/metrics/events.py); None: not counted.
        self.metrics = metrics
        #: Takes over the nodes of dead conductors the ring maps here (None: not run).
        self.takeover = takeover
        #: The node's conductor by the hash ring: the callback timeouts of only this
        #: one's nodes are checked here (None: those it acted on last, or no one did).
        self.owner_of = owner_of
        #: Asks the host agents of this conductor's nodes to re-report, every
        #: ``[patching] host_audit_interval`` (conductor/patching/host_channel.py).
        self.host_audit = host_audit

    # -- work --------------------------------------------------------------
    def claim_slot(self) -> None:
        """Take a pool slot for the spawn() that follows, or raise 503; call before locking.

        Claiming first means a node already moved into its transient state always
        gets its worker: a 503 after that move would leave it stuck there.
        """
        if self.settings.conductor.role == "api":
            raise errors.NoValidHost(reason=(
                f"this process is an API process (--role api, named {self.host!r}) and "
                "runs no node's work, and the hash ring names it or no live conductor "
                "for this node: start a conductor (--role conductor or all) that serves "
                "the node's hardware type and conductor group, and give API processes "
                "names ([DEFAULT] host) of their own"))
        if not self._capacity.acquire(blocking=False):
            raise errors.NoFreeConductorWorker()

    def release_slot(self) -> None:
        """Give back a claimed slot when the request fails before spawn()."""
        self._capacity.release()

    def spawn(self, task: Task, action: Callable[..., object], *args: Any) -> None:
        """Run ``action(task, *args)`` on the claimed slot; the worker always unlocks.
        The worker runs in a copy of the caller's context: its log lines carry the
        request id of the API request that started the work (conductor/request_ids.py)."""
        self._pool.submit(contextvars.copy_context().run, self._run, task, action, args)

    def _run(self, task: Task, action: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            action(task, *args)
        except Exception as exc:  # every failure must land in last_error
            LOG.exception("Node %s: %s failed", task.node.uuid, action.__name__)
            fail(task, errors.error_text(exc))
        finally:
            try:
                task.release()
            finally:
                self._capacity.release()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Recover what a previous run of this conductor left, start periodics. The
        conductor's registration and heartbeat are conductor/cluster/membership.py's,
        started before (a name alive elsewhere is refused before any recovery)."""
        recover(self.store, self.host, self.drivers)
        self._periodic(self.settings.conductor.check_provision_state_interval,
                       lambda: check_wait_timeouts(self.store, self.settings, self.drivers,
                                                   on_timeout=self._timed_out,
                                                   owner_of=self.owner_of))
        if self.power_sync is not None:
            self._periodic(self.settings.conductor.sync_power_state_interval,
                           self.power_sync.sweep)
        if self.dns_retry is not None:
            self._periodic(self.settings.dns.retry_interval, self.dns_retry.sweep)
        self._periodic(intents.POLL_INTERVAL, self.pickup)  # work handed over to us
        if self.host_audit is not None and self.settings.patching.host_audit_interval > 0:
            self._periodic(self.settings.patching.host_audit_interval, self.host_audit)
        if self.takeover is not None:   # each heartbeat: within heartbeat_timeout + one
            self._periodic(self.settings.conductor.heartbeat_interval,  # interval
                           self.takeover.sweep)

    def pickup(self) -> list[str]:
        """Start the nodes another process handed to this conductor (intents.py)."""
        return intents.pickup(self)

    def _timed_out(self, state: str) -> None:
        if self.metrics is not None:
            self.metrics.callback_timeout(state)

    def _periodic(self, interval: float, func: Callable[[], object]) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    func()
                except Exception:  # a periodic task must survive errors
                    LOG.exception("Periodic task %s failed", func)
        thread = threading.Thread(target=loop, name="metalcast-periodic", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        if self.power_sync is not None:
            self.power_sync.close(wait)
        if self.dns_retry is not None:
            self.dns_retry.close(wait)
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
        if wait:
            # Let a periodic pass in flight end (no new one starts): a DNS removal
            # stopped mid-attempt would keep its row claimed for a whole lease, and the
            # next conductor would wait that long before retrying it.
            deadline = time.monotonic() + PERIODIC_STOP_WAIT
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))


def fail(task: Task, message: str) -> None:
    """Move the node to the failed state of its current transient state."""
    state = task.node.provision_state
    try:
        # The agent of a failed deploy/clean (timeout included) loses its token: only
        # the agent of the next boot, after a fresh lookup, may call back.
        task.process_event("fail", last_error=message, **forget_agent(task))
    except errors.InvalidTransition:
        # Power actions fail without a state change; the error still shows.
        task.update(last_error=message, target_power_state=None)
    LOG.error("Node %s: %s (was %s)", task.node.uuid, message, state)


def recover(store: Store, host: str, drivers: DriverRegistry) -> None:
    """Release this conductor's stale locks and fail the work it can no longer resume;
    the nodes handed to it and not started stay locked for its poller."""
    released = orphans.release_stale_locks(store.engine, host, intents.HANDED_STATES)
    if released:
        LOG.warning("Conductor %s released stale locks on %d node(s): %s",
                    host, len(released), ", ".join(released))
        intents.finish_handed_ports(store, host, drivers, released)
    stuck = store.nodes_in_states([s.value for s in states.WORKING_STATES],
                                  unreserved=True, affinity=host)
    for node in stuck:
        _fail_locked(store, drivers, node, host, (
            f"Conductor {host} restarted while node was in state {node.provision_state!r}; "
            "the operation cannot be resumed. Retry the action."))


def check_wait_timeouts(store: Store, settings: Settings, drivers: DriverRegistry,
                        now: datetime.datetime | None = None,
                        on_timeout: Callable[[str], None] | None = None,
                        owner_of: Callable[[Node], str | None] | None = None) -> int:
    """Fail nodes that waited too long for an agent; returns how many failed
    (``on_timeout`` is told the wait state of each). With ``owner_of`` (the hash
    ring) only the nodes it maps to this conductor; without, those it acted on last
    or no one did."""
    now = now or utcnow()
    failed = 0
    for state, option in WAIT_TIMEOUTS.items():
        timeout = getattr(settings.conductor, option)
        cutoff = now - datetime.timedelta(seconds=timeout)
        for node in store.nodes_in_states([state.value], updated_before=cutoff,
                                          unreserved=True):
            if not _mine(node, settings.conductor.host, owner_of):
                continue
            if _fail_locked(store, drivers, node, settings.conductor.host, (
                    f"Timeout reached while waiting for callback in state {state.value!r} "
                    f"after {timeout} seconds ({option}).")):
                failed += 1
                if on_timeout is not None:
                    on_timeout(state.value)
    return failed


def _mine(node: Node, host: str, owner_of: Callable[[Node], str | None] | None) -> bool:
    owner = owner_of(node) if owner_of is not None else None
    return runs_here(owner, node.conductor_affinity, host)


def _fail_locked(store: Store, drivers: DriverRegistry, node: Node, host: str,
                 message: str) -> int:
    try:
        store.reserve(node, host, expect={"provision_state": node.provision_state})
    except errors.Conflict:
        return 0  # someone else is acting on it now; they own the outcome
    task = Task(store, node, host, drivers)
    try:
        fail(task, message)
    finally:
        task.release()
    return 1
