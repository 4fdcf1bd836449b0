"""Host patch states kept in the database, with an in-memory copy for speed.

The patch_hosts rows (conductor/db/patch_hosts.py) are the truth, so a restarted
conductor, or a second one on the same database, shows the same query-hosts. The
§2.2 algorithm runs on the in-memory HostTable (hosts.py): ``sync`` brings it up
to date by re-reading only the rows whose revision changed, and reads call it
first. A report stays in memory unless it changes something (its packages, its
state, an interim patch, a pending install) or its row's last-seen time is older
than LAST_SEEN_WRITE, so the heartbeat path costs no database round trip at all
most of the time. Writes name the revision they replace; a writer that loses to
another conductor re-reads the row and decides again.

Not thread-safe: the patch controller calls it under its lock.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Iterable

from conductor.db.patch_hosts import PatchHostRows, new_revision
from conductor.patching import hosts
from conductor.patching.hosts import HostReport

LOG = logging.getLogger(__name__)

#: Seconds: an unchanged host's last-seen time is written at most this often (every
#: fourth report at the agent's default 30 s heartbeat), so another conductor's
#: secs_since_ack for it is at most this much behind.
LAST_SEEN_WRITE = 120.0
#: An install request nobody answered stops showing "installing" after this long.
INSTALL_PENDING_LIMIT = 3600.0
#: Conditional writes lost to other conductors before a report is kept in memory only.
WRITE_ATTEMPTS = 3
INSTALLING = "installing"
REPORT_FIELDS = tuple(f.name for f in dataclasses.fields(HostReport))


@dataclasses.dataclass
class _Row:
    """What this conductor knows of a host's row besides the report it holds."""

    revision: str | None          #: None: changed behind us, re-read before writing
    stored_seen: float            #: the last-seen time the row holds (epoch seconds)
    install_request: str | None = None
    install_sent_at: float = 0.0


