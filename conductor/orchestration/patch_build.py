"""The patch strategy's build: the checks of §6.3 and the stages of §6.4 (pure).

``build(options, snapshot)`` answers the reason the build fails ("" when it does
not) and the apply phase's stages. The checks run in StarlingX's order with its
reason texts; stages come in its order (controllers, storage, workers; no-reboot
before reboot), the active controller (the host this appliance runs on, if it is a
patch host) last among the controllers. What has no counterpart here (instances,
swact, replication groups) is described in conductor/orchestration/hosts.py.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from conductor.orchestration.hosts import FleetHost
from conductor.orchestration.model import Stage, Step

#: Alarms that never block a patch strategy (StarlingX's list).
IGNORED_ALARMS = frozenset({"900.001", "900.005", "900.101", "200.001", "700.004",
                            "280.002"})
#: Seconds (StarlingX's): after an install before unlock, without a reboot, default.
MTCE_DELAY, NO_REBOOT_DELAY, STABILIZE = 15, 30, 60
WAIT_ALARMS_CLEAR = 30 * 60
TIMEOUTS = {"query-alarms": 60, "query-sw-patches": 60, "query-sw-patch-hosts": 60,
            "lock-hosts": 900, "unlock-hosts": 1800, "reboot-hosts": 1800,
            "swact-hosts": 900, "sw-patch-hosts": 1800}
CONTROLLERS, STORAGE, WORKERS = ("sw-patch-controllers", "sw-patch-storage-hosts",
                                 "sw-patch-worker-hosts")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the build reads: hosts (inventory and patch states), patches, alarms."""

    hosts: dict[str, FleetHost]
    patches: dict[str, Any]
    alarms: list[Any]
    local_host: str = ""


def mgmt_affecting(alarm: Any) -> bool:
    """An alarm's mgmt_affecting flag; metalcast's alarms carry none, so critical
    and major alarms count as management-affecting and the others do not."""
    flag = getattr(alarm, "mgmt_affecting", None)
    return bool(flag) if flag is not None else alarm.severity in ("critical", "major")


def blocking_alarms(alarms: Iterable[Any], restrictions: str) -> list[str]:
    """IDs of the alarms a strategy must not run with (strict or relaxed)."""
    return sorted({a.alarm_id for a in alarms if a.alarm_id not in IGNORED_ALARMS and
                   (restrictions == "strict" or mgmt_affecting(a))})


def step(name: str, hosts: Iterable[FleetHost] = (), timeout: int | None = None,
         **params: Any) -> Step:
    hosts = list(hosts)
    return Step(name, timeout if timeout is not None else TIMEOUTS[name],
                entity_type="hosts" if hosts else "",
                entity_names=[h.name for h in hosts], entity_uuids=[h.uuid for h in hosts],
                params=params)


def build_steps(restrictions: str) -> list[Step]:
    """The build phase's one stage (sw-patch-query); each step succeeds at once."""
    return [step("query-alarms", fail=False, restrictions=restrictions),
            step("query-sw-patches"), step("query-sw-patch-hosts")]


def build(options: dict[str, Any], snap: Snapshot) -> tuple[str, list[Stage]]:
    """(reason, stages): the first failing check's reason, or "" and the stages."""
    reason = _check(options, snap)
    if reason:
        return reason, []
    buckets = _buckets(snap)
    stages: list[Stage] = []
    for kind, reboot in (("controller", False), ("controller", True), ("storage", False),
                         ("storage", True), ("worker", False), ("worker", True)):
        hosts = buckets[(kind, reboot)]
        if not hosts:
            continue
        made = BUILDERS[kind](options, snap, hosts, reboot)
        if isinstance(made, str):
            return made, []
        stages += made
    if not stages:
        return "no software patches need to be applied", []
    return "", stages


def _check(options: dict[str, Any], snap: Snapshot) -> str:
    if not snap.patches:
        return "no software patches found"
    if blocking_alarms(snap.alarms, options["alarm-restrictions"]):
        return "active alarms present"
    for host in sorted(snap.hosts.values(), key=lambda h: h.name):
        if not (host.in_inventory and host.patching):
            continue
        if "worker" in host.personalities and "controller" not in host.personalities:
            if host.states() not in (("unlocked", "enabled", "available"),
                                     ("locked", "disabled", "online"),
                                     ("locked", "disabled", "offline")):
                return ("all worker hosts must be unlocked-enabled-available, "
                        "locked-disabled-online or locked-disabled-offline")
        elif host.states() != ("unlocked", "enabled", "available"):
            return f"all {host.personality} hosts must be unlocked-enabled-available"
    for host in sorted(snap.hosts.values(), key=lambda h: h.name):
        if host.patching and not host.in_inventory:
            return "host inventory mismatch detected"
        if host.patching and host.interim:
            return "at least one host is in pending patch current state"
    return ""


