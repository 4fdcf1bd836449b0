"""Typed records for rows: Node and Port, one attribute per column.

Built from the table definitions so the schema stays the single source of truth;
the conductor and the API pass these around, never raw rows or dicts.
"""
from __future__ import annotations

import dataclasses

from conductor.db import schema


def _record(name: str, table, doc: str, extra=()):
    fields = [(c.name, object, dataclasses.field(default=None)) for c in table.columns]
    cls = dataclasses.make_dataclass(name, fields + list(extra), slots=True)
    cls.__doc__ = doc
    cls.__module__ = __name__
    return cls


Node = _record("Node", schema.nodes, "One bare-metal node as stored.")
Port = _record("Port", schema.ports, "One NIC (MAC address) of a node.",
               extra=[("node_uuid", object, dataclasses.field(default=None))])
DnsRemoval = _record("DnsRemoval", schema.dns_pending_removals,
                     "DNS records of a deleted node that are still to be removed.")

NODE_COLUMNS = tuple(c.name for c in schema.nodes.columns)
PORT_COLUMNS = tuple(c.name for c in schema.ports.columns)


def node_from_row(row) -> "Node":
    return Node(*row)


def interface_of(node, kind: str) -> str | None:
    """The implementation name a node uses for interface ``kind``."""
    return getattr(node, f"{kind}_interface")
