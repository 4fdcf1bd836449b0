"""Hosts as the strategy sees them: StarlingX's host states made from metalcast's.

StarlingX's VIM knows a host's administrative, operational and availability states
and its personality; metalcast knows nodes and the reports of their host agents.
The mapping (``map_hosts``, pure):

* **inventory** — the nodes in ``active`` (deployed hosts); a host the patch
  controller knows but no active node names is an inventory mismatch.
* **administrative** — ``locked`` when the node is in maintenance (metalcast's
  ``host-lock``, as ``sw-patch host-install`` already treats it: the agent's
  ``locked`` flag), else ``unlocked``.
* **operational** — ``enabled`` when unlocked and the host agent reported within
  ``[orchestration] host_offline_after`` seconds and the node is not powered off;
  ``disabled`` otherwise (a locked host is always disabled, as in StarlingX).
* **availability** — ``available`` (unlocked, reporting), ``online`` (locked,
  reporting) or ``offline`` (no recent report, or powered off).
* **personality** — the host agent's report: ``nodetype`` plus ``subfunctions``
  (``controller``, ``worker``, ``storage``); an AIO host is a controller with the
  worker subfunction. A node without a report has the ``nodetype`` property or
  ``worker``.

Concepts with no counterpart here: instances (no host runs any: no migrate, stop or
start steps are built; ``default-instance-action`` is checked and recorded only),
swact (``swact-hosts`` steps are kept for StarlingX's step list and succeed at
once: a metalcast host runs no service to move), storage replication groups (every
storage host is taken to share one, so parallel storage stages hold one host each).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

PERSONALITIES = ("controller", "worker", "storage")
#: driver_internal_info key of the checksum the node's last deploy wrote
#: (conductor/drivers/deploy/delta.py).
DEPLOYED_KEY = "deployed_image_checksum"


@dataclasses.dataclass(frozen=True)
class FleetHost:
    """One host: its StarlingX states and its patch state (query_hosts)."""

    name: str
    uuid: str
    personalities: frozenset[str]
    administrative: str = "unlocked"
    operational: str = "enabled"
    availability: str = "available"
    in_inventory: bool = True
    patching: bool = True            #: known to the patch controller (has reported)
    patch_current: bool = True
    requires_reboot: bool = False    #: query_hosts' (also true while in-service
                                     #: installs are off: an RR patch is partial)
    node_is_patched: bool = False    #: installed, and not rebooted since (the agent's)
    patch_failed: bool = False
    interim: bool = False
    patch_state: str = "idle"        #: the agent's state (idle, installing, ...)
    seconds_since_report: float = 0.0
    lock_reason: str = ""            #: the node's maintenance reason when locked
    image_checksum: str = ""         #: what its last deploy wrote ("algo:hex")

    @property
    def locked(self) -> bool:
        return self.administrative == "locked"

    @property
    def offline(self) -> bool:
        return self.availability == "offline"

    @property
    def personality(self) -> str:
        """As StarlingX words it in reasons: "controller", "controller,worker"."""
        return ",".join(p for p in PERSONALITIES if p in self.personalities)

    def states(self) -> tuple[str, str, str]:
        return self.administrative, self.operational, self.availability


_KNOWN = frozenset(PERSONALITIES)
_WORKER = frozenset({"worker"})


def personalities(nodetype: str | None, subfunctions: Iterable[str] | None) -> frozenset[str]:
    return _KNOWN.intersection((nodetype or "worker", *(subfunctions or ()))) or _WORKER


def map_hosts(nodes: Iterable[Any], views: Iterable[Mapping[str, Any]],
              offline_after: float) -> dict[str, FleetHost]:
    """Every host of the inventory (active ``nodes``) and of the patch controller
    (``views``: query_hosts entries), by name."""
    reports = {view["hostname"]: view for view in views}
    hosts: dict[str, FleetHost] = {}
    for node in nodes:
        name = node.name or node.uuid
        hosts[name] = _host(node, reports.get(name), offline_after)
    for name, view in reports.items():
        if name not in hosts:
            seen = float(view.get("secs_since_ack", 0))
            hosts[name] = dataclasses.replace(_from_view(name, "", view, seen, (
                "unlocked", "enabled", "available" if seen <= offline_after else "offline")),
                in_inventory=False)
    return hosts


def _host(node: Any, view: Mapping[str, Any] | None, offline_after: float) -> FleetHost:
    locked = bool(node.maintenance)
    reason = node.maintenance_reason or "" if locked else ""
    image = str((node.driver_internal_info or {}).get(DEPLOYED_KEY) or "")
    if view is None:
        properties = node.properties or {}
        return FleetHost(node.name or node.uuid, node.uuid,
                         personalities(properties.get("nodetype"), ()),
                         "locked" if locked else "unlocked", "disabled", "offline",
                         patching=False, seconds_since_report=float("inf"),
                         lock_reason=reason, image_checksum=image)
    seen = float(view.get("secs_since_ack", 0))
    reporting = seen <= offline_after and node.power_state != "power off"
    if locked:
        states = ("locked", "disabled", "online" if reporting else "offline")
    elif reporting:
        states = ("unlocked", "enabled", "available")
    else:
        states = ("unlocked", "disabled", "offline")
    return dataclasses.replace(
        _from_view(node.name or node.uuid, node.uuid, view, seen, states, reason),
        image_checksum=image) if image else \
        _from_view(node.name or node.uuid, node.uuid, view, seen, states, reason)


def _from_view(name: str, uuid: str, view: Mapping[str, Any], seen: float,
               states: tuple[str, str, str], lock_reason: str = "") -> FleetHost:
    return FleetHost(
        name, uuid, personalities(view.get("nodetype"), view.get("subfunctions")),
        *states, patch_current=bool(view.get("patch_current")),
        requires_reboot=bool(view.get("requires_reboot")),
        node_is_patched=bool(view.get("node_is_patched")),
        patch_failed=bool(view.get("patch_failed")), interim=bool(view.get("interim_state")),
        patch_state=str(view.get("state", "idle")), seconds_since_report=seen,
        lock_reason=lock_reason)
