"""Nodes a dead conductor left: locked by it, or last acted on by it (takeover).

The reading side of conductor/engine/takeover.py; the writes it makes go through
the Store's conditional UPDATEs (``reserve``, ``release``, ``update_node``), so two
conductors that both think a node is theirs never both win.
"""
from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from conductor.db.records import Node
from conductor.db.schema import nodes


def nodes_of(engine: sa.Engine, conductors: Iterable[str]) -> list[Node]:
    """Every node reserved by, or with its ``conductor_affinity`` on, ``conductors``."""
    names = sorted(set(conductors))
    if not names:
        return []
    query = sa.select(nodes).where(sa.or_(
        nodes.c.reservation.in_(names), nodes.c.conductor_affinity.in_(names),
    )).order_by(nodes.c.id)
    with engine.connect() as conn:
        return [Node(*row) for row in conn.execute(query)]
