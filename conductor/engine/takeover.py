"""Takeover of a dead conductor's nodes (Ironic's ``_check_orphan_nodes``,
``release_node_locks`` and ``_sync_local_state``), run as a periodic task.

Each pass reads the ``conductors`` rows; a conductor whose heartbeat is older than
``[conductor] heartbeat_timeout`` (or that stopped) is dead. Of the nodes it locked
or last acted on (``conductor_affinity``), this conductor handles only those the hash
ring now maps to it, so every orphan has exactly one new owner:

- its lock (``reservation`` naming the dead conductor) is released;
- a transient state it was driving (deploying, cleaning, ...) fails with a
  ``last_error`` naming the dead conductor: the work cannot be resumed;
- a wait state (``wait call-back``, ...) is kept: the agent's next heartbeat reaches
  the database through any API process and the work goes on from there, and this
  conductor now runs the node's callback timeout;
- a node that may network-boot its ramdisk (a wait or hold state) gets its boot
  configuration (per-MAC iPXE/PXELINUX/GRUB files in this conductor's boot roots, the
  DHCP entry naming this conductor's boot server) written again here, so its next
  PXE boot reaches this conductor; an active node (booting from its disk) gets what
  a deploy leaves: no per-MAC files, no DHCP entry (the boot interface's
  ``take_over``);
- every one of them gets ``conductor_affinity`` = this conductor, so its periodic
  work follows.

Every write is a conditional UPDATE on the node row: ownership is decided by rows in
the database, never by what a process remembers, and a conductor that comes back
finds its old nodes already moved.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from conductor import errors, states
from conductor.db import orphans
from conductor.db.conductors import ConductorRow
from conductor.db.queries import Store
from conductor.db.records import Node
from conductor.engine import intents
from conductor.engine.task import Task
from conductor.engine.workers import fail

if TYPE_CHECKING:
    from conductor.drivers.registry import DriverRegistry

LOG = logging.getLogger(__name__)
S = states.State
#: Held between steps with the ramdisk running: its boot config is live, as in a wait.
HOLD_STATES = frozenset({S.DEPLOYHOLD, S.CLEAN_HOLD, S.SERVICE_HOLD})


class ConductorTable(Protocol):
    def page(self) -> list[ConductorRow]: ...


@dataclasses.dataclass
class TakeoverSummary:
    """What one pass did, by node UUID."""

    released: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    resumed: list[str] = dataclasses.field(default_factory=list)
    reprepared: list[str] = dataclasses.field(default_factory=list)
    adopted: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return any(dataclasses.astuple(self))

    def __str__(self) -> str:
        """Counts only: each node's own line names it (a pass may cover thousands)."""
        return ", ".join(f"{field.name} {len(getattr(self, field.name))}"
                         for field in dataclasses.fields(self))


class Takeover:
    """``sweep()``: one pass over the nodes of dead conductors mapped to ``host``."""

    def __init__(self, store: Store, conductors: ConductorTable, host: str,
                 owner_of: Callable[[Node], str | None], drivers: DriverRegistry,
                 stale_before: Callable[[], datetime.datetime]):
        self.store = store
        self.conductors = conductors
        self.host = host
        #: The node's conductor by the hash ring (None: no live conductor serves it).
        self.owner_of = owner_of
        self.drivers = drivers
        self.stale_before = stale_before

    def dead(self) -> dict[str, ConductorRow]:
        """Conductors whose heartbeat is stale or that stopped, by name."""
        cutoff = self.stale_before()
        return {row.hostname: row for row in self.conductors.page()
                if row.hostname != self.host and not row.alive(cutoff)}

    def sweep(self) -> TakeoverSummary:
        summary = TakeoverSummary()
        dead = self.dead()
        for node in orphans.nodes_of(self.store.engine, dead):
            if self.owner_of(node) != self.host:
                continue
            try:
                self._take(node, dead, summary)
            except errors.MetalcastError as exc:  # raced with a request: next pass
                LOG.info("Node %s: takeover deferred: %s", node.uuid, errors.error_text(exc))
        if summary:
            LOG.warning("Conductor %s took over nodes of dead conductor(s) %s: %s",
                        self.host, ", ".join(sorted(dead)), summary)
        return summary

    def _take(self, node: Node, dead: dict[str, ConductorRow],
              summary: TakeoverSummary) -> None:
        # Handed over and never started (conductor/engine/intents.py): no affinity yet.
        previous = node.conductor_affinity or node.reservation or "?"
        if node.reservation in dead:
            # Its power request in flight is gone with it (power sync skips a target).
            if not self.store.release(node.id, node.reservation, {"target_power_state": None}):
                return            # someone else released it first; next pass
            summary.released.append(node.uuid)
            LOG.warning("Node %s: released the lock of dead conductor %s", node.uuid,
                        node.reservation)
            node = self.store.get_node_by_id(node.id)
        elif node.reservation is not None:
            return                # a live conductor is acting on it now
        values: dict[str, object] = {"conductor_affinity": self.host}
        internal = node.driver_internal_info or {}
        if intents.PORTS_KEY in internal:
            # A port change handed to the dead one and never done: the boot interface's
            # take_over below writes the config for the MACs the node has now.
            values["driver_internal_info"] = {k: v for k, v in internal.items()
                                              if k != intents.PORTS_KEY}
        self.store.reserve(node, self.host, values=values,
                           expect={"provision_state": node.provision_state,
                                   "conductor_affinity": node.conductor_affinity})
        node = self.store.get_node_by_id(node.id)
        task = Task(self.store, node, self.host, self.drivers)
        try:
            self._continue(task, previous, summary)
        finally:
            task.release()

    def _continue(self, task: Task, previous: str, summary: TakeoverSummary) -> None:
        state = task.node.provision_state
        uuid = task.node.uuid
        if state in states.WORKING_STATES:
            fail(task, f"Conductor {previous} died (no heartbeat within "
                        f"[conductor] heartbeat_timeout) while the node was in state "
                        f"{state!r}; the operation cannot be resumed. Retry the action.")
            summary.failed.append(uuid)
        elif state in states.WAIT_STATES or state in HOLD_STATES:
            LOG.info("Node %s: %s continues on conductor %s (was %s)", uuid, state,
                     self.host, previous)
            self._reprepare(task, previous)   # it may network-boot its ramdisk again
            summary.resumed.append(uuid)
        elif state == S.ACTIVE.value:
            self._reprepare(task, previous)
            summary.reprepared.append(uuid)
        else:
            summary.adopted.append(uuid)

    def _reprepare(self, task: Task, previous: str) -> None:
        """The node's boot files and DHCP entry, made again here for its state."""
        try:
            task.boot.take_over(task)
        except Exception as exc:  # the node stays active; the error shows
            LOG.exception("Node %s: boot configuration not re-created on takeover "
                          "from %s", task.node.uuid, previous)
            task.update(last_error=(
                f"Taking the node over from dead conductor {previous}, conductor "
                f"{task.host} could not prepare its boot configuration: "
                f"{errors.error_text(exc)}"))
            return
        LOG.info("Node %s: boot configuration re-created on %s (was %s)",
                 task.node.uuid, task.host, previous)
