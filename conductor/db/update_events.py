"""Omaha event reports written in batches: the reports that arrive while one batch is
being written share the next transaction (conductor/db/group_commit.py).

A report (13/1, 14/1, 3/1 after a check; 3/2 after the reboot) was three
transactions of four statements each on an API thread. A fleet sends 2,000 of them
within seconds, and they held the database's write lock - and the CPU - while later
lease rounds waited (bench/rollout.py). Here a batch is one transaction of at most
four statements whatever its size: one UPDATE of the instances (executemany), the
history rows (executemany), and one DELETE that keeps each instance's last
:data:`conductor.db.updates.HISTORY` rows. Each report returns once its batch is
committed; a batch that fails records none of its reports, and each of them raises.
"""
from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa

from conductor.db.group_commit import GroupCommit
from conductor.db.queries import utcnow
from conductor.db.schema import update_instance_events as events
from conductor.db.schema import update_instances as instances
from conductor.db.updates import trim_history


@dataclasses.dataclass(frozen=True)
class StatusChange:
    """One event's effect: the instance's new status (its error, and the version it
    runs if the event says), and the history row's version."""

    instance_id: int
    status: str
    version: str | None
    code: int | None = None
    text: str | None = None
    running: str | None = None


_SET = instances.update().where(instances.c.id == sa.bindparam("b_id")).values(
    status=sa.bindparam("b_status"), error_code=sa.bindparam("b_code"),
    error_text=sa.bindparam("b_text"), updated_at=sa.bindparam("b_now"),
    version=sa.func.coalesce(sa.bindparam("b_running", type_=instances.c.version.type),
                             instances.c.version))


class EventRows:
    """``record(changes)``: one report's changes, committed with the reports queued
    meanwhile; ``turn``: the process's write turn it takes (conductor/db/write_turns.py)."""

    def __init__(self, engine: sa.Engine, turn: AbstractContextManager[object]):
        self.engine = engine
        self._commits: GroupCommit[tuple[StatusChange, ...], None] = \
            GroupCommit(self._write, turn)

    def record(self, changes: Sequence[StatusChange]) -> None:
        """Write ``changes`` (one report's, in the order of its events); returns once
        they are committed."""
        if changes:
            self._commits.submit(tuple(changes))

    def pending(self) -> int:
        """Reports waiting for the next writer (tests)."""
        return self._commits.pending()

    def _write(self, batch: list[tuple[StatusChange, ...]]) -> list[None]:
        changes = [change for report in batch for change in report]
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(_SET, list(_last_per_instance(changes, now).values()))
            conn.execute(events.insert(), [dict(
                instance_id=c.instance_id, status=c.status, version=c.version,
                error_code=c.code, text=c.text, created_at=now) for c in changes])
            conn.execute(trim_history({c.instance_id for c in changes}))
        return [None] * len(batch)


def _last_per_instance(changes: list[StatusChange], now: datetime.datetime
                       ) -> dict[int, dict[str, Any]]:
    """Each instance's row after its changes in order: the last status and error, the
    last version it was reported running (None: unchanged)."""
    rows: dict[int, dict[str, Any]] = {}
    for change in changes:
        before = rows.get(change.instance_id)
        running = change.running if change.running is not None else \
            None if before is None else before["b_running"]
        rows[change.instance_id] = dict(b_id=change.instance_id, b_status=change.status,
                                        b_code=change.code, b_text=change.text,
                                        b_now=now, b_running=running)
    return rows
