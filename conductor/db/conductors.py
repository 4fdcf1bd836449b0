"""Rows of ``conductors``: who serves, in which group, and since when it last beat.

A conductor is *alive* while its row is online and its ``updated_at`` (the last
heartbeat) is newer than ``stale_before`` (now minus ``[conductor] heartbeat_timeout``).
Registration is one conditional UPDATE (or an INSERT for a new name): of two processes
registering one name at once, exactly one wins; the other, and any process registering
a name whose holder is alive, gets ConductorAlreadyRegistered. Times are written by the
caller's clock (conductor/cluster/membership.py) and compared as naive UTC, as SQLite
returns them.
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from conductor import errors
from conductor.db.schema import conductors as table
from conductor.db.schema import nodes

#: Columns a listing may sort by (Ironic refuses alive and drivers: they are computed).
SORT_KEYS = ("id", "hostname", "conductor_group", "created_at", "updated_at")


def naive_utc(value: datetime.datetime) -> datetime.datetime:
    """``value`` as naive UTC: SQLite drops the zone, PostgreSQL keeps it."""
    if value.tzinfo is None:
        return value
    return value.astimezone(datetime.UTC).replace(tzinfo=None)


@dataclasses.dataclass(frozen=True)
class ConductorRow:
    """One conductor as stored (``alive`` is computed by the reader)."""

    id: int
    hostname: str
    conductor_group: str
    online: bool
    hardware_types: list[str]
    created_at: datetime.datetime
    updated_at: datetime.datetime | None

    def alive(self, stale_before: datetime.datetime) -> bool:
        seen = self.updated_at
        return bool(self.online) and seen is not None and \
            naive_utc(seen) >= naive_utc(stale_before)


_COLUMNS = (table.c.id, table.c.hostname, table.c.conductor_group, table.c.online,
            table.c.hardware_types, table.c.created_at, table.c.updated_at)


def _row(row: Any) -> ConductorRow:
    values = list(row)
    values[4] = list(values[4] or [])
    return ConductorRow(*values)


class ConductorRows:
    """Queries of the ``conductors`` table."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def register(self, host: str, group: str, hardware_types: list[str],
                 now: datetime.datetime, stale_before: datetime.datetime,
                 taken_over: frozenset[datetime.datetime] = frozenset()) -> None:
        """Mark ``host`` online with its group and hardware types.

        Refused (ConductorAlreadyRegistered) while another holder of the name is alive,
        unless its last heartbeat is one of ``taken_over``: heartbeats this caller's
        data dir recorded for a predecessor that is known dead (membership.py).
        """
        values = dict(online=True, conductor_group=group, hardware_types=hardware_types,
                      updated_at=now)
        free = sa.or_(table.c.online.is_(False), table.c.updated_at.is_(None),
                      table.c.updated_at < stale_before,
                      *[table.c.updated_at == seen for seen in taken_over])
        claim = table.update().where(table.c.hostname == host, free).values(**values)
        try:
            with self.engine.begin() as conn:
                if conn.execute(claim).rowcount:
                    return
                exists = conn.execute(sa.select(table.c.id).where(
                    table.c.hostname == host)).first()
                if exists is None:
                    conn.execute(table.insert().values(hostname=host, created_at=now,
                                                       **values))
                    return
        except IntegrityError:  # registered by another process between our two statements
            pass
        raise errors.ConductorAlreadyRegistered(conductor=host)

    def heartbeat(self, host: str, now: datetime.datetime,
                  last: datetime.datetime) -> bool:
        """Touch ``updated_at`` if the row still holds ``last``, this process's previous
        beat; False when the row is gone, offline, or another process took the name
        over while this one did not beat (paused past the timeout): its beats are not
        overwritten."""
        with self.engine.begin() as conn:
            return bool(conn.execute(table.update().where(
                table.c.hostname == host, table.c.online.is_(True),
                table.c.updated_at == last).values(updated_at=now)).rowcount)

    def unregister(self, host: str, now: datetime.datetime) -> None:
        """Offline at once (a clean stop): the ring drops it without waiting."""
        with self.engine.begin() as conn:
            conn.execute(table.update().where(table.c.hostname == host).values(
                online=False, updated_at=now))

    def get(self, host: str) -> ConductorRow:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*_COLUMNS).where(table.c.hostname == host)).first()
        if row is None:
            raise errors.ConductorNotFound(conductor=host)
        return _row(row)

    def page(self, limit: int | None = None, marker: str | None = None,
             sort_key: str = "id", sort_dir: str = "asc") -> list[ConductorRow]:
        """A page in (sort_key, id) order after the row named ``marker``."""
        query = sa.select(*_COLUMNS)
        order = sa.desc if sort_dir == "desc" else sa.asc
        col = table.c[sort_key]
        if marker is not None:
            after = self.get(marker)
            mval = getattr(after, sort_key)
            if sort_key == "id":
                query = query.where(col < mval if sort_dir == "desc" else col > mval)
            else:
                newer = col < mval if sort_dir == "desc" else col > mval
                tie = table.c.id < after.id if sort_dir == "desc" else table.c.id > after.id
                query = query.where(sa.or_(newer, sa.and_(col == mval, tie)))
        query = query.order_by(order(col), order(table.c.id))
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_row(row) for row in conn.execute(query)]

    def alive(self, stale_before: datetime.datetime) -> list[ConductorRow]:
        """Every live conductor, by hostname: what the hash ring is built from."""
        query = sa.select(*_COLUMNS).where(
            table.c.online.is_(True), table.c.updated_at >= stale_before
        ).order_by(table.c.hostname)
        with self.engine.connect() as conn:
            return [_row(row) for row in conn.execute(query)]

    def node_keys(self) -> list[Any]:
        """(uuid, driver, conductor_group) of every node: what the hash ring maps a
        node by, three short columns in one read (the conductors page's counts)."""
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(nodes.c.uuid, nodes.c.driver,
                                               nodes.c.conductor_group)))
