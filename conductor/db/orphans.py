"""Nodes a dead conductor left (takeover), and nodes handed to a conductor (intents).

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


def handed_to(engine: sa.Engine, host: str) -> list[Node]:
    """Nodes that may be handed to ``host`` and not started: locked in its name with
    no ``conductor_affinity`` yet (conductor/engine/intents.py says which are)."""
    query = sa.select(nodes).where(
        nodes.c.reservation == host, nodes.c.conductor_affinity.is_(None)
    ).order_by(nodes.c.id)
    with engine.connect() as conn:
        return [Node(*row) for row in conn.execute(query)]


def release_stale_locks(engine: sa.Engine, host: str, working: list[str]) -> list[str]:
    """Drop every lock ``host`` holds but those of nodes handed to it and not started
    (its poller starts them); returns the UUIDs that were unlocked."""
    mine = sa.and_(nodes.c.reservation == host, sa.not_(sa.and_(
        nodes.c.conductor_affinity.is_(None), nodes.c.provision_state.in_(working))))
    with engine.begin() as conn:
        uuids = conn.execute(sa.select(nodes.c.uuid).where(mine)).scalars().all()
        conn.execute(nodes.update().where(mine)
                     .values(reservation=None, target_power_state=None))
    return list(uuids)
