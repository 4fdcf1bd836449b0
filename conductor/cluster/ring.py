"""The hash rings of the live conductors, one per (hardware type, conductor group).

Built from the ``conductors`` table and used for ``hash_ring_reset_interval`` seconds
(Ironic's default 15 s), or until ``invalidate`` (membership saw a change); a node
whose ring is missing rebuilds once at once (at most once a second), as Ironic
does, before NoValidHost.
"""
from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from conductor import errors
from conductor.cluster.hashring import HashRing
from conductor.cluster.membership import Clock, stale_before, utc_clock
from conductor.config import ConductorSettings
from conductor.db.conductors import ConductorRow

LOG = logging.getLogger(__name__)

#: A node whose ring is missing rebuilds the rings at once, but not more than once a
#: second: a page of 1000 nodes of a group without conductors is not 1000 queries.
MISS_REBUILD_AFTER = 1.0


class NodeLike(Protocol):
    uuid: str
    driver: str
    conductor_group: str


class LiveRows(Protocol):
    def alive(self, stale_before: datetime.datetime) -> list[ConductorRow]: ...


def build_rings(rows: list[ConductorRow], exponent: int) -> dict[tuple[str, str], HashRing]:
    """(hardware type, group) -> the ring of the conductors serving it."""
    members: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        for hardware_type in row.hardware_types:
            members.setdefault((hardware_type, row.conductor_group), []).append(row.hostname)
    return {key: HashRing(names, exponent) for key, names in members.items()}


class RingManager:
    """``conductor_for(node)``: the node's conductor among the live ones."""

    def __init__(self, rows: LiveRows, settings: ConductorSettings,
                 clock: Clock = utc_clock, monotonic: Callable[[], float] = time.monotonic):
        self.rows = rows
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._rings: dict[tuple[str, str], HashRing] | None = None
        self._built_at = 0.0

    def invalidate(self) -> None:
        """Membership changed: the next lookup rebuilds."""
        with self._lock:
            self._rings = None

    def _current(self, force: bool = False) -> dict[tuple[str, str], HashRing]:
        with self._lock:
            age = self.monotonic() - self._built_at
            if self._rings is None or age >= self.settings.hash_ring_reset_interval or \
                    (force and age >= MISS_REBUILD_AFTER):
                live = self.rows.alive(stale_before(self.settings, self.clock()))
                self._rings = build_rings(live, self.settings.hash_partition_exponent)
                self._built_at = self.monotonic()
            return self._rings

    def conductors_for(self, node: NodeLike) -> list[str]:
        """The node's conductors, primary first (``hash_distribution_replicas``);
        NoValidHost when no live conductor serves its hardware type in its group."""
        key = (node.driver, node.conductor_group or "")
        ring = self._current().get(key)
        if ring is None:
            ring = self._current(force=True).get(key)
        if ring is None:
            raise errors.NoValidHost(reason=(
                f"No conductor service registered which supports driver {node.driver} "
                f"for conductor group \"{node.conductor_group or ''}\". Start a conductor "
                f"with [conductor] conductor_group = {node.conductor_group or ''} and "
                f"{node.driver} in enabled_hardware_types, or change the node's "
                "conductor_group."))
        return ring.conductors_for(node.uuid, self.settings.hash_distribution_replicas)

    def conductor_for(self, node: NodeLike) -> str:
        return self.conductors_for(node)[0]

    def conductor_or_none(self, node: NodeLike) -> str | None:
        """For display (a node's ``conductor`` field): None instead of NoValidHost."""
        try:
            return self.conductor_for(node)
        except errors.NoValidHost:
            return None


def runs_here(owner: str | None, affinity: str | None, host: str) -> bool:
    """Whether ``host`` runs a node's periodic work: the ring's choice ``owner``; when
    the ring names none (no live conductor serves the node, or this one is not
    registered yet), the conductor that acted on it last, or any if none did."""
    if owner is not None:
        return owner == host
    return affinity in (None, host)
