"""Queries of the image-update tables: images, deltas, channels, groups, instances.

The update check's path is one indexed read of the instance (machine id + appid; on the
DBAPI cursor, conductor/db/raw_select.py) and its check time written in a batch
(:meth:`UpdateRows.touch`); a grant is a conditional UPDATE of the
group's period counter and of the instance, so two API processes never grant past a
group's per-period maximum nor twice to one instance. The reboot leases are in
conductor/db/leases.py.
"""
from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from conductor.db.queries import utcnow
from conductor.db.raw_select import RawSelect
from conductor.db.schema import update_channels as channels
from conductor.db.schema import update_deltas as deltas
from conductor.db.schema import update_groups as groups
from conductor.db.schema import update_images as images
from conductor.db.schema import update_instance_events as events
from conductor.db.schema import update_instances as instances

#: History rows kept per instance: a client cannot grow the table without bound.
HISTORY = 50
IN_PROGRESS = ("granted", "downloading", "downloaded", "installed")
#: Defaults of a group made with its channel (Nebraska's seeded public groups).
GROUP_DEFAULTS: dict[str, Any] = dict(
    updates_enabled=True, safe_mode=False, max_updates_per_period=999999,
    period_interval=60, update_timeout=3600, office_hours=False, window_start=None,
    window_length=None, timezone="UTC", rollout_percent=100, floors=[],
    halted_reason=None, period_grants=0)
POLICY_COLUMNS = tuple(k for k in GROUP_DEFAULTS if k != "period_grants")


def trim_history(instance_ids: Iterable[int]) -> sa.Delete:
    """The DELETE that keeps only the last :data:`HISTORY` history rows of each of
    ``instance_ids`` (one statement for any number of them: an event batch's)."""
    newer = events.alias("newer")
    cutoff = sa.select(newer.c.id).where(newer.c.instance_id == events.c.instance_id) \
        .order_by(newer.c.id.desc()).offset(HISTORY).limit(1).scalar_subquery()
    return events.delete().where(events.c.instance_id.in_(list(instance_ids)),
                                 events.c.id <= cutoff)



#: The check path's two statements, built once (no expression building per check).
_INSTANCE = sa.select(instances).where(instances.c.machineid == sa.bindparam("b_machineid"),
                                       instances.c.appid == sa.bindparam("b_appid"))
_TOUCH = instances.update().where(instances.c.id == sa.bindparam("b_id")).values(
    version=sa.bindparam("b_version"), group_name=sa.bindparam("b_group"),
    last_check_at=sa.bindparam("b_now"))


def _row(kind: Any, row: Any) -> Any:
    return None if row is None else kind(**row._mapping)


@dataclasses.dataclass(frozen=True)
class Image:
    id: int
    appid: str
    version: str
    channel: str | None
    sha256: str
    size: int
    signature: str
    created_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class Delta:
    id: int
    appid: str
    from_version: str
    to_version: str
    state: str
    sha256: str | None
    size: int | None
    error: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime | None


@dataclasses.dataclass(frozen=True)
class Instance:
    id: int
    machineid: str
    appid: str
    group_name: str
    version: str
    node_uuid: str | None
    status: str
    target_version: str | None
    error_code: int | None
    error_text: str | None
    granted_at: datetime.datetime | None
    last_check_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime | None


