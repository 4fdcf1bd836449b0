"""DNS records of deleted nodes, removed reliably: queued in the database, retried.

Deleting a node deletes the row that held its DNS state (``dns_registration``), so
what may still be in DNS becomes a ``dns_pending_removals`` row, written in the
transaction that deletes the node: a conductor restart or a DNS server that is down
loses nothing. The API request never speaks DNS. ``DnsRetry`` makes the first
attempt at once on its own thread and the periodic sweep the later ones, each after
a doubling delay (``dns.retry_interval``, 2x, 4x ... at most ``MAX_BACKOFF``).

A removal that succeeds deletes its row. One that keeps failing stays listed
(``metalcast dns pending``) and, from ``ALARM_AFTER`` attempts on, keeps alarm
``ALARM_ID`` raised for the node, until it succeeds or the row is forgotten.

A record that a live node has claimed since (the same name and address registered
again) is left in place: removing it would take the new node's name away.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging

from conductor import errors
from conductor.alarms import Alarm, AlarmTable
from conductor.db.queries import Store, utcnow
from conductor.dns.records import PENDING_KEY, RECORDS_KEY, HostRecords, describe
from conductor.dns.rfc2136 import DnsInterface

LOG = logging.getLogger(__name__)

#: Longest wait between two attempts of one removal (seconds).
MAX_BACKOFF = 3600.0
#: Failed attempts after which a removal raises its alarm.
ALARM_AFTER = 3
#: metalcast's own FM alarm (StarlingX defines none for DNS registration).
ALARM_ID = "300.201"
ALARM_SEVERITY = "minor"
#: An attempt in progress holds its row for at least this long (seconds); a conductor
#: that dies mid-attempt leaves the row due again after it.
MIN_LEASE = 60.0


def backoff(attempts: int, interval: float) -> float:
    """Seconds to wait after ``attempts`` failed attempts: interval, 2x, 4x ... capped."""
    exponent = min(max(attempts - 1, 0), 32)
    return min(interval * 2 ** exponent, max(interval, MAX_BACKOFF))


@dataclasses.dataclass(frozen=True)
class Removal:
    """One ``dns_pending_removals`` row, parsed: the records, and entries that are not."""

    id: int
    node_uuid: str
    attempts: int
    records: tuple[HostRecords, ...]
    #: Entries that are not records, as stored (kept for a human to look at).
    unusable: tuple

    @classmethod
    def from_row(cls, row) -> Removal:
        values = row.records if isinstance(row.records, list) else [row.records]
        records, unusable = [], []
        for value in values:
            parsed = HostRecords.from_dict(value)
            bad_addresses = isinstance(value, dict) and parsed is not None and \
                len(parsed.addresses) != len(value.get("addresses") or ())
            if parsed is None or bad_addresses or not parsed.fqdn.endswith("."):
                unusable.append(value)
            else:
                records.append(parsed)
        return cls(row.id, row.node_uuid, int(row.attempts or 0), tuple(records),
                   tuple(unusable))


def claimed_records(store: Store) -> set[tuple[str, str]]:
    """(FQDN, address) pairs that live nodes have registered or are registering."""
    pairs: set[tuple[str, str]] = set()
    for node in store.list_nodes(columns=("id", "uuid", "driver_internal_info")):
        info = node.driver_internal_info if isinstance(node.driver_internal_info, dict) \
            else {}
        pending = info.get(PENDING_KEY)
        pending = pending if isinstance(pending, dict) else {}
        for value in (info.get(RECORDS_KEY), pending.get("wanted")):
            records = HostRecords.from_dict(value)
            if records is not None:
                pairs.update((records.fqdn, address) for address in records.addresses)
    return pairs


class PendingRemovals:
    """Attempts due removals through ``client``, the process's DNS adapter."""

    def __init__(self, store: Store, settings, client: DnsInterface,
                 alarms: AlarmTable | None = None):
        self.store = store
        self.interval = float(settings.dns.retry_interval)
        self.lease = max(MIN_LEASE, 20 * float(settings.dns.timeout))
        self.client = client
        #: conductor.alarms.AlarmTable (the appliance's); None: no alarms (tests).
        self.alarms = alarms

    def sweep(self) -> dict[str, bool]:
        """One pass over the due removals: node UUID -> removed now.

        Fewest attempts first; the pass ends at the first failure of the DNS server
        (one that is down would make each further removal wait a timeout), not at
        a row that cannot be used.
        """
        done: dict[str, bool] = {}
        due = self.store.list_dns_removals(due_at=utcnow())
        claimed = claimed_records(self.store) if due else set()
        for row in due:
            outcome = self.attempt(Removal.from_row(row), claimed)
            if outcome is not None:
                done[row.node_uuid] = outcome is True
            if isinstance(outcome, errors.DriverError):
                break
        self.refresh_alarms()
        return done

    def attempt(self, removal: Removal, claimed: set[tuple[str, str]]):
        """Remove one row's records: True, the error it failed with, or None when
        another thread or conductor took the row first."""
        now = utcnow()
        until = now + datetime.timedelta(seconds=self.lease)
        if not self.store.claim_dns_removal(removal.id, now, until):
            return None
        try:
            self._remove(removal, claimed)
        except errors.MetalcastError as exc:
            self._failed(removal, exc)
            return exc
        self.store.delete_dns_removal(removal.id)
        return True

    def _remove(self, removal: Removal, claimed: set[tuple[str, str]]) -> None:
        client = self.client
        if not client.enabled:
            raise errors.ConfigError(reason="DNS registration is off ([dns] server is "
                                            "empty); nothing can remove the records")
        for records in removal.records:
            kept = tuple(a for a in records.addresses if (records.fqdn, a) in claimed)
            if kept:
                LOG.info("Node %s (deleted): DNS records %s left in place: another node "
                         "has registered them since", removal.node_uuid,
                         describe([dataclasses.replace(records, addresses=kept)]))
            rest = [a for a in records.addresses if a not in kept]
            for note in client.unregister(records.fqdn, rest) if rest else []:
                LOG.warning("Node %s (deleted): %s", removal.node_uuid, note)
        if removal.unusable:
            # What could be removed is gone; the row keeps only what needs a human.
            self.store.update_dns_removal(removal.id, {"records": list(removal.unusable)})
            raise errors.Invalid(f"queued entries that are not DNS records (label, "
                                 f"absolute fqdn, IP addresses): "
                                 f"{', '.join(map(repr, removal.unusable))}; remove them "
                                 "by hand, then forget the removal")
        LOG.info("Node %s (deleted): DNS records removed: %s", removal.node_uuid,
                 describe(removal.records))

    def _failed(self, removal: Removal, exc: errors.MetalcastError) -> None:
        attempts = removal.attempts + 1
        delay = backoff(attempts, self.interval)
        self.store.update_dns_removal(removal.id, {
            "attempts": attempts, "last_error": str(exc),
            "next_attempt_at": utcnow() + datetime.timedelta(seconds=delay)})
        what = describe(removal.records) if removal.records else \
            f"{len(removal.unusable)} unusable entries"
        LOG.warning("Node %s (deleted): DNS removal of %s failed (attempt %d; next in "
                    "%gs): %s", removal.node_uuid, what, attempts, delay, exc)

    def refresh_alarms(self) -> None:
        """Raise the alarm of each removal that keeps failing; clear the others'."""
        if self.alarms is None:
            return
        wanted = [Alarm(ALARM_ID, f"node={row.node_uuid}", ALARM_SEVERITY,
                        f"DNS records of deleted node {row.node_uuid} not removed after "
                        f"{row.attempts} attempts (see `metalcast dns pending`): "
                        f"{row.last_error}")
                  for row in self.store.list_dns_removals() if row.attempts >= ALARM_AFTER]
        self.alarms.set_active((ALARM_ID,), wanted)

