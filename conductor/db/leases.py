"""Queries of the reboot lease semaphore (update_lease_groups, update_leases).

Every acquire starts with ``UPDATE update_lease_groups SET generation = generation + 1``
on its group's row, in the same transaction as the count and the insert: on PostgreSQL
the row lock makes a second acquirer wait until the first commits (and its count then
sees the first's lease); on SQLite the first statement takes the write lock, so no
transaction counts from a stale snapshot. Two API processes therefore never let more
than ``max_holders`` hold a lease. Expired leases are not counted and are purged by the
next acquire: a holder that disappears loses its lease after its TTL. Releases (each
with the hand-over to a held waiter, if any) that arrive while others are being
written are written together next, in one transaction (:meth:`LeaseRows.hand_over`).
"""
from __future__ import annotations

import dataclasses
import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from conductor.db.group_commit import GroupCommit
from conductor.db.queries import utcnow
from conductor.db.schema import update_lease_groups as groups
from conductor.db.schema import update_leases as leases
from conductor.db.write_turns import WriteTurns

DEFAULT_MAX = 1


@dataclasses.dataclass(frozen=True)
class Lease:
    group: str
    holder: str
    acquired_at: datetime.datetime
    expires_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one acquire/renew/release did and how the group stands after it."""

    held: bool
    group: str
    max: int
    holders: int
    lease: Lease | None = None
    retry_after: float | None = None


@dataclasses.dataclass(frozen=True)
class _Release:
    """One release (and hand-over) to be written with the others queued."""

    group: str
    holder: str
    successor: str | None
    ttl: float


def _retry_from(first: datetime.datetime | None, now: datetime.datetime, ttl: float
                ) -> float:
    """Seconds until ``first`` (a group's first lease to run out; at most ``ttl``)."""
    if first is None:
        return 1.0
    if first.tzinfo is None:
        first = first.replace(tzinfo=datetime.UTC)
    return float(max(1.0, min(ttl, (first - now).total_seconds())))


_LIVE = sa.and_(leases.c.group_name == sa.bindparam("b_group"),
                leases.c.expires_at > sa.bindparam("b_now", type_=leases.c.expires_at.type))
#: What a poll of a full group reads, in one statement built once (a fleet's waiting
#: hosts poll ~150 times a second): (max, live leases, the holder's, the first to run
#: out); no row: no such group.
_FULL = sa.select(
    groups.c.max_holders,
    sa.select(sa.func.count()).select_from(leases).where(_LIVE).scalar_subquery(),
    sa.select(sa.func.count()).select_from(leases).where(
        _LIVE, leases.c.holder == sa.bindparam("b_holder")).scalar_subquery(),
    sa.select(sa.func.min(leases.c.expires_at)).where(
        leases.c.group_name == sa.bindparam("b_group")).scalar_subquery(),
).where(groups.c.name == sa.bindparam("b_group"))


class LeaseRows:
    def __init__(self, engine: sa.Engine, turns: WriteTurns | None = None):
        self.engine = engine
        # One lease write at a time in this process, and before the other writers
        # that share ``turns`` (the Omaha event reports, on SQLite): concurrent
        # writers otherwise meet in SQLite's busy handler, whose sleeps grow to
        # 100 ms - a burst of releases and grants then took seconds at its tail
        # (bench/rollout.py). The database still decides between processes (the
        # group row's lock).
        self._writing = (turns or WriteTurns()).urgent
        self._releases: GroupCommit[_Release, tuple[Outcome, Outcome | None]] = \
            GroupCommit(self._write_releases, self._writing)
        self._groups: set[str] = set()       # groups known to exist

    def _ensure_group(self, name: str) -> None:
        """Create group ``name`` unless it exists. Groups are never deleted, so one
        seen here is not asked for again: every release and acquire asked, a
        transaction of its own in the middle of a lease round."""
        if name in self._groups:
            return
        try:
            with self.engine.begin() as conn:
                if not conn.execute(sa.select(groups.c.id)
                                    .where(groups.c.name == name)).first():
                    conn.execute(groups.insert().values(
                        name=name, max_holders=DEFAULT_MAX, generation=0,
                        updated_at=utcnow()))
        except IntegrityError:
            pass   # another process created it first
        self._groups.add(name)

    def acquire(self, group: str, holder: str, ttl: float, renew_only: bool = False,
                defer: bool = False) -> Outcome:
        """Take (or renew, for a current holder) ``holder``'s lease in ``group``.
        ``defer``: others wait for a free slot before this holder (the caller's
        waiting room): renew a current lease, but take no new one."""
        now = utcnow()
        refused = self._surely_full(group, holder, now, ttl, defer)
        if refused is not None:
            return refused
        self._ensure_group(group)
        expires = now + datetime.timedelta(seconds=ttl)
        with self._writing, self.engine.begin() as conn:
            conn.execute(groups.update().where(groups.c.name == group)
                         .values(generation=groups.c.generation + 1))
            maximum = conn.execute(sa.select(groups.c.max_holders)
                                   .where(groups.c.name == group)).scalar_one()
            conn.execute(leases.delete().where(leases.c.group_name == group,
                                               leases.c.expires_at <= now))
            renewed = conn.execute(leases.update().where(
                leases.c.group_name == group, leases.c.holder == holder)
                .values(expires_at=expires)).rowcount == 1
            count = self._count(conn, group)
            if not renewed and (renew_only or defer or count >= maximum):
                return Outcome(False, group, maximum, count,
                               retry_after=self._retry_after(conn, group, now, ttl))
            if not renewed:
                conn.execute(leases.insert().values(group_name=group, holder=holder,
                                                    acquired_at=now, expires_at=expires))
                count += 1
            lease = Lease(*conn.execute(sa.select(
                leases.c.group_name, leases.c.holder, leases.c.acquired_at,
                leases.c.expires_at).where(leases.c.group_name == group,
                                           leases.c.holder == holder)).one())
        return Outcome(True, group, maximum, count, lease)

    def _surely_full(self, group: str, holder: str, now: datetime.datetime,
                     ttl: float, defer: bool = False) -> Outcome | None:
        """A refusal read without a write when the group is full of other holders'
        live leases (what most polls of a waiting host meet), or when ``defer`` and
        ``holder`` holds none; None: decide under the group's lock (or create the
        group). Leases only leave a full group, so a refusal read here is never wrong
        for longer than that read takes."""
        with self.engine.connect() as conn:
            row = conn.execute(_FULL, {"b_group": group, "b_holder": holder,
                                       "b_now": now}).first()
        if row is None:
            return None
        maximum, count, mine, first = row
        if mine or (count < maximum and not defer):
            return None
        return Outcome(False, group, maximum, count,
                       retry_after=_retry_from(first, now, ttl))

    @staticmethod
    def _count(conn: sa.Connection, group: str) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(leases)
                            .where(leases.c.group_name == group)).scalar_one())

    @staticmethod
    def _retry_after(conn: sa.Connection, group: str, now: datetime.datetime, ttl: float) -> float:
        """Seconds until the first lease of ``group`` runs out (at most ``ttl``)."""
        return _retry_from(conn.execute(sa.select(sa.func.min(leases.c.expires_at)).where(
            leases.c.group_name == group)).scalar_one_or_none(), now, ttl)

    def release(self, group: str, holder: str) -> Outcome:
        return self.hand_over(group, holder, None, 0.0)[0]

    def hand_over(self, group: str, holder: str, successor: str | None, ttl: float
                  ) -> tuple[Outcome, Outcome | None]:
        """Release ``holder``'s lease and, in the same transaction, give ``successor``
        (if any) one if the group has room (counted under the group's row lock, as
        acquire does): (the release's outcome, the successor's lease or None).

        Releases that arrive while another release is being written are written
        together next, in one transaction (group commit): a lease round's 50 releases
        come within milliseconds, and one transaction each queued them behind this
        process's lease write lock - 0.3 s median, 2.3 s p90 while the fleet's first
        Omaha requests loaded the server (bench/rollout.py), their slots idle
        meanwhile."""
        self._ensure_group(group)
        return self._releases.submit(_Release(group, holder, successor, ttl))

    def pending_releases(self) -> int:
        """Releases waiting for the next writer (tests)."""
        return self._releases.pending()

    def _write_releases(self, batch: list[_Release]
                        ) -> list[tuple[Outcome, Outcome | None]]:
        """One transaction for ``batch`` (conductor/db/group_commit.py): the outcome
        of each release and hand-over, in the batch's order."""
        outcomes: dict[int, tuple[Outcome, Outcome | None]] = {}
        with self.engine.begin() as conn:
            for group in dict.fromkeys(item.group for item in batch):
                self._release_group(conn, group, [(n, i) for n, i in enumerate(batch)
                                                  if i.group == group], outcomes)
        return [outcomes[n] for n in range(len(batch))]

    @staticmethod
    def _release_group(conn: sa.Connection, group: str, batch: list[tuple[int, _Release]],
                       outcomes: dict[int, tuple[Outcome, Outcome | None]]) -> None:
        """Release ``batch``'s holders of ``group``, then hand their successors the
        room there is, in the order they came."""
        now = utcnow()
        conn.execute(groups.update().where(groups.c.name == group)
                     .values(generation=groups.c.generation + 1))
        conn.execute(leases.delete().where(leases.c.group_name == group, sa.or_(
            leases.c.holder.in_([item.holder for _, item in batch]),
            leases.c.expires_at <= now)))
        maximum = conn.execute(sa.select(groups.c.max_holders)
                               .where(groups.c.name == group)).scalar_one()
        count = released = LeaseRows._count(conn, group)
        holding = set(conn.execute(sa.select(leases.c.holder).where(
            leases.c.group_name == group, leases.c.holder.in_(
                [i.successor for _, i in batch if i.successor is not None]))).scalars())
        for n, item in batch:
            outcomes[n] = (Outcome(False, group, maximum, released), None)
            if item.successor is None or item.successor in holding or count >= maximum:
                continue
            expires = now + datetime.timedelta(seconds=item.ttl)
            conn.execute(leases.insert().values(group_name=group, holder=item.successor,
                                                acquired_at=now, expires_at=expires))
            holding.add(item.successor)
            count += 1
            outcomes[n] = (outcomes[n][0], Outcome(True, group, maximum, count, Lease(
                group, item.successor, now, expires)))

    def set_max(self, group: str, maximum: int) -> None:
        self._ensure_group(group)
        with self.engine.begin() as conn:
            conn.execute(groups.update().where(groups.c.name == group)
                         .values(max_holders=maximum, updated_at=utcnow()))

    def status(self) -> list[tuple[str, int, list[Lease]]]:
        """Every group: (name, max, live leases)."""
        now = utcnow()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(groups.c.name, groups.c.max_holders)
                                .order_by(groups.c.name)).all()
            held = conn.execute(sa.select(
                leases.c.group_name, leases.c.holder, leases.c.acquired_at,
                leases.c.expires_at).where(leases.c.expires_at > now)
                .order_by(leases.c.acquired_at)).all()
        return [(name, maximum, [Lease(*row) for row in held if row[0] == name])
                for name, maximum in rows]

    def change_mark(self) -> tuple[object, ...]:
        """Changes when a lease is taken, released or runs out or a maximum is set:
        the newest lease id, the live leases and the groups' newest write (both tables
        hold a row per holder or group, never the fleet)."""
        now = utcnow()
        with self.engine.connect() as conn:
            return tuple(conn.execute(sa.select(
                sa.select(sa.func.max(leases.c.id)).scalar_subquery(),
                sa.select(sa.func.count()).select_from(leases)
                .where(leases.c.expires_at > now).scalar_subquery(),
                sa.select(sa.func.max(groups.c.updated_at)).scalar_subquery())).one())