class UpdateRows:
    """The update tables' queries over one engine (thread-safe, as Store)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._check_read = RawSelect(engine, _INSTANCE)

    # -- images and deltas ------------------------------------------------------------
    def add_image(self, values: dict[str, Any]) -> bool:
        """Insert an image; False when its appid already has that version."""
        try:
            with self.engine.begin() as conn:
                conn.execute(images.insert().values(created_at=utcnow(), **values))
        except IntegrityError:
            return False
        return True

    def images(self, appid: str | None = None) -> list[Image]:
        query = sa.select(images).order_by(images.c.appid, images.c.id)
        if appid is not None:
            query = query.where(images.c.appid == appid)
        with self.engine.connect() as conn:
            return [Image(**row._mapping) for row in conn.execute(query)]

    def image(self, appid: str, version: str) -> Image | None:
        with self.engine.connect() as conn:
            image: Image | None = _row(Image, conn.execute(sa.select(images).where(
                images.c.appid == appid, images.c.version == version)).first())
        return image

    def delete_image(self, appid: str, version: str) -> tuple[bool, list[str]]:
        """Delete an image and its deltas unless a channel points at it: (deleted,
        names of the channels that point at it)."""
        with self.engine.begin() as conn:
            held = list(conn.execute(sa.select(channels.c.name).where(
                channels.c.appid == appid, channels.c.version == version)).scalars())
            if held:
                return False, held
            conn.execute(deltas.delete().where(deltas.c.appid == appid, sa.or_(
                deltas.c.from_version == version, deltas.c.to_version == version)))
            gone = conn.execute(images.delete().where(images.c.appid == appid,
                                                      images.c.version == version))
            return gone.rowcount == 1, []

    def sha256_in_use(self, sha256: str) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(sa.select(images.c.id).where(images.c.sha256 == sha256)
                                     ).first() or conn.execute(
                sa.select(deltas.c.id).where(deltas.c.sha256 == sha256)).first())

    def add_delta(self, appid: str, from_version: str, to_version: str) -> bool:
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(deltas.insert().values(
                    appid=appid, from_version=from_version, to_version=to_version,
                    state="pending", created_at=now, updated_at=now))
        except IntegrityError:
            return False
        return True

    def set_delta(self, delta_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(deltas.update().where(deltas.c.id == delta_id)
                         .values(updated_at=utcnow(), **values))

    def deltas(self, appid: str | None = None, state: str | None = None) -> list[Delta]:
        query = sa.select(deltas).order_by(deltas.c.id)
        if appid is not None:
            query = query.where(deltas.c.appid == appid)
        if state is not None:
            query = query.where(deltas.c.state == state)
        with self.engine.connect() as conn:
            return [Delta(**row._mapping) for row in conn.execute(query)]

    # -- channels and groups ----------------------------------------------------------
    def ensure_channel(self, appid: str, name: str) -> None:
        """The channel and its group of the same name, made if missing."""
        now = utcnow()
        for table, values in ((channels, {}),
                              (groups, dict(GROUP_DEFAULTS, channel=name))):
            try:
                with self.engine.begin() as conn:
                    if conn.execute(sa.select(table.c.id).where(
                            table.c.appid == appid, table.c.name == name)).first():
                        continue
                    conn.execute(table.insert().values(appid=appid, name=name,
                                                       created_at=now, updated_at=now,
                                                       **values))
            except IntegrityError:
                pass   # made by another process meanwhile

    def set_channel(self, appid: str, name: str, version: str | None) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(channels.update().where(
                channels.c.appid == appid, channels.c.name == name).values(
                version=version, updated_at=utcnow())).rowcount == 1

    def channels(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(
                sa.select(channels).order_by(channels.c.appid, channels.c.name))]

    def groups(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(
                sa.select(groups).order_by(groups.c.appid, groups.c.name))]

    def create_group(self, appid: str, name: str, channel: str,
                     policy: dict[str, Any]) -> bool:
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(groups.insert().values(
                    **dict(GROUP_DEFAULTS, **policy), appid=appid, name=name,
                    channel=channel, created_at=now, updated_at=now))
        except IntegrityError:
            return False
        return True

    def update_group(self, appid: str, name: str, values: dict[str, Any]) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(groups.update().where(
                groups.c.appid == appid, groups.c.name == name).values(
                updated_at=utcnow(), **values)).rowcount == 1

    def take_grant(self, group_id: int, maximum: int, interval: int,
                   now: datetime.datetime) -> bool:
        """Count one grant in the group's period if that stays within ``maximum``
        (a new period starts when the last one is over): one conditional UPDATE."""
        expired = now - datetime.timedelta(seconds=interval)
        new_period = sa.or_(groups.c.period_start.is_(None), groups.c.period_start <= expired)
        query = groups.update().where(
            groups.c.id == group_id,
            sa.or_(new_period, groups.c.period_grants < maximum)).values(
            period_grants=sa.case((new_period, 1), else_=groups.c.period_grants + 1),
            period_start=sa.case((new_period, now), else_=groups.c.period_start))
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount == 1

    # -- instances --------------------------------------------------------------------
    def instance(self, machineid: str, appid: str) -> Instance | None:
        with self.engine.connect() as conn:
            found: Instance | None = _row(Instance, conn.execute(sa.select(instances).where(
                instances.c.machineid == machineid, instances.c.appid == appid)).first())
        return found

    def check_in(self, machineid: str, appid: str, version: str, group: str
                 ) -> Instance | None:
        """The check path: the instance's row (as it was; None: no such instance),
        then one UPDATE of its version, group and check time when its version or
        group changed (values from the request alone: no read-modify-write). The
        check time alone is written in batches (:meth:`touch`). The read skips
        SQLAlchemy's per-statement work (conductor/db/raw_select.py): it cost three
        times the read itself."""
        row = self._check_read.first(b_machineid=machineid, b_appid=appid)
        if row is None:
            return None
        found = Instance(**row)
        if (found.version, found.group_name) != (version, group):
            with self.engine.begin() as conn:
                conn.execute(_TOUCH, {"b_id": found.id, "b_version": version,
                                      "b_group": group, "b_now": utcnow()})
        return found

    def touch(self, checked: dict[int, datetime.datetime]) -> None:
        """Instance id -> time of its last check, for many instances: one UPDATE per
        distinct time (a flush of :class:`conductor.updates.omaha_server.CheckTimes`)."""
        by_time: dict[datetime.datetime, list[int]] = {}
        for instance_id, when in checked.items():
            by_time.setdefault(when, []).append(instance_id)
        with self.engine.begin() as conn:
            for when, ids in by_time.items():
                for start in range(0, len(ids), 500):
                    conn.execute(instances.update().where(
                        instances.c.id.in_(ids[start:start + 500])).values(
                        last_check_at=when))

    def add_instance(self, values: dict[str, Any]) -> Instance | None:
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(instances.insert().values(
                    created_at=now, updated_at=now, last_check_at=now, **values))
        except IntegrityError:
            pass   # the same machine's other request came first
        return self.instance(values["machineid"], values["appid"])

    def grant(self, instance: Instance, target: str, timeout: int,
              now: datetime.datetime) -> bool:
        """Record a grant unless another process granted the instance meanwhile."""
        stale = now - datetime.timedelta(seconds=timeout)
        query = instances.update().where(
            instances.c.id == instance.id,
            sa.or_(instances.c.status.not_in(IN_PROGRESS[1:]),
                   instances.c.granted_at.is_(None), instances.c.granted_at <= stale)
        ).values(status="granted", target_version=target, granted_at=now,
                 error_code=None, error_text=None, updated_at=now)
        with self.engine.begin() as conn:
            if conn.execute(query).rowcount != 1:
                return False
            self._history(conn, instance.id, "granted", target, None, None, now)
        return True

    @staticmethod
    def _history(conn: sa.Connection, instance_id: int, status: str, version: str | None,
                 code: int | None, text: str | None, now: datetime.datetime) -> None:
        conn.execute(events.insert().values(instance_id=instance_id, status=status,
                                            version=version, error_code=code, text=text,
                                            created_at=now))
        conn.execute(trim_history([instance_id]))

    def instances(self, group: str | None = None, status: str | None = None,
                  version: str | None = None, limit: int = 1000, offset: int = 0
                  ) -> list[Instance]:
        query = sa.select(instances).order_by(instances.c.id).limit(limit).offset(offset)
        for column, value in ((instances.c.group_name, group),
                              (instances.c.status, status), (instances.c.version, version)):
            if value is not None:
                query = query.where(column == value)
        with self.engine.connect() as conn:
            return [Instance(**row._mapping) for row in conn.execute(query)]

    def find_instance(self, ident: str) -> Instance | None:
        """By machine id or node UUID (the first application's row)."""
        with self.engine.connect() as conn:
            found: Instance | None = _row(Instance, conn.execute(
                sa.select(instances).where(sa.or_(instances.c.machineid == ident,
                                                  instances.c.node_uuid == ident))
                .order_by(instances.c.id)).first())
        return found

    def history(self, instance_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(
                sa.select(events.c.status, events.c.version, events.c.error_code,
                          events.c.text, events.c.created_at)
                .where(events.c.instance_id == instance_id).order_by(events.c.id))]

    def rollout(self, appid: str, group: str, target: str, timeout: int,
                now: datetime.datetime) -> tuple[int, int, int]:
        """(instances that attempted ``target``, instances updating within the timeout,
        instances whose update to ``target`` timed out: granted before the timeout and
        still not finished) of a group: what the concurrency rules need, read only when
        a grant is possible and the group's policy limits anything."""
        since = now - datetime.timedelta(seconds=timeout)
        base = sa.select(sa.func.count()).select_from(instances).where(
            instances.c.appid == appid, instances.c.group_name == group)
        updating = instances.c.status.in_(IN_PROGRESS)
        with self.engine.connect() as conn:
            attempted = conn.execute(base.where(
                instances.c.target_version == target,
                instances.c.status.in_(("complete", "error")))).scalar_one()
            busy = conn.execute(base.where(updating, instances.c.granted_at > since)
                                ).scalar_one()
            late = conn.execute(base.where(updating, instances.c.target_version == target,
                                           instances.c.granted_at <= since)).scalar_one()
        return attempted, busy, late

    # -- the console's views ------------------------------------------------------------
    def instance_counts(self) -> list[tuple[str, str, str, int]]:
        """(group, version, status, instances): one GROUP BY over the instances."""
        query = sa.select(instances.c.group_name, instances.c.version, instances.c.status,
                          sa.func.count()).group_by(
            instances.c.group_name, instances.c.version, instances.c.status)
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]

    def version_changes(self) -> tuple[list[tuple[int, str, datetime.datetime]],
                                       list[tuple[int, str, datetime.datetime]]]:
        """What the roll-out chart is drawn from: every instance's (id, version now,
        first seen) and, grouped, when each instance first completed each version
        (instance id, version, first ``complete`` event): two reads, one row per
        instance plus one per version an instance reached."""
        completed = sa.select(events.c.instance_id, events.c.version,
                              sa.func.min(events.c.created_at)).where(
            events.c.status == "complete", events.c.version.is_not(None)).group_by(
            events.c.instance_id, events.c.version)
        with self.engine.connect() as conn:
            seen = [tuple(row) for row in conn.execute(sa.select(
                instances.c.id, instances.c.version, instances.c.created_at))]
            done = [tuple(row) for row in conn.execute(completed)]
        return seen, done

    def change_mark(self) -> tuple[Any, ...]:
        """Changes when an instance is added or moves (every status change and grant
        writes a history row): the newest ids of both tables, read off their primary
        keys (what the console's change publisher looks at each tick)."""
        with self.engine.connect() as conn:
            return tuple(conn.execute(sa.select(
                sa.select(sa.func.max(instances.c.id)).scalar_subquery(),
                sa.select(sa.func.max(events.c.id)).scalar_subquery())).one())
