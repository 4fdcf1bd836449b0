"""Updating and deleting ports the way Ironic's conductor does (``update_port``,
``destroy_port`` in ironic/conductor/manager.py).

A port change takes the lock of every node it touches, so it cannot race a deploy
or clean step that writes the node's boot files; a node locked by someone else
answers 409 NodeLocked. Ironic's state rules decide what may change (409 with what
to do otherwise). Boot files and DHCP host entries are keyed by MAC: once the row
is written, each node's boot interface drops those of the MACs it lost and, when
its ramdisk config is live, rewrites it for the MACs it has now
(``BootInterface.ports_changed``). That runs on the node's conductor (by the hash
ring), whose boot roots hold its files: a change reaching another process (an API
process) passes the node's lock to that conductor with the old MACs in the row, and
its poller does it (conductor/engine/intents.py).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from conductor import errors, states
from conductor.db.queries import Store
from conductor.db.records import Node
from conductor.engine import intents
from conductor.engine.task import Task

if TYPE_CHECKING:
    from conductor.drivers.registry import DriverRegistry

LOG = logging.getLogger(__name__)
S = states.State

#: Port fields Ironic calls "connectivity attributes": changed only in these node
#: states or in maintenance (ironic conductor update_port).
CONNECTIVITY_FIELDS = ("pxe_enabled", "local_link_connection", "physical_network")
CONNECTIVITY_STATES = (S.ENROLL.value, S.INSPECTING.value, S.INSPECT_WAIT.value,
                       S.MANAGEABLE.value)
#: Fields whose change moves a MAC: the node's boot files and DHCP entries follow.
BOOT_FIELDS = ("address", "node_id", "pxe_enabled")
#: port internal_info key -> what the attached VIF is used for (Ironic get_attached_vif).
VIF_KEYS = {"tenant_vif_port_id": "tenant", "cleaning_vif_port_id": "cleaning",
            "provisioning_vif_port_id": "provisioning", "rescuing_vif_port_id": "rescuing"}


class PortChanges:
    """Applies port updates and deletions under the node locks; one per Service."""

    def __init__(self, store: Store, host: str, drivers: DriverRegistry,
                 owner_of: Callable[[Node], str | None] | None = None):
        self.store = store
        self.host = host
        self.drivers = drivers
        #: The node's conductor by the hash ring (None: this process, as when alone).
        self.owner_of = owner_of or (lambda node: None)

    def update(self, port, changes: dict) -> None:
        """Write ``changes`` (validated column values) to ``port``; 409 when refused."""
        # A value patched to what it already is (e.g. the MAC in upper case) is no change.
        changes = {k: v for k, v in changes.items() if getattr(port, k, None) != v}
        if not changes:
            return
        node_ids = [port.node_id]
        if "node_id" in changes:
            node_ids.append(changes["node_id"])
        with self._locked(node_ids) as tasks:
            for task in tasks:
                check_update(port, changes, task.node)
            before = self._macs(tasks)
            self.store.update_port(port.id, changes)
            LOG.info("Port %s of node %s updated: %s", port.uuid, tasks[0].node.uuid,
                     ", ".join(sorted(changes)))
            if any(key in changes for key in BOOT_FIELDS):
                self._sync_boot(tasks, before)

    def delete(self, port) -> None:
        """Delete ``port``; 409 while a VIF is bound to it (unless in maintenance)."""
        with self._locked([port.node_id]) as tasks:
            check_delete(port, tasks[0].node)
            before = self._macs(tasks)
            self.store.delete_port(port.id)
            LOG.info("Port %s (%s) of node %s deleted", port.uuid, port.address,
                     tasks[0].node.uuid)
            self._sync_boot(tasks, before)

    @contextlib.contextmanager
    def _locked(self, node_ids: list[int]) -> Iterator[list[Task]]:
        """Lock each node (NodeLocked if another holds one), release them all at the end."""
        tasks: list[Task] = []
        try:
            for node_id in node_ids:
                node = self.store.get_node_by_id(node_id)
                self.store.reserve(node, self.host)
                # Rules are checked on the node as it is under our lock, not as read before.
                task = Task(self.store, self.store.get_node_by_id(node_id), self.host,
                            self.drivers)
                tasks.append(task)
            yield tasks
        finally:
            for task in reversed(tasks):
                task.release()

    def _macs(self, tasks: list[Task]) -> dict[int, set[str]]:
        return {t.node.id: {p.address for p in self.store.list_ports({"node_id": t.node.id})}
                for t in tasks}

    def _sync_boot(self, tasks: list[Task], before: dict[int, set[str]]) -> None:
        """Each node's boot interface drops the MACs it lost (and rewrites a live config),
        here or, when the node's conductor is another process, on it.

        The port row is already written: a boot-side failure is logged, not raised, so
        the API answer matches what the database holds.
        """
        for task in tasks:
            owner = self.owner_of(task.node)
            if owner not in (None, self.host) and task.hand_over(
                    owner, intents.ports_handover(task.node, before[task.node.id])):
                LOG.info("Node %s: boot config after a port change handed to conductor "
                         "%s", task.node.uuid, owner)
                continue
            try:
                task.boot.ports_changed(task, before[task.node.id])
            except errors.MetalcastError as exc:
                LOG.error("Node %s: boot config not updated after a port change: %s",
                          task.node.uuid, exc)


def check_update(port, changes: dict, node) -> None:
    """Ironic's update_port rules for one node the change touches (raise 409)."""
    if node.provision_state == S.INSPECTING.value:
        raise errors.Conflict(f'Cannot update port "{port.uuid}" on "{node.uuid}" while '
                              f'it is in state "{node.provision_state}".')
    if node.maintenance:
        return
    moves_mac = "address" in changes or "node_id" in changes
    if moves_mac and (node.provision_state == S.ACTIVE.value or node.instance_uuid):
        raise errors.Conflict(
            f"Cannot update hardware address or node of port {port.uuid} as node "
            f"{node.uuid} is active or has an instance UUID assigned. Set the node into "
            "maintenance mode first (openstack baremetal node maintenance set "
            f"{node.uuid}), then retry.")
    changed = sorted(set(CONNECTIVITY_FIELDS) & set(changes))
    if changed and node.provision_state not in CONNECTIVITY_STATES:
        raise errors.Conflict(
            f"Port {port.uuid} can not have any connectivity attributes "
            f"({', '.join(changed)}) updated unless node {node.uuid} is in one of the "
            f"states {', '.join(CONNECTIVITY_STATES)} or in maintenance mode. The "
            f"current state is {node.provision_state}.")


def check_delete(port, node) -> None:
    """Ironic's destroy_port rule: no deleting a port a VIF is bound to, unless in
    maintenance (409)."""
    internal = port.internal_info or {}
    bound = next(((internal[key], use) for key, use in VIF_KEYS.items()
                  if internal.get(key)), None)
    if bound and not node.maintenance:
        raise errors.Conflict(
            f"Cannot delete the port {port.uuid} as it is bound to VIF {bound[0]} for "
            f"{bound[1]} use. Set node {node.uuid} into maintenance mode to delete it "
            "anyway.")
