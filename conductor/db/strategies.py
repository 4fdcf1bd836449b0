"""Queries of sw_update_strategies, the one persisted orchestration strategy.

Writes are optimistic like patch_hosts': a save names the revision its writer read,
so an abort requested through one API process and a step advanced by the runner of
another never overwrite each other unseen (the loser re-reads and decides again).
The runner's ownership is a lease: ``claim`` succeeds for the owner itself, for a
strategy nobody owns, and for one whose owner stopped touching it.
"""
from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from conductor.db.queries import utcnow
from conductor.db.schema import sw_update_strategies as table


def new_revision() -> str:
    return uuid.uuid4().hex


@dataclasses.dataclass(frozen=True)
class StrategyRow:
    uuid: str
    name: str
    state: str
    document: dict[str, Any]
    revision: str
    owner: str | None
    owner_seen_at: datetime.datetime | None


_COLUMNS = (table.c.uuid, table.c.name, table.c.state, table.c.document, table.c.revision,
            table.c.owner, table.c.owner_seen_at)


class StrategyRows:
    """The sw_update_strategies queries over one engine (thread-safe, as Store)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def get(self) -> StrategyRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*_COLUMNS).where(table.c.slot == 1)).first()
        return None if row is None else StrategyRow(*row)

    def revision(self) -> str | None:
        """The strategy's revision (None: no strategy): what a cached copy checks."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(table.c.revision).where(table.c.slot == 1)
                                ).scalar_one_or_none()

    def create(self, strategy_uuid: str, name: str, state: str,
               document: dict[str, Any]) -> str | None:
        """Insert the strategy; its revision, or None when one exists already."""
        now, revision = utcnow(), new_revision()
        try:
            with self.engine.begin() as conn:
                conn.execute(table.insert().values(
                    slot=1, uuid=strategy_uuid, name=name, state=state, document=document,
                    revision=revision, created_at=now, updated_at=now))
        except IntegrityError:
            return None
        return revision

    def save(self, strategy_uuid: str, state: str, document: dict[str, Any],
             expect_revision: str) -> str | None:
        """Write over ``expect_revision``; the new revision, or None if another writer
        came first (or the strategy was deleted)."""
        revision = new_revision()
        query = table.update().where(table.c.uuid == strategy_uuid,
                                     table.c.revision == expect_revision).values(
            state=state, document=document, revision=revision, updated_at=utcnow())
        with self.engine.begin() as conn:
            return revision if conn.execute(query).rowcount == 1 else None

    def claim(self, strategy_uuid: str, owner: str, lease: float) -> bool:
        """Own the strategy's runner for ``lease`` seconds more: True for the owner,
        for an unowned strategy and for one whose owner let its lease run out."""
        now = utcnow()
        expired = now - datetime.timedelta(seconds=lease)
        query = table.update().where(
            table.c.uuid == strategy_uuid,
            sa.or_(table.c.owner.is_(None), table.c.owner == owner,
                   table.c.owner_seen_at < expired)).values(owner=owner, owner_seen_at=now)
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount == 1

    def release(self, strategy_uuid: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.update().where(table.c.uuid == strategy_uuid,
                                              table.c.owner == owner).values(owner=None))

    def delete(self, strategy_uuid: str, expect_revision: str | None = None) -> bool:
        query = table.delete().where(table.c.uuid == strategy_uuid)
        if expect_revision is not None:
            query = query.where(table.c.revision == expect_revision)
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount == 1
