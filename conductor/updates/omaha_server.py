"""The Omaha v3 update server: one request in, one response out (spec §2).

For each ``<app>`` of a request: find the group (``track``; each channel has a group of
its name) of a known application, register or touch the instance (one row per machine
id and appid: one indexed read, at most one write), record its events (with the
reports that arrive meanwhile, in one transaction: instances.py), and for an
``<updatecheck>`` ask :func:`conductor.updates.policy.decide`; a grant is recorded with
conditional UPDATEs (conductor/db/updates.py). Groups, channels, images and ready
deltas come from a snapshot cached for ``cache_ttl`` seconds and dropped at once when
this process changes them, so a check costs no reads of them.

The endpoint is public: unknown applications and groups get Nebraska's status and no
row; the answer names only the payload to fetch.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable

from conductor.db.queries import utcnow
from conductor.db.update_events import EventRows
from conductor.db.updates import Image, Instance, UpdateRows
from conductor.db.write_turns import WriteTurns
from conductor.updates import policy
from conductor.updates.instances import Recorder
from conductor.updates.registrations import Registrations
from ramdisk_agent.wire import omaha, omaha_codes

LOG = logging.getLogger(__name__)
#: Seconds between two writes of the instances' check times (CheckTimes).
FLUSH_INTERVAL = 1.0
PAYLOAD_PATH = "/updates/v1/payloads/"
DEFAULT_TRACK = "stable"


@dataclasses.dataclass(frozen=True)
class GroupView:
    id: int
    name: str
    channel: str
    channel_version: str | None
    policy: policy.Policy


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One application's groups, images and ready deltas."""

    groups: dict[str, GroupView]
    images: dict[str, Image]
    deltas: dict[tuple[str, str], tuple[str, int]]


def _policy(row: dict) -> policy.Policy:
    values = {f.name: row[f.name] for f in dataclasses.fields(policy.Policy)}
    values["floors"] = tuple(row["floors"] or ())
    return policy.Policy(**values)


class SnapshotCache:
    """Snapshots per appid, re-read after ``ttl`` seconds or :meth:`invalidate`."""

    def __init__(self, rows: UpdateRows, ttl: float):
        self.rows, self.ttl = rows, ttl
        self._lock = threading.Lock()
        self._at = -1e18
        self._apps: dict[str, Snapshot] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._at = -1e18

    def get(self, appid: str) -> Snapshot | None:
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                self._apps, self._at = self._load(), time.monotonic()
            return self._apps.get(appid)

    def _load(self) -> dict[str, Snapshot]:
        versions = {(c["appid"], c["name"]): c["version"] for c in self.rows.channels()}
        apps: dict[str, Snapshot] = {}

        def app(appid: str) -> Snapshot:
            return apps.setdefault(appid, Snapshot({}, {}, {}))
        for row in self.rows.groups():
            app(row["appid"]).groups[row["name"]] = GroupView(
                row["id"], row["name"], row["channel"],
                versions.get((row["appid"], row["channel"])), _policy(row))
        for image in self.rows.images():
            app(image.appid).images[image.version] = image
        for delta in self.rows.deltas(state="ready"):
            if delta.sha256 and delta.size:
                app(delta.appid).deltas[(delta.from_version, delta.to_version)] = \
                    (delta.sha256, delta.size)
        return apps


class CheckTimes:
    """The time of each instance's last check, written in one batch every
    :data:`FLUSH_INTERVAL` seconds instead of one UPDATE per check (at most one
    entry per instance is pending; a crash loses at most that second of check times,
    which only say when a host was last seen)."""

    def __init__(self, rows: UpdateRows, interval: float = FLUSH_INTERVAL):
        self.rows, self.interval = rows, interval
        self._lock = threading.Lock()
        self._pending: dict[int, datetime.datetime] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def checked(self, instance_id: int) -> None:
        now = utcnow().replace(microsecond=0)    # one UPDATE per second of checks
        with self._lock:
            self._pending[instance_id] = now

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            self.rows.touch(pending)
        except Exception:
            with self._lock:     # kept for the next flush, unless checked again since
                self._pending = {**pending, **self._pending}
            raise

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:
                LOG.exception("Writing update check times failed; retrying")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="check-times", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()


