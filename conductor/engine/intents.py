"""Work handed to a node's conductor through the database (never by calling it).

A provisioning request reaching a process whose conductor is not the node's (by the
hash ring) does everything a local request does - checks, limits, the transient
state, ``target_provision_state``, deploy steps and config drive - and takes the node
lock *in the name of the node's conductor*: ``reservation`` = that conductor,
``conductor_affinity`` = NULL ("handed over, not started"). Each conductor polls for
nodes reserved in its name and not yet started, claims each one with a conditional
UPDATE (``conductor_affinity`` = itself, so one poller wins) and runs the action the
transient state names on one of its workers - the same action and worker a local
request spawns at once (the in-process path: no poll, no wait).

A handed-over node whose conductor dies before it starts is the takeover's
(conductor/engine/takeover.py): its lock is released and the state fails with the
dead conductor named. A conductor that restarts keeps the nodes handed to it
(:func:`conductor.db.orphans.release_stale_locks`) and starts them.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conductor import errors, states
from conductor.db import orphans
from conductor.db.records import Node
from conductor.drivers.base import PowerState
from conductor.engine import actions
from conductor.engine.task import Task

if TYPE_CHECKING:
    from conductor.db.queries import Store
    from conductor.drivers.registry import DriverRegistry
    from conductor.engine.workers import Workers

LOG = logging.getLogger(__name__)
S = states.State

#: Seconds between two looks for work handed to this conductor.
POLL_INTERVAL = 1.0

#: driver_internal_info key of a manual clean's steps while the node is handed over.
CLEAN_STEPS_KEY = "handed_clean_steps"
#: driver_internal_info key of a power request handed over: {"target", "timeout"}.
POWER_KEY = "handed_power"
#: driver_internal_info key of an agent's heartbeat handed over (the node waits for it).
HEARTBEAT_KEY = "handed_heartbeat"
#: driver_internal_info key of a port change handed over: the MACs the node had before.
PORTS_KEY = "handed_ports"
#: The wait states whose agent heartbeat continues the steps (service/ramdisk.py).
HEARTBEAT_STATES = (S.DEPLOYWAIT.value, S.CLEAN_WAIT.value)
#: The keys above: the claim takes them out of the row.
HANDED_KEYS = (CLEAN_STEPS_KEY, POWER_KEY, HEARTBEAT_KEY, PORTS_KEY)


def _clean_args(node: Node) -> tuple[Any, ...]:
    if node.target_provision_state == S.MANAGEABLE.value:       # manual cleaning
        return ((node.driver_internal_info or {}).get(CLEAN_STEPS_KEY), True)
    return ()


def _no_args(node: Node) -> tuple[Any, ...]:
    return ()


#: Transient state -> (the action its worker runs, its arguments from the node row).
STATE_ACTIONS: dict[S, tuple[Callable[..., None], Callable[[Node], tuple[Any, ...]]]] = {
    S.VERIFYING: (actions.verify, _no_args),
    S.CLEANING: (actions.clean, _clean_args),
    S.DEPLOYING: (actions.deploy, _no_args),
    S.DELETING: (actions.tear_down, _no_args),
    S.INSPECTING: (actions.inspect, _no_args),
    S.ADOPTING: (actions.adopt, _no_args),
    S.RESCUING: (actions.rescue, _no_args),
    S.UNRESCUING: (actions.unrescue, _no_args),
    S.SERVICING: (actions.service, _no_args),
}

HANDED_STATES = [state.value for state in STATE_ACTIONS]


def handover_values(event: str, clean_steps: Any, node: Node) -> dict[str, Any]:
    """What a handed-over request writes beyond a local one's (with the lock)."""
    values: dict[str, Any] = {"conductor_affinity": None}
    if event == "clean":
        internal = dict(node.driver_internal_info or {})
        internal[CLEAN_STEPS_KEY] = clean_steps
        values["driver_internal_info"] = internal
    return values


