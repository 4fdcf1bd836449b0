"""The facade the API calls: validate, record intent, hand long work to a worker.

Every method returns quickly. Long actions take the node lock and move the node
into its transient state in one conditional UPDATE, then a worker finishes them.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from conductor import errors, secrets, states
from conductor.alarms import AlarmTable
from conductor.config import Settings
from conductor.db.history import NodeHistoryRows
from conductor.db.queries import Store, is_uuid_like, utcnow
from conductor.db.records import NodeHistory
from conductor.db.schema import INTERFACES
from conductor.dns import registration as dns_registration
from conductor.drivers import registry as hardware
from conductor.drivers.base import PowerState
from conductor.engine import actions as provisioning
from conductor.engine import intents
from conductor.engine.task import Task
from conductor.engine.workers import Workers
from conductor.identity import Tokens
from conductor.service import validation
from conductor.service.changes import ChangeFeed, live_probes
from conductor.service.conductors import Conductors
from conductor.service.fleet import Fleet
from conductor.service.ports import PortChanges
from conductor.service.ramdisk import AgentService

if TYPE_CHECKING:
    from conductor.metrics.exporter import Exporter
    from conductor.orchestration.orchestrator import Orchestrator
    from conductor.patching.controller import PatchController
    from conductor.service.updates import Updates

LOG = logging.getLogger(__name__)
S = states.State

#: Per-verb check of the request's extra arguments.
POWER_TARGETS = {p.value: p for p in (PowerState.ON, PowerState.OFF, PowerState.REBOOT,
                                      PowerState.SOFT_OFF, PowerState.SOFT_REBOOT)}

#: event -> ([conductor] key with the limit, states counted, task type name)
CONCURRENCY_LIMITS = {
    "deploy": ("max_concurrent_deploy", states.DEPLOY_STATES, "deploy"),
    "rebuild": ("max_concurrent_deploy", states.DEPLOY_STATES, "deploy"),
    "provide": ("max_concurrent_clean", states.CLEAN_STATES, "clean"),
    "clean": ("max_concurrent_clean", states.CLEAN_STATES, "clean"),
    "delete": ("max_concurrent_clean", states.CLEAN_STATES, "clean"),
}


#: Node JSON-object fields: never null, {} when empty (as Ironic shows them).
DICT_FIELDS = ("properties", "instance_info", "driver_info", "driver_internal_info",
               "extra", "network_data")
#: Port JSON-object fields, likewise {} when empty: clients PATCH /extra/KEY into them.
PORT_DICT_FIELDS = ("local_link_connection", "extra", "internal_info")


class Service:
    """One per process; holds the store, the settings and the worker pool."""

    def __init__(self, store: Store, settings: Settings, workers: Workers,
                 agent: AgentService, alarms: AlarmTable,
                 patching: PatchController | None, tokens: Tokens,
                 orchestration: Orchestrator | None = None,
                 history: NodeHistoryRows | None = None,
                 conductors: Conductors | None = None,
                 metrics: Exporter | None = None,
                 updates: Updates | None = None):
        self.store = store
        #: Image updates (/v1/update/, /updates/v1/...): conductor/service/updates.py.
        self.updates = updates
        #: GET /v1/conductors and a node's conductor (the hash ring's choice).
        self.conductors = conductors or Conductors.standalone(store.engine, settings)
        #: GET /metrics (conductor/metrics/exporter.py); None: no metrics.
        self.metrics = metrics
        #: Nodes' history rows (GET /v1/nodes/{node}/history, the console's node page).
        self.history = history or NodeHistoryRows(store.engine)
        self.settings = settings
        self.workers = workers
        self.host = settings.conductor.host
        #: Encrypts driver_info secrets before they reach the database.
        self.cipher = workers.drivers.context.cipher
        #: The ramdisk endpoints (lookup, heartbeat): conductor/service/ramdisk.py.
        self.agent = agent
        #: Active alarms (/fm/v1/alarms, `metalcast alarm list`).
        self.alarms = alarms
        #: The patch controller (/patch/...); None when [patching] enabled = false.
        self.patching = patching
        #: Identity v3 tokens (/v3/auth/tokens, X-Auth-Token): conductor/identity.py.
        self.tokens = tokens
        #: sw-manager strategies (/api/orchestration/...); None when disabled.
        self.orchestration = orchestration
        #: The console's fleet page (api/console/): counts and pages of nodes.
        self.fleet = Fleet(store.engine)
        #: The console's one publisher of state changes (its live pages' events).
        self.changes = ChangeFeed(self.fleet, live_probes(patching, orchestration, updates))

    # -- nodes -------------------------------------------------------------
    def create_node(self, body: dict, legacy_available: bool = False):
        values = validation.parse_fields(body, validation.NODE_FIELDS, "node",
                                         mandatory=validation.NODE_MANDATORY,
                                         forbidden=validation.NODE_PATCH_ONLY)
        values.update(hardware.resolve_interfaces(values["driver"], values,
                                                  self.settings.conductor.hardware_types))
        values.setdefault("conductor_group", "")
        values["driver_info"] = self._seal(None, values.get("driver_info") or {})
        for key in DICT_FIELDS:
            values.setdefault(key, {})
        state = S.AVAILABLE if legacy_available else S.ENROLL
        node = self.store.create_node(dict(values, provision_state=state.value,
                                           provision_updated_at=utcnow()))
        LOG.info("Node %s (%s) enrolled with driver %s", node.uuid, node.name, node.driver)
        return node

    def get_node(self, ident: str):
        return self.store.get_node(ident)

    def list_nodes(self, filters: dict | None = None, **kwargs):
        filters = dict(filters or {})
        conductor = filters.pop("conductor", None)
        if conductor is not None:   # the ring's choice, not a column (API 1.49)
            return self.conductors.nodes_of(conductor, self.store.list_nodes, filters,
                                            **kwargs)
        return self.store.list_nodes(filters=filters, **kwargs)

    def update_node(self, ident: str, patch):
        node = self.store.get_node(ident)
        table = {k: v for k, v in validation.NODE_FIELDS.items()
                 if k not in validation.NODE_CREATE_ONLY}
        doc = {key: getattr(node, key) for key in table}
        doc.update({key: doc[key] or {} for key in DICT_FIELDS if key in doc})
        # The patch applies to the stored values (secrets encrypted): an operation that
        # reads a secret is refused (400) rather than applied to a masked copy, where
        # a copy would silently store "******" and a move lose the secret.
        secrets.refuse_secret_reads(patch, doc)
        changes = validation.apply_patch(doc, patch, table, validation.NODE_MANDATORY)
        if "driver_info" in changes:
            changes["driver_info"] = self._seal(node.driver_info, changes["driver_info"])
            if changes["driver_info"] == node.driver_info:  # only masks were echoed
                del changes["driver_info"]
        self._check_node_changes(node, changes)
        if changes and not self.store.update_node(node.id, changes,
                                                  expect={"reservation": None}):
            raise errors.NodeLocked(node=node.uuid, host=self.store.get_node_by_id(
                node.id).reservation or "unknown")
        return self.store.get_node_by_id(node.id)

    def _seal(self, stored: dict | None, info: dict | None) -> dict | None:
        """driver_info as it is stored: echoed masks resolved, secrets encrypted.

        A patched driver_info mixes stored (encrypted) values with new plaintext;
        encryption is idempotent, so only the new secrets are encrypted.
        """
        info = secrets.restore_masked(stored, info)
        return self.cipher.encrypt_dict(info) if self.cipher else info

    def _check_node_changes(self, node, changes: dict) -> None:
        if any(k == "driver" or k.endswith("_interface") for k in changes):
            # A new driver resets unnamed interfaces to its defaults; otherwise the
            # node keeps its current choices except those the patch names.
            chosen = {} if "driver" in changes else {
                f"{i}_interface": getattr(node, f"{i}_interface") for i in INTERFACES}
            chosen.update({k: v for k, v in changes.items() if k.endswith("_interface")})
            changes.update(hardware.resolve_interfaces(
                changes.get("driver", node.driver), chosen,
                self.settings.conductor.hardware_types))
        if changes.get("protected") and node.provision_state != S.ACTIVE.value:
            raise errors.InvalidParameter("Protected can only be set in state active.")
        if "protected" in changes and not changes["protected"]:
            changes["protected_reason"] = None
        if changes.get("maintenance") is False:
            changes.update(maintenance_reason=None, fault=None)

    def delete_node(self, ident: str) -> None:
        node = self.store.get_node(ident)
        if node.protected:
            raise errors.InvalidParameter(f"Node {node.uuid} is protected and cannot be "
                                          "deleted; unset protected first.")
        allowed = {s.value for s in states.DELETE_ALLOWED}
        if not self.settings.conductor.allow_deleting_available_nodes:
            allowed.discard(S.AVAILABLE.value)
        if node.provision_state is not None and node.provision_state not in allowed \
                and not node.maintenance:
            raise errors.Conflict(
                f"Can not delete node {node.uuid} while it is in provision state "
                f"\"{node.provision_state}\". Valid provision states to start deletion are "
                f"({', '.join(sorted(allowed))}), or set the node into maintenance mode")
        if node.instance_uuid and not node.maintenance:
            raise errors.NodeAssociated(node=node.uuid, instance=node.instance_uuid)
        self.store.reserve(node, self.host)
        # Queued with the delete, in one transaction; removed from DNS (with retries)
        # off this thread, so a DNS server that is down neither slows nor fails this.
        dns_removal = dns_registration.on_delete(node, self.workers.drivers.context)
        self._forget_boot_config(node)
        self.store.delete_node(node.id, dns_removal=dns_removal)
        LOG.info("Node %s deleted", node.uuid)
        if dns_removal is not None and self.workers.dns_retry is not None:
            self.workers.dns_retry.wake()

    def _forget_boot_config(self, node) -> None:
        """Remove the node's per-MAC boot files (pxe/ipxe) while its ports still exist."""
        task = Task(self.store, node, self.host, self.workers.drivers)
        try:
            task.boot.clean_up_instance(task)
        except errors.MetalcastError as exc:
            LOG.warning("Node %s: boot config not removed on delete: %s", node.uuid, exc)

    def node_history(self, ident: str, limit: int | None = None, marker: str | None = None,
                     newest_first: bool = False) -> list[NodeHistory]:
        """The node's history events (state changes, errors), oldest first."""
        node = self.store.get_node(ident)
        return self.history.list_for_node(node.id, limit, marker, newest_first)

    def node_history_event(self, ident: str, event_uuid: str) -> NodeHistory:
        return self.history.get(self.store.get_node(ident).id, event_uuid)

    def set_maintenance(self, ident: str, on: bool, reason: str | None = None):
        node = self.store.get_node(ident)
        values = {"maintenance": on, "maintenance_reason": reason if on else None}
        if not on:
            values["fault"] = None
        self.store.update_node(node.id, values)

    def validate_node(self, ident: str) -> dict[str, dict]:
        node = self.store.get_node(ident)
        task = Task(self.store, node, self.host, self.workers.drivers)
        result: dict[str, dict] = {}
        for kind in ("bios", "boot", "console", "deploy", "firmware", "inspect",
                     "management", "network", "power", "raid", "rescue", "storage"):
            try:
                task.iface(kind).validate(task)
                result[kind] = {"result": True, "reason": None}
            except errors.MetalcastError as exc:
                result[kind] = {"result": False, "reason": str(exc)}
        return result

    # -- provisioning ------------------------------------------------------
    def set_provision_state(self, ident: str, verb: str, clean_steps=None,
                            deploy_steps=None, configdrive=None) -> None:
        """Start ``verb`` on the node; raises 4xx/503 without changing anything."""
        node = self.store.get_node(ident)
        event = states.VERBS.get(verb)
        if event is None:
            raise errors.InvalidParameter(f"Invalid provision state target {verb!r}; "
                                          f"expected one of {sorted(states.VERBS)}.")
        current = node.provision_state or S.AVAILABLE.value
        try:
            new = states.transition(current, event)
        except errors.InvalidTransition:
            raise errors.InvalidStateRequested(action=verb, node=node.uuid,
                                               state=current) from None
        self._check_request(node, event, clean_steps)
        if event in ("deploy", "rebuild"):     # as Ironic: NoValidHost (400) when no
            self.conductors.conductor_for(node)   # live conductor serves its group
        action = provisioning.ACTIONS.get(event)
        if new in states.STABLE_STATES or action is None or (
                event == "manage" and new is not S.VERIFYING):
            return self._move_now(node, current, event, new)
        self._check_limits(event)
        target = S.MANAGEABLE if event == "clean" else states.target_of(new)
        values = dict(provision_state=new.value, provision_updated_at=utcnow(),
                      target_provision_state=getattr(target, "value", None),
                      conductor_affinity=self.host, last_error=None)
        values.update(self._intent(node, event, deploy_steps, configdrive))
        owner = self.conductors.work_owner(node, self.host)
        if owner != self.host:
            return self._hand_over(node, owner, verb, event, clean_steps, values)
        node = self._lock(node, values, expect={"provision_state": node.provision_state})
        LOG.info("Node %s: %s requested, now %s", node.uuid, verb, new.value)
        args = (clean_steps, True) if event == "clean" else ()
        self.workers.spawn(Task(self.store, node, self.host, self.workers.drivers), action, *args)

    def _hand_over(self, node, owner: str, verb: str, event: str, clean_steps,
                   values: dict) -> None:
        """The node's conductor (by the hash ring) is another process: the lock in its
        name, the work left in the row for its poller (conductor/engine/intents.py)."""
        values = dict(values, **intents.handover_values(event, clean_steps, node))
        self.store.reserve(node, owner, values,
                           expect={"provision_state": node.provision_state})
        LOG.info("Node %s: %s requested, now %s, handed to conductor %s", node.uuid, verb,
                 values["provision_state"], owner)

    def _lock(self, node, values: dict, expect: dict | None = None):
        """Claim a worker slot, then the node lock with ``values``; the fresh node.

        The spawn() that must follow runs on the claimed slot, so a node never waits
        in its new transient state for a worker that a 503 refused.
        """
        self.workers.claim_slot()
        try:
            # Unchanged since it was read (its updated_at): the locked row is ``node``
            # with ``values``, no need to read it back. Changed meanwhile (a PATCH, a
            # power sync): locked on ``expect`` alone and read again, as before.
            written = dict(values, updated_at=utcnow())
            try:
                self.store.reserve(node, self.host, written,
                                   expect=dict(expect or {}, updated_at=node.updated_at))
                return dataclasses.replace(node, **written, reservation=self.host)
            except errors.NodeLocked:
                raise
            except errors.Conflict:
                pass
            self.store.reserve(node, self.host, values, expect=expect)
            return self.store.get_node_by_id(node.id)
        except BaseException:
            self.workers.release_slot()
            raise

    def _check_request(self, node, event: str, clean_steps) -> None:
        if node.maintenance and event in ("deploy", "rebuild", "provide", "clean",
                                          "inspect", "rescue", "service"):
            raise errors.InvalidParameter(
                f"Node {node.uuid} is in maintenance mode ({node.maintenance_reason}); "
                "unset maintenance before this action.")
        if event == "clean":
            if not isinstance(clean_steps, list) or not clean_steps or not all(
                    isinstance(s, dict) and "interface" in s and "step" in s
                    for s in clean_steps):
                raise errors.InvalidParameter(
                    '"clean_steps" is required for manual cleaning: a list of '
                    '{"interface": ..., "step": ..., "args": {...}} objects.')
        elif clean_steps is not None:
            raise errors.InvalidParameter('"clean_steps" is only valid with target "clean".')
        if event in ("deploy", "rebuild"):
            self._validate_interfaces(node, ("power", "management", "boot", "deploy"))
        if event in ("delete", "rebuild") and node.protected:
            raise errors.InvalidParameter(f"Node {node.uuid} is protected; unset protected "
                                          "before this action.")

    def _validate_interfaces(self, node, kinds) -> None:
        """Refuse the request (400) when an interface says the node cannot do it yet."""
        task = Task(self.store, node, self.host, self.workers.drivers)
        for kind in kinds:
            try:
                task.iface(kind).validate(task)
            except errors.MetalcastError as exc:
                raise errors.InvalidParameter(
                    f"Failed to validate the {kind} interface of node {node.uuid}: {exc}. "
                    "Fix the node (GET /v1/nodes/{node}/validate shows every interface) "
                    "and retry.") from None

    def _intent(self, node, event, deploy_steps, configdrive) -> dict:
        if event not in ("deploy", "rebuild"):
            return {}
        internal = dict(node.driver_internal_info or {})
        internal.pop("deploy_steps", None)
        if deploy_steps:
            internal["user_deploy_steps"] = deploy_steps
        info = dict(node.instance_info or {})
        if configdrive is not None:
            info["configdrive"] = configdrive
        return {"driver_internal_info": internal, "instance_info": info}

    def _check_limits(self, event: str) -> None:
        limit = CONCURRENCY_LIMITS.get(event)
        if limit is None:
            return
        option, counted, task_type = limit
        maximum = getattr(self.settings.conductor, option)
        if self.store.count_nodes([s.value for s in counted]) >= maximum:
            raise errors.ConcurrentActionLimit(task_type=task_type, limit=maximum)

    def _move_now(self, node, current: str, event: str, new) -> None:
        """Transitions with no hardware work (abort, unhold, manage from available...)."""
        values = dict(provision_state=new.value, provision_updated_at=utcnow(),
                      target_provision_state=getattr(states.target_of(new), "value", None))
        if event == "abort":
            values["last_error"] = f"Operation aborted by request in state {current!r}."
        if not self.store.update_node(node.id, values,
                                      expect={"reservation": None,
                                              "provision_state": node.provision_state}):
            raise errors.NodeLocked(node=node.uuid, host=self.store.get_node_by_id(
                node.id).reservation or "unknown")
        LOG.info("Node %s moved from %s to %s (%s)", node.uuid, current, new.value, event)

    def set_power_state(self, ident: str, target: str, timeout=None) -> None:
        node = self.store.get_node(ident)
        power = POWER_TARGETS.get(target)
        if power is None:
            raise errors.InvalidParameter(f"Invalid power state target {target!r}; "
                                          f"expected one of {sorted(POWER_TARGETS)}.")
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)
                                    or timeout < 1):
            raise errors.InvalidParameter("timeout must be a positive integer")
        owner = self.conductors.work_owner(node, self.host)
        if owner != self.host:      # its conductor runs it (conductor/engine/intents.py)
            self.store.reserve(node, owner, intents.power_handover(node, power.value, timeout),
                               expect={"updated_at": node.updated_at})
            LOG.info("Node %s: power %s requested, handed to conductor %s", node.uuid,
                     power.value, owner)
            return
        node = self._lock(node, {"target_power_state": power.value,
                                 "conductor_affinity": self.host})
        LOG.info("Node %s: power %s requested", node.uuid, power.value)
        self.workers.spawn(Task(self.store, node, self.host, self.workers.drivers),
                           provisioning.change_power, power, timeout)

    # -- drivers -----------------------------------------------------------
    def list_drivers(self) -> dict[str, list[str]]:
        """Hardware type -> the live conductors that serve it."""
        hosts: dict[str, list[str]] = {}
        for host, types in self.conductors.alive():
            for name in types:
                if name in hardware.HARDWARE_TYPES:
                    hosts.setdefault(name, []).append(host)
        return hosts

    def get_driver(self, name: str) -> tuple[list[str], dict[str, tuple[str, ...]]]:
        hosts = self.list_drivers().get(name)
        if not hosts:
            raise errors.NotFound(f"Driver {name} could not be found.")
        return hosts, hardware.HARDWARE_TYPES[name]

    # -- ports -------------------------------------------------------------
    def create_port(self, body: dict):
        values = validation.parse_fields(body, validation.PORT_FIELDS, "port",
                                         mandatory=validation.PORT_MANDATORY)
        node = self.store.get_node(values.pop("node_uuid"))
        for key in PORT_DICT_FIELDS:
            values.setdefault(key, {})
        port = self.store.create_port(dict(values, node_id=node.id))
        LOG.info("Port %s (%s) created for node %s", port.uuid, port.address, node.uuid)
        return port

    def get_port(self, port_uuid: str):
        return self.store.get_port(port_uuid)

    def list_ports(self, node: str | None = None, address: str | None = None, **kwargs):
        filters = {}
        if node is not None:
            filters["node_uuid"] = node if is_uuid_like(node) else self.store.get_node(node).uuid
        if address is not None:
            filters["address"] = validation.mac_address(address)
        return self.store.list_ports(filters, **kwargs)

    def update_port(self, port_uuid: str, patch):
        port = self.store.get_port(port_uuid)
        table = {k: v for k, v in validation.PORT_FIELDS.items() if k != "uuid"}
        doc = {key: getattr(port, key) for key in table}
        doc.update({key: doc[key] or {} for key in PORT_DICT_FIELDS if key in doc})
        changes = validation.apply_patch(doc, patch, table, validation.PORT_MANDATORY)
        if "node_uuid" in changes:
            changes["node_id"] = self.store.get_node(changes.pop("node_uuid")).id
        # Under the node locks, Ironic's state rules, boot files follow: port_changes.py.
        self._port_changes().update(port, changes)
        return self.store.get_port(port.uuid)

    def delete_port(self, port_uuid: str) -> None:
        port = self.store.get_port(port_uuid)
        self._port_changes().delete(port)

    def _port_changes(self) -> PortChanges:
        return PortChanges(self.store, self.host, self.workers.drivers,
                           owner_of=self.conductors.shown_conductor)
