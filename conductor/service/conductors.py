"""What the API shows of the conductors (``GET /v1/conductors``, a node's ``conductor``).

``alive`` is the row's online flag and a heartbeat within ``heartbeat_timeout``
(conductor/cluster/membership.py); a node's conductor is the hash ring's choice
among the live conductors of its hardware type and conductor group.
"""
from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from conductor import errors
from conductor.cluster.membership import Clock, stale_before, utc_clock
from conductor.cluster.ring import NodeLike, RingManager
from conductor.config import ConductorSettings, Settings
from conductor.db.conductors import SORT_KEYS, ConductorRow, ConductorRows
from conductor.db.records import Node

#: Nodes read per step while filtering by conductor without a limit.
SCAN_PAGE = 1000


@dataclasses.dataclass(frozen=True)
class ConductorInfo:
    """One conductor as the API shows it (Ironic's fields, API 1.49)."""

    hostname: str
    conductor_group: str
    alive: bool
    drivers: list[str]
    created_at: datetime.datetime
    updated_at: datetime.datetime | None


class Conductors:
    """Conductor listing and node-to-conductor mapping for the API."""

    def __init__(self, rows: ConductorRows, ring: RingManager, settings: ConductorSettings,
                 clock: Clock = utc_clock):
        self.rows = rows
        self.ring = ring
        self.settings = settings
        self.clock = clock

    @classmethod
    def standalone(cls, engine: sa.Engine, settings: Settings) -> Conductors:
        """Over ``engine`` with a ring of its own (a facade built without the appliance)."""
        rows = ConductorRows(engine)
        return cls(rows, RingManager(rows, settings.conductor), settings.conductor)

    def _info(self, row: ConductorRow, threshold: datetime.datetime) -> ConductorInfo:
        return ConductorInfo(row.hostname, row.conductor_group, row.alive(threshold),
                             sorted(row.hardware_types), row.created_at, row.updated_at)

    def page(self, limit: int | None = None, marker: str | None = None,
             sort_key: str = "id", sort_dir: str = "asc") -> list[ConductorInfo]:
        if sort_key not in SORT_KEYS:
            raise errors.InvalidParameter(
                f"The sort_key value {sort_key!r} is not supported; use one of "
                f"{', '.join(SORT_KEYS)}.")
        if sort_dir not in ("asc", "desc"):
            raise errors.InvalidParameter("sort_dir must be 'asc' or 'desc'.")
        threshold = stale_before(self.settings, self.clock())
        return [self._info(row, threshold)
                for row in self.rows.page(limit, marker, sort_key, sort_dir)]

    def get(self, hostname: str) -> ConductorInfo:
        return self._info(self.rows.get(hostname), stale_before(self.settings, self.clock()))

    def alive(self) -> list[tuple[str, list[str]]]:
        """(hostname, hardware types) of every live conductor, by hostname."""
        threshold = stale_before(self.settings, self.clock())
        return [(row.hostname, row.hardware_types) for row in self.rows.alive(threshold)]

    def nodes_of(self, conductor: str, list_nodes: Callable[..., list[Node]],
                 filters: dict, limit: int | None = None, marker: str | None = None,
                 columns: Any = None, **order: Any) -> list[Node]:
        """The nodes the ring maps to ``conductor`` (``?conductor=``, API 1.49): pages
        of ``list_nodes`` read and filtered until ``limit`` match or the nodes end. A
        full page's ``next`` marker is its last match, so no node is skipped."""
        step = limit or SCAN_PAGE
        found: list[Node] = []
        while True:
            page = list_nodes(filters=filters, limit=step, marker=marker, **order)
            found += [node for node in page if self.shown_conductor(node) == conductor]
            if (limit and len(found) >= limit) or len(page) < step:
                return found[:limit] if limit else found
            marker = page[-1].uuid

    def node_counts(self) -> dict[str | None, int]:
        """How many nodes the ring maps to each live conductor (None: no live conductor
        serves them), in one pass: one read of three columns of every node and one ring
        lookup (a hash and a bisect) per node. Nodes are grouped by (driver, group)
        first, so a key no conductor serves is looked up once, not re-read per node. At
        10,000 nodes that is ~10,000 short rows and ~10,000 hashes: tens of ms."""
        by_key: dict[tuple[str, str], list[Any]] = {}
        for row in self.rows.node_keys():
            by_key.setdefault((row.driver, row.conductor_group or ""), []).append(row)
        counts: dict[str | None, int] = {}
        for rows in by_key.values():
            if self.ring.conductor_or_none(rows[0]) is None:
                counts[None] = counts.get(None, 0) + len(rows)
                continue
            for row in rows:
                owner = self.ring.conductor_or_none(row)
                counts[owner] = counts.get(owner, 0) + 1
        return counts

    def conductor_for(self, node: NodeLike) -> str:
        """The node's conductor; NoValidHost (400) when no live one serves it."""
        return self.ring.conductor_for(node)

    def shown_conductor(self, node: NodeLike) -> str | None:
        """A node's ``conductor`` field: None when no live conductor serves it."""
        return self.ring.conductor_or_none(node)

    def work_owner(self, node: NodeLike, here: str) -> str:
        """The process to run ``node``'s work: the ring's choice (``here`` when none
        serves it), and when that is another conductor, one whose row is still alive.

        The ring is rebuilt every ``hash_ring_reset_interval`` (15 s by default), so for
        up to that long after a conductor's death it still maps nodes to it, while the
        survivors have already taken its nodes over. Work handed to it then only waited
        for the next takeover to fail it again (a redeploy right after a takeover did
        exactly that). One read of the owner's row before a hand-over closes the window:
        a dead owner rebuilds the ring at once."""
        owner = self.ring.conductor_or_none(node) or here
        if owner == here or self._alive(owner):
            return owner
        self.ring.invalidate()
        return self.ring.conductor_or_none(node) or here

    def _alive(self, hostname: str) -> bool:
        try:
            row = self.rows.get(hostname)
        except errors.ConductorNotFound:
            return False
        return row.alive(stale_before(self.settings, self.clock()))
