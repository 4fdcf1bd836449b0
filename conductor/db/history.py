"""Node history (Ironic API 1.78): what rows a node write adds, and how they are read.

A row is written in the same transaction as the node UPDATE that causes it
(``Store.update_node`` calls :func:`record`), so every provision state change and
every error is in the history whichever code path wrote it: the engine's tasks, the
facade's immediate transitions, the lock taken for a deploy. Event types and
severities are Ironic's (``provisioning``, ``INFO`` / ``ERROR``).
"""
from __future__ import annotations

import dataclasses
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from conductor import errors, request_ids
from conductor.db.records import NodeHistory
from conductor.db.schema import node_history, nodes

EVENT_TYPE = "provisioning"
INFO = "INFO"
ERROR = "ERROR"
#: node_history.user's length (Ironic's); a longer user name is cut.
USER_LENGTH = 32
#: The node columns whose change makes a history row.
WATCHED = ("provision_state", "last_error")

_BEFORE = sa.select(nodes.c.provision_state, nodes.c.last_error).where(
    nodes.c.id == sa.bindparam("_id"))


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    severity: str
    text: str


def watched(values: Mapping[str, Any]) -> bool:
    """Whether a write of ``values`` may make a history row (then its caller reads the
    row's state before the write: :func:`before`)."""
    return "provision_state" in values or values.get("last_error") is not None


def before(conn: sa.Connection, node_id: int) -> tuple[str | None, str | None]:
    """(provision_state, last_error) of the node as it is now."""
    row = conn.execute(_BEFORE, {"_id": node_id}).first()
    return (row[0], row[1]) if row is not None else (None, None)


def events(previous: tuple[str | None, str | None], values: Mapping[str, Any]) -> list[Event]:
    """The history a write of ``values`` over ``previous`` (state, error) makes: one row
    for a state change (ERROR with the error when the write sets one), one ERROR row
    for a new error without a state change; nothing for a write that changes neither."""
    old_state, old_error = previous
    error = values.get("last_error")
    new_state = values.get("provision_state", old_state)
    if "provision_state" in values and new_state != old_state:
        text = f"Provision state changed from {old_state} to {new_state}"
        if error is not None:
            return [Event(ERROR, f"{text}: {error}")]
        return [Event(INFO, f"{text}.")]
    if error is not None and error != old_error:
        return [Event(ERROR, str(error))]
    return []


def record(conn: sa.Connection, node_id: int, found: list[Event], conductor: str | None,
           now: Any) -> None:
    """Insert ``found`` for the node, inside the caller's transaction; the user is the
    one whose API request caused the write (worker tasks keep it), if any."""
    if found:
        user = request_ids.current_user()
        conn.execute(node_history.insert(), [
            dict(uuid=str(uuidlib.uuid4()), node_id=node_id, conductor=conductor,
                 event_type=EVENT_TYPE, severity=event.severity, event=event.text,
                 user=user[:USER_LENGTH] if user else None, created_at=now)
            for event in found])


class NodeHistoryRows:
    """Reads a node's history, oldest first (keyset pagination on the row id)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def list_for_node(self, node_id: int, limit: int | None = None,
                      marker: str | None = None, newest_first: bool = False
                      ) -> list[NodeHistory]:
        table = node_history
        query = sa.select(table).where(table.c.node_id == node_id)
        with self.engine.connect() as conn:
            if marker is not None:
                mark = conn.execute(sa.select(table.c.id).where(
                    table.c.uuid == marker, table.c.node_id == node_id)).scalar()
                if mark is None:
                    raise errors.InvalidParameter(f"The marker {marker} could not be found.")
                query = query.where(table.c.id < mark if newest_first else table.c.id > mark)
            query = query.order_by(table.c.id.desc() if newest_first else table.c.id)
            if limit:
                query = query.limit(limit)
            return [NodeHistory(*row) for row in conn.execute(query)]

    def get(self, node_id: int, event_uuid: str) -> NodeHistory:
        table = node_history
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(table).where(
                table.c.node_id == node_id, table.c.uuid == event_uuid)).first()
        if row is None:
            raise errors.NotFound(f"Node history record {event_uuid} could not be found.")
        return NodeHistory(*row)
