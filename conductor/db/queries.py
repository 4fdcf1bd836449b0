"""Every query the conductor runs. Database errors become domain errors here, once."""
from __future__ import annotations

import datetime
import operator
import uuid as uuidlib
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from conductor import errors
from conductor.db import history
from conductor.db.records import NODE_COLUMNS, PORT_COLUMNS, DnsRemoval, Node, Port
from conductor.db.schema import dns_pending_removals, nodes, ports

#: Non-null columns only, so keyset pagination needs no NULL ordering rules.
SORTABLE_NODE_KEYS = ("id", "uuid", "created_at", "driver")
#: The columns an UPDATE of a node may set (a key outside them is a bug: refused).
_NODE_KEYS = frozenset(nodes.c.keys())

# The statements of the hot paths (a node by id, UUID or name; one node's UPDATE; its
# ports) are built once and run with parameters. Building a statement per call and
# its cache key cost SQLAlchemy three to four times the query itself (measured on
# SQLite: ~190-260 us against ~55-60 us), and a deploy runs some fifty of them per
# node. Bind names start with "_": they never meet a column's name.
_NODE_BY_ID = sa.select(nodes).where(nodes.c.id == sa.bindparam("_id"))
_NODE_BY_UUID = sa.select(nodes).where(nodes.c.uuid == sa.bindparam("_ident"))
_NODE_BY_NAME = sa.select(nodes).where(nodes.c.name == sa.bindparam("_ident"))
_COUNT_IN_STATES = sa.select(sa.func.count()).where(
    nodes.c.provision_state.in_(sa.bindparam("_states", expanding=True)))


#: Filters that are not plain column equality.
NODE_FILTERS: dict[str, Callable[[Any], sa.ColumnElement[bool]]] = {
    "associated": lambda v: (nodes.c.instance_uuid.is_not(None) if v
                             else nodes.c.instance_uuid.is_(None)),
    "description_contains": lambda v: nodes.c.description.icontains(v, autoescape=True),
    "names": lambda v: nodes.c.name.in_(list(v)),
    # Nodes whose driver_internal_info holds each of these keys (not null): a periodic
    # task that wants the few nodes with, say, a host agent reads only those rows, not
    # every node of the table into the process (75,000 active nodes: ~250 MiB).
    "internal_info_keys": lambda v: sa.and_(*(
        nodes.c.driver_internal_info[key].as_string().is_not(None) for key in v)),
}


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def is_uuid_like(value: object) -> bool:
    try:
        return str(uuidlib.UUID(str(value))) == str(value).lower()
    except (TypeError, ValueError, AttributeError):
        return False


def _duplicate(exc: IntegrityError, values: dict[str, Any]) -> errors.MetalcastError:
    # Only the first line names the constraint; PostgreSQL's DETAIL line quotes the
    # offending value, and a node named "mac-address-1" must not read as a MAC clash.
    text = (str(exc.orig).splitlines() or [""])[0].lower()
    if "address" in text:
        return errors.MACAlreadyExists(mac=values.get("address"))
    if "name" in text:
        return errors.DuplicateName(name=values.get("name"))
    if "instance_uuid" in text:
        return errors.Conflict(f"Instance {values.get('instance_uuid')} is already "
                               "associated with a node.")
    if "uuid" in text:
        return errors.Conflict(f"A resource with UUID {values.get('uuid')} already exists.")
    return errors.Conflict(f"Conflict: {exc.orig}")