class OmahaServer:
    def __init__(self, rows: UpdateRows, cache: SnapshotCache,
                 node_of: Callable[[str], str | None],
                 clock: Callable[[], datetime.datetime] = utcnow,
                 registrations: Registrations | None = None,
                 events: EventRows | None = None):
        """``events``: where reports are written (by default with a write turn of
        their own; conductor/service/updates.py shares the lease writes' turns)."""
        self.rows, self.cache, self.node_of, self.clock = rows, cache, node_of, clock
        self.check_times = CheckTimes(rows)
        self.registrations = registrations or Registrations()
        self.recorder = Recorder(events or EventRows(rows.engine, WriteTurns().normal),
                                 self.halt)

    def handle(self, body: bytes, base_url: str, client: str = "unknown") -> bytes:
        """The response to a request body from ``client`` (its address: what new
        instances it may register is bounded); an OmahaError (a 400) when it is
        malformed, before anything is recorded."""
        request = omaha.parse_request(body)
        now = self.clock()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        apps = tuple(self._app(app, base_url.rstrip("/") + PAYLOAD_PATH, now, client)
                     for app in request.apps)
        return omaha.render_response(omaha.Response(
            apps, int((now - midnight).total_seconds())))

    def _app(self, app: omaha.AppRequest, codebase: str, now: datetime.datetime,
             client: str = "unknown") -> omaha.AppResponse:
        appid = app.appid.lower()
        snapshot = self.cache.get(appid)
        group = None if snapshot is None else snapshot.groups.get(app.track or DEFAULT_TRACK)
        if snapshot is None or group is None:
            return self._refuse(app, "error-unknownApplicationOrGroup")
        if not app.machineid or len(app.machineid) > 64 or len(app.version) > 64:
            return self._refuse(app, "error-instanceRegistrationFailed")
        instance = self._instance(app, appid, group.name, client)
        if instance is None:
            return self._refuse(app, "error-instanceRegistrationFailed")
        if app.events:
            self.recorder.record(instance, app, group.policy.safe_mode)
            if app.updatecheck:     # the check decides from the row the events left
                instance = self.rows.instance(app.machineid, appid) or instance
        check = self._check(app, instance, snapshot, group, codebase, now) \
            if app.updatecheck else None
        status = "ok" if check is None or check[0] in ("ok", "noupdate") else check[0]
        return omaha.AppResponse(app.appid, status, app.ping, len(app.events),
                                 None if check is None else check[1])

    @staticmethod
    def _refuse(app: omaha.AppRequest, status: str) -> omaha.AppResponse:
        check = omaha.UpdateCheck("error-internal") if app.updatecheck else None
        return omaha.AppResponse(app.appid, status, app.ping, len(app.events), check)

    def _instance(self, app: omaha.AppRequest, appid: str, group: str,
                  client: str) -> Instance | None:
        instance = self.rows.check_in(app.machineid, appid, app.version, group)
        if instance is None:
            if not self.registrations.allow(client):
                LOG.warning("Update client %s registers new instances too fast: "
                            "machine id %s refused", client, app.machineid[:64])
                return None
            return self.rows.add_instance(dict(
                machineid=app.machineid, appid=appid, group_name=group,
                version=app.version, node_uuid=self.node_of(app.machineid), status="new"))
        self.check_times.checked(instance.id)
        return instance

    def _check(self, app, instance: Instance, snapshot: Snapshot, group: GroupView,
               codebase: str, now: datetime.datetime):
        decision = self._decide(app, instance, group, now)
        if not decision.grants:
            check = omaha.UpdateCheck("noupdate" if decision.status == "noupdate"
                                      else "error-internal")
            return decision.status, check
        image = snapshot.images.get(decision.version or "")
        if image is None:
            return "error-noPackageFound", omaha.UpdateCheck("error-internal")
        if not self._granted(instance, group, image.version, now):
            return ("error-maxUpdatesPerPeriodLimitReached",
                    omaha.UpdateCheck("error-internal"))
        LOG.info("Update instance %s (node %s): %s -> %s granted in group %s",
                 instance.machineid, instance.node_uuid or "-", app.version, image.version,
                 group.name)
        return "ok", omaha.UpdateCheck("ok", (codebase,),
                                        _manifest(image, *_delta(snapshot, app, image)))

    def _decide(self, app, instance: Instance, group: GroupView,
                now: datetime.datetime) -> policy.Decision:
        granted = instance.granted_at
        if granted is not None and granted.tzinfo is None:
            granted = granted.replace(tzinfo=datetime.UTC)
        rolled_back = instance.target_version if instance.status == "error" and \
            instance.error_code is not None and omaha_codes.decode(
                instance.error_code).is_rollback else None
        situation = policy.Situation(app.machineid, app.version, group.channel_version,
                                     instance.status, granted, rolled_back=rolled_back)
        decision = policy.decide(group.policy, situation, now)
        if decision.grants and policy.needs_counts(group.policy) and \
                not self._regrant(instance, decision):
            attempted, busy, late = self.rows.rollout(instance.appid, group.name,
                                                      decision.version or "",
                                                      group.policy.update_timeout, now)
            decision = policy.decide(group.policy, dataclasses.replace(
                situation, attempted=attempted, in_progress=busy, timed_out=late), now)
            if decision.halts:
                self.halt(instance, decision.reason)
        return decision

    @staticmethod
    def _regrant(instance: Instance, decision: policy.Decision) -> bool:
        """The instance asks again for what it was granted (a retry): no new grant."""
        return instance.status == "granted" and instance.target_version == decision.version

    def _granted(self, instance: Instance, group: GroupView, version: str,
                 now: datetime.datetime) -> bool:
        if self._regrant(instance, policy.Decision("ok", version)):
            return True
        if not self.rows.take_grant(group.id, group.policy.max_updates_per_period,
                                    group.policy.period_interval, now):
            return False
        return self.rows.grant(instance, version, group.policy.update_timeout, now)

    def halt(self, instance: Instance, reason: str) -> None:
        """Halt the instance's group (safe mode saw an error)."""
        self.rows.update_group(instance.appid, instance.group_name,
                               {"halted_reason": reason[:1000]})
        self.cache.invalidate()
        LOG.warning("Update group %s halted: %s", instance.group_name, reason)


def _delta(snapshot: Snapshot, app: omaha.AppRequest, image: Image
           ) -> tuple[tuple[str, int] | None, str]:
    """(the delta to offer or None, its base). A delta from the version the host's
    passive slot holds comes first: applied in place, it writes only what changed
    (ramdisk_agent/host/update/slotdelta.py apply_in_place); else the one from the
    running version, which rewrites the whole passive slot."""
    if not app.delta_okay:
        return None, ""
    passive = app.passive_version
    if passive and passive not in (app.version, image.version):
        delta = snapshot.deltas.get((passive, image.version))
        if delta is not None:
            return delta, "passive"
    return snapshot.deltas.get((app.version, image.version)), ""


def _manifest(image: Image, delta: tuple[str, int] | None, base: str = "") -> omaha.Manifest:
    if delta is not None:
        sha256, size = delta
        return omaha.Manifest(image.version, (omaha.Package(
            sha256, size, sha256=bytes.fromhex(sha256)),), bytes.fromhex(sha256),
            is_delta=True, delta_base=base)
    return omaha.Manifest(image.version, (omaha.Package(
        image.sha256, image.size, sha256=bytes.fromhex(image.sha256)),),
        bytes.fromhex(image.sha256), signature=base64.b64decode(image.signature))
