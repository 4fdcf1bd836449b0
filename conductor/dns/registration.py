"""Keeps each node's DNS records in step with its provision state, retrying failures.

A node that becomes ``active`` gets ``<label>.<zone>`` A/AAAA records and PTRs for
its addresses; undeploying or deleting it removes them. DNS is a convenience, not a
condition of a deploy: a refused or unanswered update never fails the node. It is
logged as a WARNING with the node's UUID and left pending for ``DnsRetry``.

State lives in the node's ``driver_internal_info`` (as power_sync's failure count),
so it survives a conductor restart and a takeover, shows in the API and needs no
schema change; it is written only under the node lock:

* ``dns_records``: ``{"label", "fqdn", "addresses"}`` registered in DNS now;
* ``dns_pending``: present while DNS lags behind: ``{"action": "register" |
  "unregister", "wanted": records or None, "stale": [records that may still be in
  DNS], "error", "attempts"}``.

A deleted node has no row left for that state: its records are queued in the
``dns_pending_removals`` table instead, and conductor/dns/removals.py removes them.

Every attempt reconciles: stale records (what was registered, or half-registered
by a failed attempt, that the wanted state no longer contains) are removed, then
the wanted records are put in place. Both operations are idempotent in DNS.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conductor import errors
from conductor.cluster.ring import runs_here
from conductor.db.queries import Store
from conductor.dns import rfc2136 as dns
from conductor.dns.records import PENDING_KEY, RECORDS_KEY, HostRecords, describe
from conductor.dns.removals import PendingRemovals
from conductor.netboot.dhcp import lease_addresses

if TYPE_CHECKING:
    from conductor.alarms import AlarmTable
    from conductor.drivers.context import DriverContext
    from conductor.engine.task import Task

LOG = logging.getLogger(__name__)

#: instance_info keys that name a node's addresses explicitly (a string or a list).
ADDRESS_KEYS = ("ip_address", "ipv6_address")


# -- hooks (called by provisioning and service with the node lock held) ---------
def on_active(task: Task) -> None:
    """The node becomes active: register its name and addresses. Never raises."""
    client = task.context.dns
    if client.enabled:
        _guarded(task, client, lambda: wanted_records(task, client))


def on_undeploy(task: Task) -> None:
    """The instance goes away: remove what was registered for it. Never raises."""
    client = task.context.dns
    if client.enabled and _has_state(task.node):
        _guarded(task, client, lambda: None)


def on_delete(node, context: DriverContext) -> dict | None:
    """The node row is about to be deleted: what of it to remove from DNS later.

    Returns ``dns_pending_removals`` values for ``Store.delete_node`` (None when DNS
    may hold nothing of the node). No DNS message is sent here: the delete never
    waits on the DNS server; conductor.dns.removals does the removal, with retries.
    """
    stale = _stale(node.driver_internal_info or {}, None) if _has_state(node) else []
    if not stale:
        return None
    LOG.info("Node %s: DNS records queued for removal: %s", node.uuid, describe(stale))
    return {"node_uuid": node.uuid, "node_name": node.name,
            "zone": context.dns.zone or "",
            "records": [records.to_dict() for records in stale]}


def _guarded(task: Task, client, wanted) -> None:
    try:
        reconcile(task, client, wanted())
    except Exception:  # DNS must never fail a deploy or an undeploy
        LOG.exception("Node %s: DNS registration failed unexpectedly", task.node.uuid)


# -- the work ----------------------------------------------------------------------
def wanted_records(task: Task, client: dns.DnsInterface) -> HostRecords | None:
    """The records the active node should have; None (with a warning) when none can be."""
    node = task.node
    label = dns.host_label(node.name, client.zone)
    if label is None:
        LOG.warning("Node %s: name %r cannot be made into a DNS host name (letters, "
                    "digits and hyphens, at most 63); no DNS records registered",
                    node.uuid, node.name)
        return None
    addresses = node_addresses(task)
    if not addresses:
        LOG.warning("Node %s: no address known (instance_info ip_address/ipv6_address, "
                    "DHCP lease); no DNS records registered for %s", node.uuid, label)
        return None
    return HostRecords(label, client.fqdn(label), tuple(addresses))


def node_addresses(task: Task) -> list[str]:
    """instance_info's explicit addresses, else the DHCP leases of the node's MACs."""
    info = task.node.instance_info or {}
    values = []
    for key in ADDRESS_KEYS:
        value = info.get(key)
        values.extend(value if isinstance(value, list) else [value] if value else [])
    good, bad = dns.split_addresses(values)
    if bad:
        LOG.warning("Node %s: ignoring instance_info addresses that are not IP addresses: "
                    "%s", task.node.uuid, ", ".join(bad))
    return good or _lease_addresses(task)


def _lease_addresses(task: Task) -> list[str]:
    macs = [port.address for port in task.store.list_ports({"node_uuid": task.node.uuid})]
    if not macs:
        return []
    try:
        return dns.split_addresses(lease_addresses(task.context.settings, macs))[0]
    except Exception as exc:  # noqa: BLE001 - no lease is no address, not a failure
        LOG.warning("Node %s: could not read DHCP leases: %s", task.node.uuid, exc)
        return []


def reconcile(task: Task, client: dns.DnsInterface, wanted: HostRecords | None) -> bool:
    """Make DNS hold ``wanted`` (None: nothing) for the node; record the outcome.

    True when DNS is in step; False when it failed and a retry is pending.
    """
    node = task.node
    info = dict(node.driver_internal_info or {})
    stale = _stale(info, wanted)
    if wanted is None and not stale and PENDING_KEY not in info:
        return True  # nothing registered, nothing wanted
    try:
        for records in stale:
            _log_notes(node.uuid, client.unregister(records.label, list(records.addresses)))
        if wanted is not None:
            _log_notes(node.uuid, client.register(wanted.label, list(wanted.addresses)))
    except errors.MetalcastError as exc:
        _record_failure(task, info, wanted, stale, exc)
        return False
    info.pop(PENDING_KEY, None)
    if wanted is None:
        info.pop(RECORDS_KEY, None)
        LOG.info("Node %s: DNS records removed: %s", node.uuid, describe(stale))
    else:
        info[RECORDS_KEY] = wanted.to_dict()
        LOG.info("Node %s: DNS records registered: %s", node.uuid, describe([wanted]))
    task.update_now(driver_internal_info=info)  # what DNS holds: kept at once
    return True


def _stale(info: dict, wanted: HostRecords | None) -> list[HostRecords]:
    """Records that may be in DNS (registered, or half-done by a failed attempt) and
    are not part of ``wanted``."""
    pending = info.get(PENDING_KEY)
    pending = pending if isinstance(pending, dict) else {}
    candidates = [info.get(RECORDS_KEY), pending.get("wanted"), *(pending.get("stale") or [])]
    stale: list[HostRecords] = []
    for value in candidates:
        records = HostRecords.from_dict(value)
        rest = records.without(wanted) if records else None
        if rest is not None and rest not in stale:
            stale.append(rest)
    return stale


def _record_failure(task: Task, info: dict, wanted, stale, exc) -> None:
    previous = info.get(PENDING_KEY)
    previous = previous if isinstance(previous, dict) else {}
    attempts = int(previous.get("attempts") or 0) + 1
    info[PENDING_KEY] = {
        "action": "register" if wanted is not None else "unregister",
        "wanted": wanted.to_dict() if wanted is not None else None,
        "stale": [records.to_dict() for records in stale],
        "error": str(exc), "attempts": attempts,
    }
    task.update_now(driver_internal_info=info)  # what DNS holds: kept at once
    what = f"registration of {describe([wanted])}" if wanted else \
        f"removal of {describe(stale)}"
    interval = task.context.settings.dns.retry_interval
    LOG.warning("Node %s: DNS %s failed (attempt %d; retried every %gs): %s",
                task.node.uuid, what, attempts, interval, exc)


def _has_state(node) -> bool:
    info = node.driver_internal_info or {}
    return bool(info.get(RECORDS_KEY) or info.get(PENDING_KEY))


def _pending(node) -> dict | None:
    value = (node.driver_internal_info or {}).get(PENDING_KEY)
    return value if isinstance(value, dict) else None


def _log_notes(uuid: str, notes: list[str]) -> None:
    for note in notes:
        LOG.warning("Node %s: %s", uuid, note)


# -- the periodic retry ----------------------------------------------------------------
class DnsRetry:
    """Retries pending DNS work; each node briefly under its lock, skipped when busy.

    With ``owner_of`` (the hash ring: the node's conductor among the live ones) only
    the nodes it maps to this conductor are retried here, so each pending node is
    retried by one conductor, and by the new owner after a takeover; without it (or
    when the ring names none), the nodes this conductor acted on last or no one did.

    The DNS records of deleted nodes are retried too (conductor.dns.removals); their
    first attempt runs at once on a thread of this object's own (``wake``).
    """

    #: Columns the sweep reads to pick nodes (the node is re-read under the lock).
    COLUMNS = ("id", "uuid", "driver_internal_info", "reservation", "conductor_affinity",
               "provision_state", "driver", "conductor_group")

    def __init__(self, store: Store, settings, client: dns.DnsInterface,
                 open_task: Callable[[Any], Task], removals: PendingRemovals,
                 owner_of: Callable[[Any], str | None] | None = None):
        self.store = store
        self.settings = settings
        self.client = client
        #: Wraps a node this sweep has locked into a Task (conductor.engine.task).
        self.open_task = open_task
        self.host = settings.conductor.host
        #: Deleted nodes' removals (conductor.dns.removals).
        self.removals = removals
        #: The node's conductor by the hash ring (None: no ring, one conductor).
        self.owner_of = owner_of
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._again = self._closed = False

    @classmethod
    def for_settings(cls, store: Store, settings, client: dns.DnsInterface,
                     open_task: Callable[[Any], Task], alarms: AlarmTable | None,
                     owner_of: Callable[[Any], str | None] | None = None
                     ) -> DnsRetry | None:
        """The retry task when DNS is configured; else None. ``alarms`` receives the
        alarm of deleted nodes' removals that keep failing; ``owner_of`` is the ring."""
        if not settings.dns.server.strip():
            return None
        if settings.dns.retry_interval <= 0:
            raise errors.ConfigError(reason="dns.retry_interval must be > 0")
        removals = PendingRemovals(store, settings, client, alarms)
        return cls(store, settings, client, open_task, removals, owner_of)

    def sweep(self) -> dict[str, bool]:
        """One pass over the pending nodes: node UUID -> in step now.

        The pass ends at the first failure: a DNS server that is down would make
        every further node wait one timeout under its lock for nothing. Nodes with
        the fewest attempts go first, so one node that keeps failing for a reason
        of its own does not hold back the others.
        """
        nodes = [node for node in self.store.list_nodes(columns=self.COLUMNS)
                 if _pending(node) is not None and node.reservation is None
                 and self._mine(node)]
        nodes.sort(key=lambda node: (int((_pending(node) or {}).get("attempts") or 0), node.id))
        done = {}
        for node in nodes:
            outcome = self.retry_node(node)
            if outcome is not None:
                done[node.uuid] = outcome
            if outcome is False:
                break
        done.update(self.removals.sweep())
        return done

    def _mine(self, node) -> bool:
        owner = self.owner_of(node) if self.owner_of is not None else None
        return runs_here(owner, node.conductor_affinity, self.host)

    def wake(self) -> None:
        """Attempt the due removals now, on this object's thread (one at a time)."""
        with self._lock:
            self._again = True
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._drain, name="metalcast-dns",
                                            daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._again or self._closed:
                    return
                self._again = False
            try:
                self.removals.sweep()
            except Exception:  # the periodic sweep tries again
                LOG.exception("DNS removal of deleted nodes failed unexpectedly")

    def close(self, wait: bool = True) -> None:
        """No new attempts; with ``wait``, let one in progress finish."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if wait and thread is not None:
            thread.join()

    def retry_node(self, node) -> bool | None:
        """Retry one node under its lock; None when it was locked, changed or gone."""
        try:
            self.store.reserve(node, self.host,
                               expect={"provision_state": node.provision_state})
        except (errors.Conflict, errors.NotFound):
            return None  # someone is acting on it; they or the next sweep finish it
        task = self.open_task(self.store.get_node_by_id(node.id))
        try:
            pending = _pending(task.node)
            if pending is None:
                return None
            client = self.client
            wanted = HostRecords.from_dict(pending.get("wanted"))
            return reconcile(task, client, wanted)
        finally:
            task.release()
