"""What each step kind does: ``start`` it once, then ``poll`` it until it ends.

A step's progress lives in ``step.data`` (persisted with the strategy), and ``start``
and ``poll`` are safe to run again after a restart: locking a locked host or asking
a host to install again changes nothing. ``poll`` answers None while the step is
still running, or (result, reason). Timeouts are the runner's (engine.py).

* query-alarms — fails (``fail``) when alarms block, after the ignore list and the
  strict/relaxed filter (patch_build.blocking_alarms); in the build it only records.
* lock-hosts — maintenance on, with the strategy named as the reason; only hosts not
  locked already are ours (``data["locked"]``), and only ours are unlocked on abort.
* sw-patch-hosts — the patch controller's host-install-async per host, then the
  hosts' reports: ``patch_failed`` is checked before ``patch_current`` (LP 1842952).
* unlock-hosts / reboot-hosts — a host that installed and has not rebooted since (its
  agent's node_is_patched) is rebooted (its BMC); the step waits until its agent
  reports again without that flag, then (unlock) takes it out of maintenance. A host
  whose install failed before changing anything needs no reboot: it is unlocked once
  it reports (query_hosts' requires_reboot stays true for it while the patch is
  partially applied, so it cannot be what the step waits on).
* system-stabilize — waits its time (times ``[orchestration] stabilize_factor``);
  a host whose locked/enabled/available states change meanwhile fails it (its
  timeout counts as success, as StarlingX's).
* wait-alarms-clear / wait-data-sync — wait until no alarm blocks.
* swact-hosts — nothing to move here (hosts.py): succeeds at once.
* rebuild-hosts — the image-update strategy's: each host's instance_info gets the
  image (and delta), then ``rebuild`` as the API starts it; done when every host is
  ``active`` again, failed when one is ``deploy failed`` (with its last_error).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from conductor.orchestration.hosts import FleetHost
from conductor.orchestration.model import Result, Step
from conductor.orchestration.patch_build import blocking_alarms

LOG = logging.getLogger(__name__)

Outcome = tuple[str, str] | None


class Fleet(Protocol):
    """What steps act on (fleet.ApplianceFleet; tests may build their own)."""

    def hosts(self, names: Iterable[str] | None = None) -> dict[str, FleetHost]: ...
    def alarms(self) -> list[Any]: ...
    def lock(self, names: Iterable[str], reason: str) -> list[str]: ...
    def unlock(self, names: Iterable[str]) -> None: ...
    def install(self, name: str) -> str: ...
    def reboot(self, name: str) -> None: ...
    def rebuild(self, name: str, instance_info: dict[str, Any], strategy: str = "") -> str: ...
    def provision(self, names: Iterable[str]) -> dict[str, tuple[str, str]]: ...


@dataclasses.dataclass(frozen=True)
class Context:
    strategy_uuid: str
    restrictions: str
    now: float
    stabilize_factor: float = 1.0

    @property
    def lock_reason(self) -> str:
        return f"locked by sw-patch strategy {self.strategy_uuid}"


def _noop(step: Step, fleet: Fleet, ctx: Context) -> None:
    return None


def _succeed(step: Step, fleet: Fleet, ctx: Context) -> Outcome:
    return Result.SUCCESS, ""


def _query_alarms(step: Step, fleet: Fleet, ctx: Context) -> Outcome:
    blocking = blocking_alarms(fleet.alarms(), step.params.get("restrictions", ctx.restrictions))
    step.data["alarms"] = blocking
    if blocking and step.params.get("fail"):
        return Result.FAILED, f"active alarms present [ {', '.join(blocking)} ]"
    return Result.SUCCESS, ""


def _wait_alarms(step: Step, fleet: Fleet, ctx: Context) -> Outcome:
    if blocking_alarms(fleet.alarms(), ctx.restrictions):
        return None
    return Result.SUCCESS, ""


def _lock(step: Step, fleet: Fleet, ctx: Context) -> None:
    locked = step.data.setdefault("locked", [])
    todo = [name for name in step.entity_names if name not in locked]
    if todo:
        ours = set(fleet.lock(todo, ctx.lock_reason))
        locked += [name for name in todo if name in ours]
        LOG.info("Strategy %s: hosts locked: %s", ctx.strategy_uuid,
                 ", ".join(n for n in todo if n in ours) or "none (locked already)")


def _send_each(step: Step, ctx: Context, send: Callable[[str], str], failed: str,
               started: str) -> None:
    """``send`` to each of the step's hosts once (``step.data["sent"]`` survives a
    restart, so nothing is sent twice); the first error stops and is the step's."""
    sent = step.data.setdefault("sent", [])
    for name in step.entity_names:
        if name in sent:
            continue
        error = send(name)
        if error:
            step.data["error"] = f"{failed} on host {name}: {error}"
            LOG.error("Strategy %s: %s", ctx.strategy_uuid, step.data["error"])
            return
        sent.append(name)
        LOG.info("Strategy %s: host %s %s", ctx.strategy_uuid, name, started)


def _install(step: Step, fleet: Fleet, ctx: Context) -> None:
    _send_each(step, ctx, fleet.install, "software update failed to apply",
               "install requested")