class Store:
    """Queries over one engine. Thread-safe: every call uses its own connection."""

    def __init__(self, engine: sa.Engine, conductor: str | None = None,
                 on_transition: Callable[[int, str | None, str | None], None] | None = None):
        self.engine = engine
        #: The conductor named in the node history rows this store writes.
        self.conductor = conductor
        #: Told (node id, old, new) after each committed provision state change
        #: (the provision duration metrics, conductor/metrics/provisioning.py).
        self.on_transition = on_transition
        #: Statements built once per shape of their arguments (see _NODE_BY_ID).
        self._statements: dict[tuple[Any, ...], Any] = {}

    # -- nodes -------------------------------------------------------------
    def create_node(self, values: dict[str, Any]) -> Node:
        values = dict(values, created_at=utcnow())
        values.setdefault("uuid", str(uuidlib.uuid4()))
        try:
            with self.engine.begin() as conn:
                key = conn.execute(nodes.insert().values(**values)).inserted_primary_key
        except IntegrityError as exc:
            raise _duplicate(exc, values) from None
        assert key is not None
        return self.get_node_by_id(key[0])

    def get_node_by_id(self, node_id: int) -> Node:
        with self.engine.connect() as conn:
            row = conn.execute(_NODE_BY_ID, {"_id": node_id}).first()
        if row is None:
            raise errors.NodeNotFound(node=node_id)
        return Node(*row)

    def get_node(self, ident: str) -> Node:
        """Find a node by UUID or by name."""
        query = _NODE_BY_UUID if is_uuid_like(ident) else _NODE_BY_NAME
        with self.engine.connect() as conn:
            row = conn.execute(query, {"_ident": ident}).first()
        if row is None:
            raise errors.NodeNotFound(node=ident)
        return Node(*row)

    def list_nodes(self, filters: dict[str, Any] | None = None, limit: int | None = None,
                   marker: str | None = None, sort_key: str = "id", sort_dir: str = "asc",
                   columns: Iterable[str] | None = None) -> list[Node]:
        """Nodes matching ``filters`` (column -> value, or a key of NODE_FILTERS)."""
        cols = [nodes.c[name] for name in (columns or NODE_COLUMNS)]
        query = sa.select(*cols)
        for key, value in (filters or {}).items():
            special = NODE_FILTERS.get(key)
            query = query.where(special(value) if special else nodes.c[key] == value)
        query = _paginate(query, nodes, self._marker_row(marker), sort_key, sort_dir, limit)
        names = [c.name for c in cols]
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not columns:  # every column, in table order: 20x cheaper than 66 keywords
            return [Node(*row) for row in rows]
        return [Node(**dict(zip(names, row))) for row in rows]

    def _marker_row(self, marker: str | None) -> sa.Row[Any] | None:
        if marker is None:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(nodes).where(nodes.c.uuid == marker)).first()
        if row is None:
            raise errors.InvalidParameter(f"The marker {marker} could not be found.")
        return row

    def set_maintenance_by_name(self, names: Iterable[str], on: bool,
                                reason: str | None = None) -> list[str]:
        """Maintenance on (only for nodes not in it) or off, for the named nodes in one
        statement; the names now in maintenance for ``reason`` (on) or taken out (off)."""
        wanted = list(names)
        query = nodes.update().where(nodes.c.name.in_(wanted))
        if on:
            query = query.where(nodes.c.maintenance.is_(False)).values(
                maintenance=True, maintenance_reason=reason, updated_at=utcnow())
        else:
            query = query.values(maintenance=False, maintenance_reason=None, fault=None,
                                 updated_at=utcnow())
        with self.engine.begin() as conn:
            conn.execute(query)
            if not on:
                return wanted
            return [row[0] for row in conn.execute(sa.select(nodes.c.name).where(
                nodes.c.name.in_(wanted), nodes.c.maintenance.is_(True),
                nodes.c.maintenance_reason == reason))]

    def update_node(self, node_id: int, values: dict[str, Any],
                    expect: dict[str, Any] | None = None) -> bool:
        """UPDATE one node; with ``expect``, only if those columns still hold those values.

        ``updated_at`` is now unless ``values`` gives it: every write changes it, so
        ``expect={"updated_at": node.updated_at}`` means "unchanged since ``node`` was
        read" (an optimistic write that needs no lock).
        """
        unknown = values.keys() - _NODE_KEYS
        if unknown:  # a bug, as SQLAlchemy's "Unconsumed column names" was
            raise ValueError(f"nodes has no column(s) {', '.join(sorted(unknown))}")
        expect = expect or {}
        query = self._node_update(tuple((key, value is None) for key, value in expect.items()))
        values = {"updated_at": utcnow(), **values}
        params = dict(values, _id=node_id,
                      **{f"_{key}": value for key, value in expect.items() if value is not None})
        try:
            with self.engine.begin() as conn:
                # A state change or an error adds a node history row in the same
                # transaction, whichever path wrote it (conductor/db/history.py).
                previous = history.before(conn, node_id) if history.watched(values) \
                    else None
                written = conn.execute(query, params).rowcount == 1
                if written and previous is not None:
                    history.record(conn, node_id, history.events(previous, values),
                                   self.conductor, values["updated_at"])
        except IntegrityError as exc:
            raise _duplicate(exc, values) from None
        if written and previous is not None and self.on_transition is not None and \
                "provision_state" in values and values["provision_state"] != previous[0]:
            self.on_transition(node_id, previous[0], values["provision_state"])
        return written

    def _node_update(self, shape: tuple[tuple[str, bool], ...]) -> Any:
        """The UPDATE of one node whose ``expect`` has this shape ((column, is None)...);
        built once per shape (a handful: the lock's and the state checks')."""
        query = self._statements.get(("update", shape))
        if query is None:
            query = nodes.update().where(nodes.c.id == sa.bindparam("_id"))
            for key, is_none in shape:
                col = nodes.c[key]
                query = query.where(col.is_(None) if is_none else col == sa.bindparam(f"_{key}"))
            self._statements["update", shape] = query
        return query

    def reserve(self, node: Node, host: str, values: dict[str, Any] | None = None,
                expect: dict[str, Any] | None = None) -> None:
        """Take the node's exclusive lock (a conditional UPDATE); NodeLocked if lost."""
        expect = dict(expect or {}, reservation=None)
        if not self.update_node(node.id, dict(values or {}, reservation=host), expect):
            current = self.get_node_by_id(node.id)
            if current.reservation:
                raise errors.NodeLocked(node=node.uuid, host=current.reservation)
            raise errors.Conflict(f"Node {node.uuid} changed while the request was "
                                  "processed; please retry.")

    def release(self, node_id: int, host: str, values: dict[str, Any] | None = None) -> bool:
        return self.update_node(node_id, dict(values or {}, reservation=None),
                                expect={"reservation": host})

    def delete_node(self, node_id: int, dns_removal: dict[str, Any] | None = None) -> None:
        """Delete a node and its ports. ``dns_removal`` (dns_pending_removals values)
        is queued in the same transaction: the node cannot go without it."""
        with self.engine.begin() as conn:
            if dns_removal is not None:
                now = utcnow()
                values = dict({"attempts": 0, "next_attempt_at": now}, **dns_removal)
                conn.execute(dns_pending_removals.insert().values(created_at=now, **values))
            conn.execute(ports.delete().where(ports.c.node_id == node_id))
            conn.execute(nodes.delete().where(nodes.c.id == node_id))

    def count_nodes(self, states: Iterable[str]) -> int:
        with self.engine.connect() as conn:
            return conn.execute(_COUNT_IN_STATES, {"_states": list(states)}).scalar_one()

    def nodes_in_states(self, states: Iterable[str],
                        updated_before: datetime.datetime | None = None,
                        unreserved: bool = False, affinity: str | None = None) -> list[Node]:
        shape = ("in_states", updated_before is not None, unreserved, affinity is not None)
        query = self._statements.get(shape)
        if query is None:  # built once per shape: the periodic checks run it every second
            query = sa.select(nodes).where(
                nodes.c.provision_state.in_(sa.bindparam("_states", expanding=True)))
            if updated_before is not None:
                query = query.where(nodes.c.provision_updated_at < sa.bindparam("_before"))
            if unreserved:
                query = query.where(nodes.c.reservation.is_(None))
            if affinity is not None:
                query = query.where(nodes.c.conductor_affinity == sa.bindparam("_affinity"))
            self._statements[shape] = query
        params = {"_states": list(states), "_before": updated_before, "_affinity": affinity}
        with self.engine.connect() as conn:
            return [Node(*row) for row in conn.execute(query, params)]

    def nodes_for_power_sync(self, host: str | None, drivers: Iterable[str],
                             excluded_states: Iterable[str], fault: str) -> list[Node]:
        """Unlocked nodes ``host`` may sync: its own or unclaimed (``host`` None: any,
        the caller keeps those the hash ring maps to it), of ``drivers``, no
        pending power action, not in ``excluded_states``, out of maintenance unless
        the maintenance is for ``fault``."""
        mine = sa.true() if host is None else sa.or_(
            nodes.c.conductor_affinity == host, nodes.c.conductor_affinity.is_(None))
        query = sa.select(nodes).where(
            mine, nodes.c.driver.in_(list(drivers)),
            nodes.c.reservation.is_(None), nodes.c.target_power_state.is_(None),
            sa.or_(nodes.c.provision_state.is_(None),
                   nodes.c.provision_state.not_in(list(excluded_states))),
            sa.or_(nodes.c.maintenance.is_(False), nodes.c.fault == fault),
        ).order_by(nodes.c.id)
        with self.engine.connect() as conn:
            return [Node(*row) for row in conn.execute(query)]

    def release_all(self, host: str) -> list[str]:
        """Drop every lock ``host`` holds; returns the UUIDs that were locked."""
        with self.engine.begin() as conn:
            uuids = conn.execute(sa.select(nodes.c.uuid)
                                 .where(nodes.c.reservation == host)).scalars().all()
            conn.execute(nodes.update().where(nodes.c.reservation == host)
                         .values(reservation=None, target_power_state=None))
        return list(uuids)

    # -- DNS removals of deleted nodes ---------------------------------------
    def list_dns_removals(self, due_at: datetime.datetime | None = None) -> list[DnsRemoval]:
        """Pending removals, fewest attempts first; with ``due_at``, those due by then."""
        table = dns_pending_removals
        query = sa.select(table).order_by(table.c.attempts, table.c.id)
        if due_at is not None:
            query = query.where(table.c.next_attempt_at <= due_at)
        with self.engine.connect() as conn:
            return [DnsRemoval(*row) for row in conn.execute(query)]

    def claim_dns_removal(self, removal_id: int, now: datetime.datetime,
                          until: datetime.datetime) -> bool:
        """Take a due removal for one attempt: it is not due again before ``until``.

        A conditional UPDATE, as ``reserve``: of two conductors (or the periodic
        sweep and the one right after a delete) only one wins; a conductor that dies
        mid-attempt leaves the row due again at ``until``.
        """
        table = dns_pending_removals
        query = table.update().where(table.c.id == removal_id,
                                     table.c.next_attempt_at <= now)
        with self.engine.begin() as conn:
            return conn.execute(query.values(next_attempt_at=until)).rowcount == 1

    def update_dns_removal(self, removal_id: int, values: dict[str, Any]) -> None:
        table = dns_pending_removals
        with self.engine.begin() as conn:
            conn.execute(table.update().where(table.c.id == removal_id)
                         .values(updated_at=utcnow(), **values))

    def delete_dns_removal(self, removal_id: int) -> bool:
        table = dns_pending_removals
        with self.engine.begin() as conn:
            return conn.execute(table.delete().where(table.c.id == removal_id)).rowcount == 1

    # -- ports -------------------------------------------------------------
    _PORT_SELECT = sa.select(*[ports.c[c] for c in PORT_COLUMNS], nodes.c.uuid).join(
        nodes, nodes.c.id == ports.c.node_id)

    def create_port(self, values: dict[str, Any]) -> Port:
        values = dict(values, created_at=utcnow())
        values.setdefault("uuid", str(uuidlib.uuid4()))
        try:
            with self.engine.begin() as conn:
                key = conn.execute(ports.insert().values(**values)).inserted_primary_key
        except IntegrityError as exc:
            raise _duplicate(exc, values) from None
        assert key is not None
        return self._one_port(ports.c.id == key[0], key[0])

    def _one_port(self, clause: sa.ColumnElement[bool], ident: object) -> Port:
        with self.engine.connect() as conn:
            row = conn.execute(self._PORT_SELECT.where(clause)).first()
        if row is None:
            raise errors.PortNotFound(port=ident)
        return Port(*row)

    def get_port(self, port_uuid: str) -> Port:
        if not is_uuid_like(port_uuid):
            raise errors.PortNotFound(port=port_uuid)
        return self._one_port(ports.c.uuid == port_uuid, port_uuid)

    def list_ports(self, filters: dict[str, Any] | None = None, limit: int | None = None,
                   marker: str | None = None) -> list[Port]:
        if marker is None and limit is None:
            return self._ports_where(filters or {})
        query = self._PORT_SELECT
        for key, value in (filters or {}).items():
            col = nodes.c.uuid if key == "node_uuid" else ports.c[key]
            query = query.where(col == value)
        marker_row = None
        if marker is not None:
            with self.engine.connect() as conn:
                marker_row = conn.execute(sa.select(ports).where(ports.c.uuid == marker)).first()
            if marker_row is None:
                raise errors.InvalidParameter(f"The marker {marker} could not be found.")
        query = _paginate(query, ports, marker_row, "id", "asc", limit)
        with self.engine.connect() as conn:
            return [Port(*row) for row in conn.execute(query)]

    def _ports_where(self, filters: dict[str, Any]) -> list[Port]:
        """A node's ports (the deploy and boot flows ask several times per node), a
        MAC's: one statement per set of filter keys, built once."""
        shape = ("ports", *sorted(filters))
        query = self._statements.get(shape)
        if query is None:
            query = self._PORT_SELECT
            for key in shape[1:]:
                col = nodes.c.uuid if key == "node_uuid" else ports.c[key]
                query = query.where(col == sa.bindparam(f"_{key}"))
            query = self._statements[shape] = query.order_by(ports.c.id)
        with self.engine.connect() as conn:
            return [Port(*row) for row in
                    conn.execute(query, {f"_{k}": v for k, v in filters.items()})]

    def update_port(self, port_id: int, values: dict[str, Any]) -> None:
        values = dict(values, updated_at=utcnow())
        try:
            with self.engine.begin() as conn:
                conn.execute(ports.update().where(ports.c.id == port_id).values(**values))
        except IntegrityError as exc:
            raise _duplicate(exc, values) from None

    def delete_port(self, port_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(ports.delete().where(ports.c.id == port_id))


def _paginate(query: sa.Select[Any], table: sa.Table, marker_row: sa.Row[Any] | None,
              sort_key: str, sort_dir: str, limit: int | None) -> sa.Select[Any]:
    """Keyset pagination: rows strictly after ``marker_row`` in (sort_key, id) order."""
    col, id_col = table.c[sort_key], table.c.id
    order = (sa.desc if sort_dir == "desc" else sa.asc)
    if marker_row is not None:
        mval, mid = getattr(marker_row, sort_key), marker_row.id
        after = operator.lt if sort_dir == "desc" else operator.gt
        if sort_key == "id":
            query = query.where(after(id_col, mid))
        else:
            query = query.where(sa.or_(after(col, mval),
                                       sa.and_(col == mval, after(id_col, mid))))
    query = query.order_by(order(col), order(id_col)) if sort_key != "id" else \
        query.order_by(order(id_col))
    return query.limit(limit) if limit else query