class HostStates:
    """Known hosts and the patch states derived from them, backed by patch_hosts."""

    def __init__(self, rows: PatchHostRows, clock=time.time):
        self.rows, self.clock = rows, clock
        self.table = hosts.HostTable()
        self._rows: dict[str, _Row] = {}

    # -- the algorithm's answers (in memory) -----------------------------------------
    def set_patches(self, patches: list[hosts.PatchInfo]) -> None:
        self.table.set_patches(patches)

    def patch_state(self, patch_id: str) -> str:
        return self.table.patch_state(patch_id)

    def allow_insvc_patching(self) -> bool:
        return self.table.allow_insvc_patching()

    @property
    def failed(self) -> set[str]:
        """Hosts whose last report says the install failed (alarm 900.002)."""
        return self.table.failed

    def find(self, host: str) -> str | None:
        """The hostname of ``host`` (a hostname or an IP address), if known."""
        return next((name for name, report in self.table.hosts.items()
                     if host in (name, report.ip)), None)

    def installing(self) -> bool:
        return any(report.state == INSTALLING for report in self.table.hosts.values())

    def views(self, names: Iterable[str] | None = None, packages: bool = True) -> list[dict]:
        """Every host (or those of ``names``) as query_hosts shows it, by hostname."""
        allow = self.table.allow_insvc_patching()
        wanted = sorted(self.table.hosts) if names is None else \
            sorted(set(names) & set(self.table.hosts))
        return [self.table.host_view(name, allow, packages) for name in wanted]

    # -- reading the database ---------------------------------------------------------
    def sync(self) -> None:
        """Re-read the rows other writers changed (or removed) since we last saw them."""
        revisions = self.rows.revisions()
        for name in [name for name in self._rows if name not in revisions]:
            self._forget(name)
        changed = [name for name, revision in revisions.items()
                   if name not in self._rows or self._rows[name].revision != revision]
        if changed:
            wanted = None if len(changed) * 2 > len(revisions) else changed
            for row in self.rows.get(wanted):
                if row.hostname in changed:
                    self._load(row)

    def _reload(self, name: str) -> None:
        found = self.rows.get([name])
        if found:
            self._load(found[0])
        else:
            self._forget(name)

    def _load(self, row) -> None:
        name = row.hostname
        report = HostReport(**{field: getattr(row, field) for field in REPORT_FIELDS})
        stored_seen = _epoch(row.last_seen_at)
        # A report we kept in memory may be newer than the row's last-seen time.
        seen = max(stored_seen, self.table.last_report.get(name, 0.0))
        self.table.report(report, seen)
        self.table.set_interim(name, row.interim or [])
        self._rows[name] = _Row(row.revision, stored_seen, row.install_request,
                                _epoch(row.install_sent_at))

    def _forget(self, name: str) -> None:
        self.table.drop(name)
        self._rows.pop(name, None)

    # -- reports ------------------------------------------------------------------------
    def report(self, report: HostReport, answered: str | None = None) -> bool:
        """A host agent's report; ``answered`` is the install request it answers.
        True when the host's state changed (not a repeat of what it reported last)."""
        name = report.hostname
        for _ in range(WRITE_ATTEMPTS):
            now = self.clock()
            row = self._rows.get(name)
            if row is not None and row.revision is None:
                self._reload(name)
                row = self._rows.get(name)
            request, sent_at = self._pending(row, answered, now)
            shown = report if request is None else dataclasses.replace(report, state=INSTALLING)
            changed = self.table.hosts.get(name) != shown
            if row is not None and not self._row_stale(changed, shown, row, request, now):
                self.table.report(shown, now)
                return changed
            if self._save(shown, row, request, sent_at, now, interim=[]):
                self.table.report(shown, now)
                return changed
            self._reload(name)          # another conductor wrote it: decide again
        LOG.warning("Host %s: report kept in memory only, its row kept changing", name)
        changed = self.table.hosts.get(name) != report
        self.table.report(report, self.clock())
        return changed

    @staticmethod
    def _pending(row: _Row | None, answered: str | None, now: float):
        """(request id, sent at) of an install still waiting for its answer."""
        if row is None or row.install_request is None or answered == row.install_request \
                or now - row.install_sent_at > INSTALL_PENDING_LIMIT:
            return None, 0.0
        return row.install_request, row.install_sent_at

    def _row_stale(self, changed: bool, report: HostReport, row: _Row,
                   request: str | None, now: float) -> bool:
        """Whether the host's row needs a write (``changed``: the report differs from
        the last one, compared once by the caller: a report holds every package)."""
        return (changed
                or request != row.install_request
                or bool(self.table.interim_of(report.hostname))
                or now - row.stored_seen >= LAST_SEEN_WRITE)

    def _save(self, report: HostReport, row: _Row | None, request: str | None,
              sent_at: float, seen: float, interim: list[str]) -> bool:
        """Write the host's row over the revision we hold; False if we lost."""
        values = dataclasses.asdict(report)
        values.update(interim=interim, install_request=request,
                      install_sent_at=_datetime(sent_at) if request else None,
                      last_seen_at=_datetime(seen), revision=new_revision())
        if not self.rows.save(values, None if row is None else row.revision):
            return False
        self._rows[report.hostname] = _Row(values["revision"], seen, request, sent_at)
        return True

    def drop(self, name: str) -> None:
        self.rows.delete(name)
        self._forget(name)

    # -- interim states and installs (called after a sync, under the controller lock) ---
    def mark_interim(self, patch_ids: list[str]) -> None:
        """Every known host is Pending on ``patch_ids`` until its next report."""
        for pid in patch_ids:
            self.table.mark_interim(pid)
        names = list(self.table.hosts)
        self.rows.set_interim({name: self.table.interim_of(name) for name in names})
        for name in names:              # new revisions: re-read before the next write
            if name in self._rows:
                self._rows[name].revision = None

    def start_install(self, name: str, request_id: str) -> str:
        """Show ``name`` installing until the report answering ``request_id``; the
        state it had before."""
        previous = self.table.hosts[name].state
        self._rewrite(name, INSTALLING, request_id, self.clock())
        return previous

    def abort_install(self, name: str, request_id: str, previous: str) -> None:
        """The request never reached the agent: back to the state before it."""
        row = self._rows.get(name)
        if row is not None and row.install_request == request_id:
            self._rewrite(name, previous, None, 0.0)

    def forget_install(self, name: str) -> None:
        """The agent restarted: no install of ours is running any more."""
        row = self._rows.get(name)
        if row is not None and row.install_request is not None:
            self._rewrite(name, self.table.hosts[name].state, None, 0.0)

    def _rewrite(self, name: str, state: str, request: str | None, sent_at: float) -> None:
        for _ in range(WRITE_ATTEMPTS):
            row = self._rows.get(name)
            if row is None:
                return                  # dropped meanwhile
            if row.revision is not None:
                report = dataclasses.replace(self.table.hosts[name], state=state)
                seen = self.table.last_report.get(name, row.stored_seen)
                if self._save(report, row, request, sent_at, seen,
                              self.table.interim_of(name)):
                    self.table.hosts[name] = report
                    return
            self._reload(name)
        LOG.warning("Host %s: state %s not recorded, its row kept changing", name, state)


def _datetime(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def _epoch(value: datetime.datetime | None) -> float:
    if value is None:
        return 0.0
    if value.tzinfo is None:            # SQLite hands back naive UTC
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()
