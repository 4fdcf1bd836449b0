"""Queries of the patch_hosts table, the persisted patch state of installed hosts.

Writes are optimistic: an update names the revision its writer last read, so of two
conductors writing one host at once the second learns it lost (False) and re-reads;
readers compare revisions to fetch only the rows that changed
(conductor/patching/host_states.py keeps the in-memory side).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from conductor.db.queries import utcnow
from conductor.db.records import PatchHost
from conductor.db.schema import patch_hosts as table

_INTERIM_UPDATE = table.update().where(table.c.hostname == sa.bindparam("b_hostname")).values(
    interim=sa.bindparam("b_interim", type_=table.c.interim.type),
    revision=sa.bindparam("b_revision"), updated_at=sa.bindparam("b_updated_at"))


def new_revision() -> str:
    return uuid.uuid4().hex


class PatchHostRows:
    """The patch_hosts queries over one engine; thread-safe as Store is."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def revisions(self) -> dict[str, str]:
        """hostname -> revision of every row: the cheap query a reader starts with."""
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(table.c.hostname, table.c.revision)).all())

    def get(self, hostnames: Iterable[str] | None = None) -> list[PatchHost]:
        """Rows of ``hostnames`` (every row when None)."""
        query = sa.select(table)
        if hostnames is not None:
            query = query.where(table.c.hostname.in_(list(hostnames)))
        with self.engine.connect() as conn:
            return [PatchHost(*row) for row in conn.execute(query)]

    def save(self, values: dict[str, Any], expect_revision: str | None) -> bool:
        """Write one host's row (``values`` holds its hostname and new revision) if it
        is still at ``expect_revision``, or, with None, if it does not exist yet.
        False when another writer came first."""
        now = utcnow()
        if expect_revision is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(table.insert().values(created_at=now, updated_at=now,
                                                       **values))
            except IntegrityError:
                return False
            return True
        query = table.update().where(table.c.hostname == values["hostname"],
                                     table.c.revision == expect_revision)
        with self.engine.begin() as conn:
            return conn.execute(query.values(updated_at=now, **values)).rowcount == 1

    def set_interim(self, interim: dict[str, list[str]]) -> None:
        """Set the interim patch IDs of each named host in one statement (after an
        apply or remove); each row gets a new revision, so every reader re-reads it."""
        if not interim:
            return
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(_INTERIM_UPDATE, [
                {"b_hostname": name, "b_interim": ids, "b_revision": new_revision(),
                 "b_updated_at": now} for name, ids in interim.items()])

    def delete(self, hostname: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(table.delete().where(table.c.hostname == hostname)
                                ).rowcount == 1