def power_handover(node: Node, target: str, timeout: int | None) -> dict[str, Any]:
    """What a power request handed over writes with the lock in the owner's name."""
    internal = dict(node.driver_internal_info or {})
    internal[POWER_KEY] = {"target": target, "timeout": timeout}
    return {"target_power_state": target, "conductor_affinity": None,
            "driver_internal_info": internal}


def _work(node: Node) -> tuple[Callable[..., None], tuple[Any, ...]] | None:
    """The action and arguments a handed-over node asks for (None: not handed over:
    e.g. locked by this conductor's own power sync before anyone acted on it)."""
    internal = node.driver_internal_info or {}
    power = internal.get(POWER_KEY)
    if power is not None and node.target_power_state is not None:
        return actions.change_power, (PowerState(power["target"]), power.get("timeout"))
    if internal.get(HEARTBEAT_KEY) and node.provision_state in HEARTBEAT_STATES:
        return actions.heartbeat, ()
    if node.provision_state in HANDED_STATES:
        action, args = STATE_ACTIONS[S(node.provision_state)]
        return action, args(node)
    if internal.get(PORTS_KEY) is not None:
        return actions.ports_changed, (internal[PORTS_KEY],)
    return None


def ports_handover(node: Node, old_macs: set[str]) -> dict[str, Any]:
    """What a port change handed over writes when it passes the lock to the owner."""
    internal = dict(node.driver_internal_info or {})
    internal[PORTS_KEY] = sorted(old_macs)
    return {"conductor_affinity": None, "driver_internal_info": internal}


def finish_handed_ports(store: Store, host: str, drivers: DriverRegistry,
                        uuids: list[str]) -> None:
    """A port change handed here whose lock a restart released (the node is in no
    transient state, so the lock is not kept): done now, before the workers start, so
    no handed_ports mark outlives it (a later lock of this conductor's own on the node,
    e.g. its power sync, would look like handed work)."""
    for uuid in uuids:
        node = store.get_node(uuid)
        internal = dict(node.driver_internal_info or {})
        old_macs = internal.pop(PORTS_KEY, None)
        if old_macs is None:
            continue
        try:
            store.reserve(node, host, values={"conductor_affinity": host,
                                              "driver_internal_info": internal})
        except errors.MetalcastError as exc:   # a request took it: its own changes rule
            LOG.info("Node %s: handed port change not finished: %s", uuid, exc)
            continue
        task = Task(store, store.get_node_by_id(node.id), host, drivers)
        try:
            actions.ports_changed(task, old_macs)
        finally:
            task.release()


def pickup(workers: Workers) -> list[str]:
    """Start the nodes handed to this conductor; their UUIDs (stops at a full pool)."""
    started = []
    for node in orphans.handed_to(workers.store.engine, workers.host):
        work = _work(node)
        if work is None:
            continue
        try:
            workers.claim_slot()
        except errors.NoFreeConductorWorker:
            break                           # the rest wait for the next poll
        claimed = _claim(workers, node)
        if claimed is None:
            workers.release_slot()
            continue
        action, args = work                 # as read: with the clean steps
        LOG.info("Node %s: %s handed to conductor %s, starting", claimed.uuid,
                 action.__name__, workers.host)
        workers.spawn(Task(workers.store, claimed, workers.host, workers.drivers),
                      action, *args)
        started.append(claimed.uuid)
    return started


def _claim(workers: Workers, node: Node) -> Node | None:
    """The node as claimed by this conductor, or None if another poll won it."""
    values: dict[str, Any] = {"conductor_affinity": workers.host}
    internal = node.driver_internal_info or {}
    if any(key in internal for key in HANDED_KEYS):
        values["driver_internal_info"] = {k: v for k, v in internal.items()
                                          if k not in HANDED_KEYS}
    if not workers.store.update_node(node.id, values, expect={
            "reservation": workers.host, "conductor_affinity": None,
            "provision_state": node.provision_state, "updated_at": node.updated_at}):
        return None
    return workers.store.get_node_by_id(node.id)
