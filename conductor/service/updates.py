"""The image-update facade the API calls (``service.updates``): the Omaha endpoint, the
payloads, the reboot leases and the operator's catalogue, channels, groups and
instances. Built in conductor/appliance.py; the parts live in conductor/updates/.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa

from conductor import errors
from conductor.config import Settings
from conductor.db.leases import LeaseRows
from conductor.db.queries import Store, utcnow
from conductor.db.update_events import EventRows
from conductor.db.updates import GROUP_DEFAULTS, UpdateRows
from conductor.db.write_turns import WriteTurns
from conductor.drivers.internal_info import HostAgentRecord
from conductor.updates import keys, policy, progress
from conductor.updates.catalogue import METALCAST_APPID, Catalogue, check_appid, check_name
from conductor.updates.leases import BAD_TOKEN, RebootLeases
from conductor.updates.omaha_server import OmahaServer, SnapshotCache
from conductor.updates.progress import Progress

LOG = logging.getLogger(__name__)
MAX_PERIOD = 366 * 86400
_INT_FIELDS = {"max_updates_per_period": (0, 1 << 30), "period_interval": (1, MAX_PERIOD),
               "update_timeout": (1, MAX_PERIOD), "rollout_percent": (0, 100),
               "window_length": (0, 7 * 86400)}
_BOOL_FIELDS = ("updates_enabled", "safe_mode", "office_hours")


def _check_policy(values: dict[str, Any]) -> dict[str, Any]:
    """Policy fields of a create/update body, checked one by one (a 400 naming the
    field); ``channel`` may be among them."""
    unknown = set(values) - _POLICY_NAMES - {"channel"}
    if unknown:
        raise errors.InvalidParameter(f"Unknown group fields {sorted(unknown)}: the policy "
                                      f"fields are {', '.join(sorted(_POLICY_NAMES))}.")
    for name, value in values.items():
        _CHECKS.get(name, lambda n, v: None)(name, value)
    if "floors" in values:
        values = dict(values, floors=sorted(values["floors"], key=policy.version_key))
    return values


def _int(name: str, value: Any) -> None:
    low, high = _INT_FIELDS[name]
    if name == "window_length" and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise errors.InvalidParameter(f"{name} must be an integer {low}-{high}.")


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise errors.InvalidParameter(f"{name} must be true or false.")


def _window(name: str, value: Any) -> None:
    if value is None:
        return
    try:
        policy.parse_window(value if isinstance(value, str) else "?")
    except ValueError as exc:
        raise errors.InvalidParameter(str(exc)) from None


def _timezone(name: str, value: Any) -> None:
    try:
        policy.zone(value if isinstance(value, str) and len(value) < 64 else "?")
    except ValueError as exc:
        raise errors.InvalidParameter(f"{exc}: use an IANA name such as Europe/Berlin.") \
            from None


def _floors(name: str, value: Any) -> None:
    if not isinstance(value, list) or len(value) > 32:
        raise errors.InvalidParameter("floors must be a list of at most 32 versions.")
    for version in value:
        check_name(version, "floor version")


_CHECKS = {**{n: _int for n in _INT_FIELDS}, **{n: _bool for n in _BOOL_FIELDS},
           "window_start": _window, "timezone": _timezone, "floors": _floors,
           "channel": lambda n, v: check_name(v, "channel")}
_POLICY_NAMES = set(GROUP_DEFAULTS) - {"period_grants", "halted_reason"}


@dataclasses.dataclass
class Updates:
    """What ``service.updates`` offers the API."""

    rows: UpdateRows
    catalogue: Catalogue
    omaha: OmahaServer
    leases: RebootLeases
    key_path: Path
    store: Store

    # -- public ----------------------------------------------------------------------
    def update_check(self, body: bytes, base_url: str, client: str = "unknown") -> bytes:
        return self.omaha.handle(body, base_url, client)

    def payload(self, name: str) -> Path:
        return self.catalogue.path(name)

    def public_key(self) -> bytes:
        return keys.public_pem(self.catalogue.key)

    def lease_request(self, body: Any, gone: Callable[[], bool] = lambda: False
                      ) -> tuple[int, dict[str, Any]]:
        return self.leases.request(body, gone)

    # -- images ----------------------------------------------------------------------
    def upload(self, stream: BinaryIO, version: str, channel: str | None,
               appid: str | None) -> dict[str, Any]:
        image = self.catalogue.upload(stream, appid or METALCAST_APPID, version, channel)
        return self.image(image.version, image.appid)

    def images(self, appid: str | None = None) -> list[dict[str, Any]]:
        pointed = {(c["appid"], c["version"]): c["name"] for c in self.rows.channels()}
        return [dict(dataclasses.asdict(i), channels=[
            name for (app, version), name in pointed.items()
            if (app, version) == (i.appid, i.version)]) for i in self.rows.images(appid)]

    def image(self, version: str, appid: str | None = None) -> dict[str, Any]:
        appid = check_appid(appid or METALCAST_APPID)
        found = [i for i in self.images(appid) if i["version"] == version]
        if not found:
            raise errors.NotFound(f"No image version {version[:80]!r} of {appid}: see "
                                  "`metalcast image list`.")
        found[0]["deltas"] = [dataclasses.asdict(d) for d in self.rows.deltas(appid)
                              if version in (d.from_version, d.to_version)]
        return found[0]

    def deltas(self) -> list[dict[str, Any]]:
        """Every delta and its build state (queued, building, ready, error)."""
        return [dataclasses.asdict(d) for d in self.rows.deltas()]

    def delete_image(self, version: str, appid: str | None = None) -> None:
        self.catalogue.delete(check_appid(appid or METALCAST_APPID), version)

    # -- channels and groups ---------------------------------------------------------
    def channels(self) -> list[dict[str, Any]]:
        return self.rows.channels()

    def channel(self, name: str, appid: str | None = None) -> dict[str, Any]:
        appid = check_appid(appid or METALCAST_APPID)
        for row in self.rows.channels():
            if (row["appid"], row["name"]) == (appid, name):
                return row
        raise errors.NotFound(f"No channel {name[:80]!r} of {appid}: see "
                              "`metalcast channel list`.")

    def set_channel(self, name: str, version: Any, appid: str | None = None
                    ) -> dict[str, Any]:
        appid = check_appid(appid or METALCAST_APPID)
        check_name(name, "channel")
        if self.rows.image(appid, check_name(version, "version")) is None:
            raise errors.InvalidParameter(f"No image version {version} of {appid}: upload "
                                          "it first (metalcast image upload).")
        self.rows.ensure_channel(appid, name)
        self.rows.set_channel(appid, name, version)
        self.omaha.cache.invalidate()
        LOG.info("Channel %s of %s now points at %s", name, appid, version)
        return self.channel(name, appid)

    def groups(self) -> list[dict[str, Any]]:
        return self.rows.groups()

    def group(self, name: str, appid: str | None = None) -> dict[str, Any]:
        appid = check_appid(appid or METALCAST_APPID)
        for row in self.rows.groups():
            if (row["appid"], row["name"]) == (appid, name):
                return row
        raise errors.NotFound(f"No group {name[:80]!r} of {appid}: see "
                              "`metalcast group list`.")

    def create_group(self, name: str, body: dict[str, Any], appid: str | None = None
                     ) -> dict[str, Any]:
        appid = check_appid(appid or METALCAST_APPID)
        values = _check_policy(dict(body))
        channel = values.pop("channel", None)
        if channel is None:
            raise errors.InvalidParameter("A new group needs the channel it follows.")
        self.channel(channel, appid)
        if not self.rows.create_group(appid, check_name(name, "group"), channel, values):
            raise errors.Conflict(f"Group {name} exists already.")
        self.omaha.cache.invalidate()
        return self.group(name, appid)

    def update_group(self, name: str, body: dict[str, Any], appid: str | None = None
                     ) -> dict[str, Any]:
        appid = check_appid(appid or METALCAST_APPID)
        self.group(name, appid)
        values = _check_policy(dict(body))
        if "channel" in values:
            self.channel(values["channel"], appid)
        if values.get("updates_enabled") is True:
            values["halted_reason"] = None      # resuming lifts a safe-mode halt
        self.rows.update_group(appid, name, values)
        self.omaha.cache.invalidate()
        LOG.info("Group %s of %s: policy %s", name, appid, values)
        return self.group(name, appid)

    # -- instances -------------------------------------------------------------------
    def instances(self, group: str | None = None, status: str | None = None,
                  version: str | None = None, limit: int = 1000, offset: int = 0
                  ) -> list[dict[str, Any]]:
        return [dataclasses.asdict(i) for i in
                self.rows.instances(group, status, version, limit, offset)]

    def instance_counts(self) -> list[tuple[str, str, str, int]]:
        """(group, version, status, instances), one GROUP BY (the console's counts)."""
        return self.rows.instance_counts()

    def progress(self, buckets: int = 48) -> Progress:
        """Instances per version over time, from the first instance seen to now."""
        seen, done = self.rows.version_changes()
        return progress.progress(seen, done, utcnow(), buckets)

    def change_mark(self) -> tuple[Any, ...]:
        """Changes when an instance or a lease does (the console's change publisher)."""
        return self.rows.change_mark() + self.leases.rows.change_mark()

    def instance(self, ident: str) -> dict[str, Any]:
        found = self.rows.find_instance(ident)
        if found is None:
            raise errors.NotFound(f"No update instance {ident[:80]!r}: see "
                                  "`metalcast instance list`.")
        return dict(dataclasses.asdict(found), history=self.rows.history(found.id))

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.catalogue.start()
        self.omaha.check_times.start()

    def stop(self) -> None:
        self.catalogue.stop()
        self.omaha.check_times.stop()


def _node_of(store: Store) -> Callable[[str], str | None]:
    """machine id -> node UUID when the id is a node's UUID without dashes (the agent
    writes /etc/machine-id so on hosts metalcast deployed), else None."""
    def node_of(machineid: str) -> str | None:
        if not re.fullmatch(r"[0-9a-f]{32}", machineid):
            return None
        try:
            return store.get_node(str(uuid.UUID(machineid))).uuid
        except errors.NotFound:
            return None
    return node_of


def _host_agent_check(store: Store) -> Callable[[str, str], str]:
    """(node, token) -> the node's UUID when ``token`` is its current host-agent token
    (as a host heartbeat is checked), else NotAuthorized; an unknown node looks the
    same as a wrong token."""
    def authenticate(ident: str, token: str) -> str:
        try:
            node = store.get_node(ident)
        except errors.NotFound:
            raise errors.NotAuthorized(BAD_TOKEN) from None
        if not HostAgentRecord.of(node).accepts(node, token):
            LOG.error("Node %s: reboot lease request with an invalid token", node.uuid)
            raise errors.NotAuthorized(BAD_TOKEN)
        return str(node.uuid)
    return authenticate


def build_updates(settings: Settings, engine: sa.Engine, store: Store) -> Updates:
    """The parts of ``service.updates`` and their collaborators (called by
    conductor/appliance.py, the one place that builds the appliance)."""
    rows = UpdateRows(engine)
    cache = SnapshotCache(rows, settings.updates.cache_ttl)
    key_path = keys.default_path(settings.data_path)
    catalogue = Catalogue(rows, settings.data_path / "updates" / "payloads",
                          keys.load_or_create(key_path), on_change=cache.invalidate)
    # SQLite has one write lock: lease writes and event reports take this process's
    # turns at it, leases first (conductor/db/write_turns.py). PostgreSQL locks rows:
    # event reports need not wait for lease writes there.
    turns = WriteTurns()
    events = EventRows(engine, (turns if engine.dialect.name == "sqlite"
                                else WriteTurns()).normal)
    return Updates(rows, catalogue, OmahaServer(rows, cache, _node_of(store),
                                                events=events),
                   RebootLeases(LeaseRows(engine, turns), _host_agent_check(store),
                                lambda host: str(store.get_node(host).uuid),
                                settings.updates.lease_ttl),
                   key_path, store)
