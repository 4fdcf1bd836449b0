"""One publisher of state changes per process, for the console's live pages.

A single thread looks for changes once per ``interval`` (nodes written since the
last look: one indexed-or-scanned SELECT; the patch and strategy views, which their
owners cache) and fans each batch out to every subscriber. Subscribers only wait
on a condition: fifty open pages cost the database what one costs. The thread starts
with the first subscriber and ends a while after the last one leaves.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from conductor.service.fleet import Fleet

LOG = logging.getLogger(__name__)
#: Batches kept for subscribers that fall behind (a slow page gets "resync").
BACKLOG = 256
#: Counts are recomputed at most this often while nodes change (GROUP BY queries).
COUNTS_EVERY = 1.0
#: How far before the newest write seen each look reaches back (see _node_events).
LOOKBACK = datetime.timedelta(seconds=2)
#: The thread stays this long without subscribers before it ends.
IDLE_EXIT = 30.0

Event = dict[str, Any]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class Subscription:
    """One open page's place in the feed."""

    def __init__(self, feed: ChangeFeed, seq: int):
        self.feed, self.seq = feed, seq

    def wait(self, timeout: float) -> list[Event]:
        """The events published since the last call ([] after ``timeout`` s)."""
        return self.feed._next(self, timeout)

    def close(self) -> None:
        self.feed._leave(self)


class ChangeFeed:
    """Looks for changes once per ``interval`` seconds for every subscriber at once.
    ``probes`` name views whose change is an event of that name (``patches``,
    ``strategy``): the pages that show them re-read them when it comes."""

    def __init__(self, fleet: Fleet, probes: dict[str, Callable[[], Any]],
                 interval: float = 0.2):
        self.fleet, self.probes, self.interval = fleet, probes, interval
        self._cond = threading.Condition()
        self._log: deque[tuple[int, list[Event]]] = deque(maxlen=BACKLOG)
        self._seq = 0
        self._subscribers: set[Subscription] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._since: datetime.datetime | None = None
        self._sent: set[tuple[str, Any]] = set()
        self._prints: dict[str, str] = {}
        self._counts_at = 0.0
        self.ticks = 0  # looks taken (the benchmark checks one per interval)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def cursor(self) -> int:
        """Where a page rendered now starts: call it before reading what the page shows,
        and subscribe with it, and no change in between is lost (the first look at the
        database is taken here, before the page's own read)."""
        with self._cond:
            self._ensure_running()
            return self._seq

    def subscribe(self, since: int | None = None) -> Subscription:
        """Events after ``since`` (a page's cursor; older than the backlog: resync)."""
        with self._cond:
            self._ensure_running()
            start = self._seq if since is None or not 0 <= since <= self._seq else since
            sub = Subscription(self, start)
            self._subscribers.add(sub)
        return sub

    def _ensure_running(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._prime()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="console-feed",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the thread (the appliance stops)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def _leave(self, sub: Subscription) -> None:
        with self._cond:
            self._subscribers.discard(sub)

    def _next(self, sub: Subscription, timeout: float) -> list[Event]:
        with self._cond:
            if self._seq == sub.seq:
                self._cond.wait(timeout)
            if self._seq == sub.seq:
                return []
            first = self._log[0][0] if self._log else self._seq + 1
            if sub.seq + 1 < first:  # fell behind the backlog: the page reloads
                sub.seq = self._seq
                return [{"kind": "resync"}]
            events = [e for seq, batch in self._log if seq > sub.seq for e in batch]
            sub.seq = self._seq
            return events

    def publish(self, events: list[Event]) -> None:
        if not events:
            return
        with self._cond:
            self._seq += 1
            self._log.append((self._seq, events))
            self._cond.notify_all()

    def _run(self) -> None:
        idle_since: float | None = None
        while not self._stop.wait(self.interval):
            if self._subscribers:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_EXIT:
                with self._cond:
                    if not self._subscribers:
                        self._thread = None
                        return
            try:
                self.publish(self.tick())
            except Exception:
                LOG.exception("Console change feed: a look for changes failed")

    def _prime(self) -> None:
        try:
            newest = self.fleet.rows.changed_since(None)
            self._since = newest[0]["updated_at"] if newest else None
            self._sent = {(n["uuid"], n["updated_at"]) for n in newest}
            self._prints = {name: _fingerprint(probe()) for name, probe in self.probes.items()}
        except Exception:
            LOG.exception("Console change feed: the first look failed")

    def tick(self) -> list[Event]:
        """One look: node rows written since the last, changed views, counts."""
        self.ticks += 1
        events = self._node_events()
        for name, probe in self.probes.items():
            mark = _fingerprint(probe())
            if self._prints.get(name) != mark:
                self._prints[name] = mark
                events.append({"kind": name})
        now = time.monotonic()
        if any(e["kind"] == "node" for e in events) and now - self._counts_at >= COUNTS_EVERY:
            self._counts_at = now
            events.append({"kind": "counts", "counts": self.fleet.counts()})
        return events

    def _node_events(self) -> list[Event]:
        """Rows written since LOOKBACK before the newest write seen: a write's
        updated_at is taken before its commit, so a slower transaction (another
        worker, another conductor) can commit an older time after a newer one has been
        seen; the writes already sent within the window are remembered, not resent."""
        since = self._since - LOOKBACK if self._since else None
        rows = [r for r in self.fleet.rows.changed_since(since) if r["updated_at"] is not None]
        fresh = [r for r in rows if (r["uuid"], r["updated_at"]) not in self._sent]
        if rows:
            newest = max(r["updated_at"] for r in rows)
            self._since = max(newest, self._since) if self._since else newest
            floor = self._since - LOOKBACK
            self._sent = {key for key in self._sent if key[1] >= floor}
            self._sent |= {(r["uuid"], r["updated_at"]) for r in fresh}
        return [dict({k: _plain(v) for k, v in row.items()}, kind="node") for row in fresh]


def live_probes(patching, orchestration, updates=None) -> dict[str, Callable[[], Any]]:
    """The views the live pages re-read when they change: the patches page's (patches,
    hosts without their seconds-since-report, alarms), the current strategy and the
    updates page's instances and leases (their tables' newest ids, read off their
    primary keys: ``service.updates.change_mark``)."""
    found: dict[str, Callable[[], Any]] = {}
    if patching is not None:
        found["patches"] = lambda: (
            patching.query()["pd"],
            [{k: v for k, v in h.items() if k != "secs_since_ack"}
             for h in patching.query_hosts()])
    if orchestration is not None:
        found["strategy"] = orchestration.get
    if updates is not None:
        found["updates"] = updates.change_mark
    return found