def _installed(step: Step, fleet: Fleet, ctx: Context) -> Outcome:
    if step.data.get("error"):
        return Result.FAILED, step.data["error"]
    hosts = fleet.hosts(step.entity_names)
    for name in step.entity_names:
        host = hosts.get(name)
        if host is None:
            return Result.FAILED, f"host {name} no longer known"
        if host.patch_state == "installing":
            return None
        if host.patch_failed:       # before patch_current: LP 1842952
            return Result.FAILED, f"software update failed to apply on host {name}"
        if host.patch_state == "install-rejected":
            return Result.FAILED, f"software update rejected by host {name}"
        if not host.patch_current:
            return None
    return Result.SUCCESS, ""


def _reboot_if_needed(step: Step, fleet: Fleet, ctx: Context) -> None:
    rebooting = step.data.setdefault("rebooting", [])
    hosts = fleet.hosts(step.entity_names)
    for name in step.entity_names:
        host = hosts.get(name)
        if host is not None and host.node_is_patched and name not in rebooting:
            fleet.reboot(name)
            rebooting.append(name)
            LOG.info("Strategy %s: host %s rebooting", ctx.strategy_uuid, name)


def _healthy(host: FleetHost | None) -> bool:
    return host is not None and host.availability != "offline" and not host.node_is_patched


def _unlocked(step: Step, fleet: Fleet, ctx: Context) -> Outcome:
    done = step.data.setdefault("unlocked", [])
    hosts = fleet.hosts(step.entity_names)
    ready = [name for name in step.entity_names
             if name not in done and _healthy(hosts.get(name))]
    if ready:
        fleet.unlock(ready)
        done += ready
        LOG.info("Strategy %s: hosts unlocked: %s", ctx.strategy_uuid, ", ".join(ready))
    return (Result.SUCCESS, "") if len(done) == len(step.entity_names) else None


def _rebooted(step: Step, fleet: Fleet, ctx: Context) -> Outcome:
    hosts = fleet.hosts(step.entity_names)
    if all(_healthy(hosts.get(name)) for name in step.entity_names):
        return Result.SUCCESS, ""
    return None


def _rebuild(step: Step, fleet: Fleet, ctx: Context) -> None:
    info = step.params["instance_info"]
    _send_each(step, ctx, lambda name: fleet.rebuild(name, info, ctx.strategy_uuid),
               "re-image failed to start", "re-imaging")


def _rebuilt(step: Step, fleet: Fleet, ctx: Context) -> Outcome:
    if step.data.get("error"):
        return Result.FAILED, step.data["error"]
    states = fleet.provision(step.entity_names)
    for name in step.entity_names:
        state, error = states.get(name, ("", "no longer known"))
        if state in FAILED_DEPLOY:
            return Result.FAILED, f"re-image failed on host {name} ({state}): {error}"
        if state != "active":
            return None
    return Result.SUCCESS, ""


def _host_states(fleet: Fleet) -> str:
    """A digest of every host's (administrative, operational, availability)."""
    states = sorted((h.name, h.states()) for h in fleet.hosts().values() if h.in_inventory)
    return hashlib.sha256(repr(states).encode()).hexdigest()[:16]


def _stabilize_start(step: Step, fleet: Fleet, ctx: Context) -> None:
    step.data["states"] = _host_states(fleet)


def _stabilize(step: Step, fleet: Fleet, ctx: Context) -> Outcome:
    started = step.started if step.started is not None else ctx.now
    if ctx.now - started >= step.timeout * ctx.stabilize_factor:
        return Result.SUCCESS, ""
    if step.data.get("states") not in (None, _host_states(fleet)):
        return Result.FAILED, "host state changed during system stabilization"
    return None


Starter = Callable[[Step, Fleet, Context], None]
Poller = Callable[[Step, Fleet, Context], Outcome]
#: Step name -> (start, poll).
KINDS: dict[str, tuple[Starter, Poller]] = {
    "query-alarms": (_noop, _query_alarms),
    "query-sw-patches": (_noop, _succeed),
    "query-sw-patch-hosts": (_noop, _succeed),
    "swact-hosts": (_noop, _succeed),
    "lock-hosts": (_lock, _succeed),
    "sw-patch-hosts": (_install, _installed),
    "unlock-hosts": (_reboot_if_needed, _unlocked),
    "reboot-hosts": (_reboot_if_needed, _rebooted),
    "system-stabilize": (_stabilize_start, _stabilize),
    "wait-alarms-clear": (_noop, _wait_alarms),
    "wait-data-sync": (_noop, _wait_alarms),
    "query-hosts": (_noop, _succeed),
    "rebuild-hosts": (_rebuild, _rebuilt),
}
#: Provision states in which a rebuild has failed (the node can be rebuilt again).
FAILED_DEPLOY = frozenset({"deploy failed", "error", ""})
#: A timed-out step of these kinds succeeded (StarlingX: a stabilize that ran out).
TIMEOUT_IS_SUCCESS = frozenset({"system-stabilize"})


def compensation(step: Step) -> Step | None:
    """The step that undoes ``step`` on abort: unlock for lock (only the hosts it
    locked); nothing for the rest (installed patches are never rolled back)."""
    if step.name != "lock-hosts" or step.result == Result.INITIAL:
        return None
    names = list(step.data.get("locked", step.entity_names))
    if not names:
        return None
    uuids = [u for n, u in zip(step.entity_names, step.entity_uuids) if n in names]
    return Step("unlock-hosts", 1800, entity_type="hosts", entity_names=names,
                entity_uuids=uuids)
