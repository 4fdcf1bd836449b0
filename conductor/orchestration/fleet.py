"""The fleet as this appliance has it: what strategy steps read and change.

Hosts are active nodes plus the patch controller's host states (hosts.map_hosts);
alarms are the appliance's AlarmTable (patching's re-evaluated first); lock and
unlock are the node's maintenance flag (what ``sw-patch host-install`` treats as a
locked host); installs go through the patch controller exactly as
``sw-patch host-install-async`` does; a reboot is a power reboot through the
node's BMC, run by the engine's workers under the node lock like ``PUT
states/power``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from conductor import errors
from conductor.alarms import AlarmTable
from conductor.config import Settings
from conductor.db.queries import Store
from conductor.drivers.base import PowerState
from conductor.engine import actions
from conductor.engine.task import Task
from conductor.engine.workers import Workers
from conductor.orchestration.hosts import FleetHost, map_hosts

if TYPE_CHECKING:
    from conductor.patching.controller import PatchController

LOG = logging.getLogger(__name__)
ACTIVE = "active"
#: The node columns a host's states come from (hosts.map_hosts): the rest of a node
#: row is not read on every pass of the runner.
#: instance_info fields a re-image replaces as a whole: the image's checksum in any of
#: its forms (Glance's os_hash pair wins over image_checksum when both are there) and
#: the previous delta.
IMAGE_FIELDS = ("image_checksum", "image_os_hash_algo", "image_os_hash_value")
#: instance_info key naming the strategy whose re-image the node last got.
STRATEGY_KEY = "metalcast_strategy"
HOST_COLUMNS = ("uuid", "name", "provision_state", "maintenance", "maintenance_reason",
                "power_state", "properties", "driver_internal_info")


class ApplianceFleet:
    """steps.Fleet over the store, the patch controller, the alarms and the workers."""

    def __init__(self, store: Store, settings: Settings, patching: PatchController | None,
                 alarms: AlarmTable, workers: Workers | None,
                 rebuild: Callable[[str], None] | None = None):
        self.store, self.settings = store, settings
        self.patching, self.alarm_table, self.workers = patching, alarms, workers
        #: Starts a node's ``rebuild`` as the API does (the service facade's
        #: set_provision_state: its checks, limits and worker); None: no re-image.
        self._rebuild = rebuild

    def hosts(self, names: Iterable[str] | None = None) -> dict[str, FleetHost]:
        """Every host, or those of ``names`` (what a running step polls)."""
        filters: dict[str, Any] = {"provision_state": ACTIVE}
        if names is not None:
            filters["names"] = names = set(names)
        nodes = self.store.list_nodes(filters, columns=HOST_COLUMNS)
        views = self.patching.host_summaries(names) if self.patching is not None else []
        return map_hosts(nodes, views, self.settings.orchestration.host_offline_after)

    def patches(self) -> dict[str, Any]:
        return self.patching.query()["pd"] if self.patching is not None else {}

    def alarms(self) -> list[Any]:
        if self.patching is not None:
            self.patching.reevaluate_alarms()
        return self.alarm_table.list()

    def lock(self, names: Iterable[str], reason: str) -> list[str]:
        """Maintenance on for the hosts not in it, in one statement; the hosts locked
        for ``reason`` now (a host locked already by someone else is not among them;
        one locked with this very reason is: a pass cut short after locking it and
        before saving that, resumed after a restart)."""
        ours = self.store.set_maintenance_by_name(names, True, reason)
        LOG.info("Hosts locked (maintenance on, %s): %s", reason, ", ".join(ours) or "none")
        return ours

    def unlock(self, names: Iterable[str]) -> None:
        names = list(names)
        self.store.set_maintenance_by_name(names, False)
        LOG.info("Hosts unlocked (maintenance off): %s", ", ".join(names))

    def install(self, name: str) -> str:
        """Ask the host to install (host-install-async); the error text, or ""."""
        if self.patching is None:
            return "patching is disabled on this conductor ([patching] enabled = false)"
        return self.patching.host_install_async(name).error.strip()

    def rebuild(self, name: str, instance_info: dict[str, Any], strategy: str = "") -> str:
        """Re-image the host through the ramdisk with ``instance_info``'s image (a
        delta when it names one); the refusal's text, or "".

        The node's instance_info names the strategy (``STRATEGY_KEY``) before the
        rebuild starts. A conductor killed after starting a rebuild but before the
        strategy recorded it sends it again on restart: a node that already names this
        strategy and has left ``active`` (deploying, or failed by the restart) was sent
        to, and is not re-imaged twice; the step then reads its state."""
        if self._rebuild is None:
            return "re-imaging is not available on this conductor"
        try:
            node = self.store.get_node(name)
            if strategy and (node.instance_info or {}).get(STRATEGY_KEY) == strategy \
                    and node.provision_state != "active":
                LOG.info("Node %s (%s): rebuild by strategy %s was already requested "
                         "(now %s)", node.uuid, name, strategy, node.provision_state)
                return ""
            info = {k: v for k, v in (node.instance_info or {}).items()
                    if k not in IMAGE_FIELDS and not k.startswith("image_delta_")}
            info.update({k: v for k, v in instance_info.items() if v is not None})
            if strategy:
                info[STRATEGY_KEY] = strategy
            self.store.update_node(node.id, {"instance_info": info})
            self._rebuild(name)
        except errors.MetalcastError as exc:
            return str(exc)
        LOG.info("Node %s (%s): rebuild requested by orchestration (%s)", node.uuid, name,
                 info["image_source"])
        return ""

    def provision(self, names: Iterable[str]) -> dict[str, tuple[str, str]]:
        """(provision state, last error) of each named node, whatever its state."""
        nodes = self.store.list_nodes({"names": set(names)},
                                      columns=("name", "provision_state", "last_error"))
        return {str(n.name): (n.provision_state or "", n.last_error or "") for n in nodes}

    def reboot(self, name: str) -> None:
        """Power reboot through the node's BMC; a refusal (node busy, no free worker)
        is logged: the step waiting for the host shows it did not come back."""
        if self.workers is None:
            LOG.error("Host %s: no workers to reboot it", name)
            return
        host = self.settings.conductor.host
        node = self.store.get_node(name)
        try:
            self.workers.claim_slot()
        except errors.MetalcastError as exc:
            LOG.error("Node %s (%s): reboot not requested: %s", node.uuid, name, exc)
            return
        try:
            self.store.reserve(node, host, {"target_power_state": PowerState.REBOOT.value,
                                            "conductor_affinity": host})
            node = self.store.get_node_by_id(node.id)
        except errors.MetalcastError as exc:
            self.workers.release_slot()
            LOG.error("Node %s (%s): reboot not requested: %s", node.uuid, name, exc)
            return
        LOG.info("Node %s (%s): reboot requested by orchestration", node.uuid, name)
        self.workers.spawn(Task(self.store, node, host, self.workers.drivers),
                           actions.change_power, PowerState.REBOOT, None)