def _buckets(snap: Snapshot) -> dict[tuple[str, bool], list[FleetHost]]:
    buckets: dict[tuple[str, bool], list[FleetHost]] = {
        (kind, reboot): [] for kind in ("controller", "storage", "worker")
        for reboot in (False, True)}
    for host in sorted(snap.hosts.values(), key=lambda h: h.name):
        if not host.patching or host.patch_current:
            continue
        if "controller" in host.personalities:
            buckets[("controller", host.requires_reboot)].append(host)
        elif "storage" in host.personalities:
            buckets[("storage", host.requires_reboot)].append(host)
        if "worker" in host.personalities and not host.offline:
            buckets[("worker", host.requires_reboot)].append(host)
    return buckets


def _count(snap: Snapshot, personality: str) -> int:
    return sum(personality in h.personalities for h in snap.hosts.values() if h.in_inventory)


def _host_stage(name: str, hosts: list[FleetHost], reboot: bool, *, swact: bool,
                after_unlock: Step) -> Stage:
    """query-alarms, [swact, lock], sw-patch-hosts, then [stabilize, unlock, wait]
    or a short stabilize: the shape of every controller and storage stage."""
    steps = [step("query-alarms", fail=True)]
    if reboot:
        steps += [step("swact-hosts", hosts)] if swact else []
        steps.append(step("lock-hosts", hosts))
    steps.append(step("sw-patch-hosts", hosts))
    if reboot:
        steps += [step("system-stabilize", timeout=MTCE_DELAY), step("unlock-hosts", hosts),
                  after_unlock]
    else:
        steps.append(step("system-stabilize", timeout=NO_REBOOT_DELAY))
    return Stage(name, steps)


def _controllers(options, snap: Snapshot, hosts: list[FleetHost], reboot: bool):
    apply_type = options["controller-apply-type"]
    if apply_type == "ignore":
        return []
    if _count(snap, "controller") == 0:    # one is a simplex system (single controller)
        return "not enough controllers to apply software patches"
    if apply_type == "parallel":
        return "parallel apply type not allowed for controllers"
    plain = [h for h in hosts if "worker" not in h.personalities]   # AIO: worker stages
    ordered = sorted(plain, key=lambda h: (h.name == snap.local_host, h.name))
    return [_host_stage(CONTROLLERS, [h], reboot, swact=True,
                        after_unlock=step("wait-alarms-clear", timeout=WAIT_ALARMS_CLEAR))
            for h in ordered]


def _storage(options, snap: Snapshot, hosts: list[FleetHost], reboot: bool):
    if options["storage-apply-type"] == "ignore":
        return []
    if _count(snap, "storage") < 2:
        return "not enough storage hosts to apply software patches"
    # One replication group assumed (hosts.py): parallel holds one host per stage too.
    return [_host_stage(STORAGE, [h], reboot, swact=False,
                        after_unlock=step("wait-data-sync", timeout=WAIT_ALARMS_CLEAR))
            for h in hosts]


def _workers(options, snap: Snapshot, hosts: list[FleetHost], reboot: bool):
    apply_type = options["worker-apply-type"]
    if apply_type == "ignore":
        return []
    single = _count(snap, "controller") == 1
    aio = [h for h in hosts if "controller" in h.personalities]
    if single and aio and options["default-instance-action"] != "stop-start":
        return "cannot migrate instances in a single controller configuration"
    rest = [h for h in hosts if "controller" not in h.personalities]
    groups = [[h] for h in aio]
    if apply_type == "serial":
        groups += [[h] for h in rest]
    else:
        size = options["max-parallel-worker-hosts"]
        groups += [rest[i:i + size] for i in range(0, len(rest), size)]
    return [_worker_stage(group, reboot, single) for group in groups]


def _worker_stage(group: list[FleetHost], reboot: bool, single: bool) -> Stage:
    steps = [step("query-alarms", fail=True)]
    to_lock = [h for h in group if not h.locked] if reboot else []
    to_reboot = [h for h in group if h.locked] if reboot else []
    if reboot and len(group) == 1 and "controller" in group[0].personalities and not single:
        steps.append(step("swact-hosts", group))
    if to_lock:
        steps.append(step("lock-hosts", to_lock))
    steps.append(step("sw-patch-hosts", group))
    if reboot:
        steps.append(step("system-stabilize", timeout=MTCE_DELAY))
        steps += [step("unlock-hosts", to_lock)] if to_lock else []
        steps += [step("reboot-hosts", to_reboot)] if to_reboot else []
        if any("controller" in h.personalities for h in group):
            steps.append(step("wait-alarms-clear", timeout=WAIT_ALARMS_CLEAR))
        else:
            steps.append(step("system-stabilize", timeout=STABILIZE))
    else:
        steps.append(step("system-stabilize", timeout=NO_REBOOT_DELAY))
    return Stage(WORKERS, steps)


BUILDERS = {"controller": _controllers, "storage": _storage, "worker": _workers}
