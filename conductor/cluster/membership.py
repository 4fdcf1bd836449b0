"""This conductor's row in ``conductors``: register, heartbeat, unregister.

``start`` registers the name (``[DEFAULT] host``) with its conductor group and
hardware types, refused with ConductorAlreadyRegistered while another holder of the
name is alive; then a thread touches the row every ``heartbeat_interval`` and, on the
same pass, reads who is alive: a change calls ``on_change`` (the ring rebuilds at
once). ``stop`` ends the thread and marks the row offline.

A conductor killed and started again from the same data dir must not wait a whole
``heartbeat_timeout`` for its own ghost: the data dir keeps a lock file, held (flock)
while the process runs, in which every heartbeat is written before it reaches the
database. A starting process that gets the lock knows the last holder of this data dir
is dead, and may take the name over if the row's last heartbeat is one of those
recorded; a live holder elsewhere keeps beating other times and is never taken over.
"""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from conductor import errors
from conductor.config import ConductorSettings
from conductor.db.conductors import ConductorRows

LOG = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


def utc_clock() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def stale_before(settings: ConductorSettings, now: datetime.datetime) -> datetime.datetime:
    """Heartbeats older than this are dead conductors' (``heartbeat_timeout`` ago)."""
    return now - datetime.timedelta(seconds=settings.heartbeat_timeout)


class HeartbeatFile:
    """``<data_dir>/conductor-<hash of the name>.lock``: the flock proves this process
    is the only one of its data dir with the name; it holds the last two heartbeats."""

    def __init__(self, data_dir: Path, host: str):
        digest = hashlib.sha256(host.encode("utf-8")).hexdigest()[:16]
        self.path = data_dir / f"conductor-{digest}.lock"
        self._fd: int | None = None

    def acquire(self, host: str) -> frozenset[datetime.datetime]:
        """Lock the file; the heartbeats the dead previous holder recorded."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise errors.ConductorAlreadyRegistered(conductor=host) from None
        self._fd = fd
        text = os.pread(fd, 256, 0).decode("ascii", "replace").split()
        found = set()
        for word in text:
            try:
                found.add(datetime.datetime.fromisoformat(word))
            except ValueError:
                continue    # a torn write: that heartbeat is simply not recognised
        return frozenset(found)

    def record(self, previous: datetime.datetime | None, now: datetime.datetime) -> None:
        if self._fd is None:
            return
        text = " ".join(t.isoformat() for t in (previous, now) if t is not None)
        os.pwrite(self._fd, text.encode("ascii").ljust(256), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)      # closing drops the flock
            self._fd = None


class Membership:
    """Registration and heartbeat of one conductor; ``on_change`` hears when the set
    of live conductors (name, group, hardware types) changes."""

    def __init__(self, rows: ConductorRows, settings: ConductorSettings, data_dir: Path,
                 clock: Clock = utc_clock, on_change: Callable[[], None] | None = None):
        self.rows = rows
        self.settings = settings
        self.host = settings.host
        self.clock = clock
        self.on_change = on_change
        self._file = HeartbeatFile(data_dir, self.host)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: datetime.datetime | None = None
        self._members: frozenset[tuple[str, str, tuple[str, ...]]] | None = None

    def stale_before(self, now: datetime.datetime | None = None) -> datetime.datetime:
        return stale_before(self.settings, now or self.clock())

    def register(self) -> None:
        """Register or refuse (ConductorAlreadyRegistered); the row is online after."""
        recorded = self._file.acquire(self.host)
        now = self.clock()
        try:
            self.rows.register(self.host, self.settings.conductor_group,
                               self.settings.hardware_types, now, self.stale_before(now),
                               taken_over=recorded)
        except Exception:
            self._file.release()
            raise
        self._record(now)
        if self.on_change is not None:     # this conductor joined: a ring built before
            self.on_change()               # (without it) is rebuilt on its next use
        LOG.info("Conductor %s registered (group %r, hardware types: %s)", self.host,
                 self.settings.conductor_group, ", ".join(self.settings.hardware_types))

    def _record(self, now: datetime.datetime) -> None:
        self._file.record(self._last, now)
        self._last = now

    def beat(self) -> None:
        """One heartbeat, then one look at who is alive."""
        now = self.clock()
        last = self._last or now
        self._file.record(last, now)            # first: a kill between the two still
        if not self.rows.heartbeat(self.host, now, last):   # leaves it recognisable
            self._register_again(now, last)
        self._last = now
        self.check_members(now)

    def _register_again(self, now: datetime.datetime, last: datetime.datetime) -> None:
        """The row no longer holds our last beat: unregistered (we register again) or
        taken over by a process that found us stale (refused while it is alive)."""
        try:
            self.rows.register(self.host, self.settings.conductor_group,
                               self.settings.hardware_types, now, self.stale_before(now),
                               taken_over=frozenset({last}))
        except errors.ConductorAlreadyRegistered:
            LOG.error("Conductor %s: another process took this name over while this one "
                      "did not heartbeat for [conductor] heartbeat_timeout; stop one of "
                      "them (their names must differ)", self.host)
            raise
        LOG.warning("Conductor %s: its row was unregistered by someone else; registered "
                    "again", self.host)

    def check_members(self, now: datetime.datetime | None = None) -> bool:
        """Read the live conductors; True (and ``on_change``) if they changed."""
        members = frozenset((row.hostname, row.conductor_group, tuple(row.hardware_types))
                            for row in self.rows.alive(self.stale_before(now)))
        changed = self._members is not None and members != self._members
        self._members = members
        if changed:
            LOG.info("Conductor %s: live conductors now %s", self.host,
                     ", ".join(sorted(m[0] for m in members)) or "none")
            if self.on_change is not None:
                self.on_change()
        return changed

    def start(self) -> None:
        """Register (or refuse) and start the heartbeat thread."""
        self.register()
        self.check_members()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"metalcast-heartbeat-{self.host}")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_interval):
            try:
                self.beat()
            except Exception:  # the next beat tries again
                LOG.exception("Conductor %s: heartbeat failed", self.host)

    def stop(self) -> None:
        """End the heartbeats and mark the row offline (a clean stop); a conductor
        that never registered (refused) leaves the holder's row alone."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._last is None:
            return
        try:
            self.rows.unregister(self.host, self.clock())
        except Exception:  # noqa: BLE001 - the database may be gone at shutdown
            LOG.warning("Could not mark conductor %s offline", self.host)
        self._last = None
        if self.on_change is not None:
            self.on_change()
        self._file.release()
