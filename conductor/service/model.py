"""The node model as the API sees it: names the views and filters need.

The API never imports the database layer; what it must know of the schema (the
interface kinds, which node fields are timestamps, the sort keys) it reads here.
"""
from __future__ import annotations

import sqlalchemy as sa

from conductor.db.queries import SORTABLE_NODE_KEYS
from conductor.db.records import NodeHistory
from conductor.db.schema import INTERFACES, nodes

#: Node fields stored as timestamps (rendered as ISO 8601 strings).
NODE_TIMESTAMPS = frozenset(c.name for c in nodes.columns if isinstance(c.type, sa.DateTime))

__all__ = ["INTERFACES", "NODE_TIMESTAMPS", "NodeHistory", "SORTABLE_NODE_KEYS"]
