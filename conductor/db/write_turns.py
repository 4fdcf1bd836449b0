"""This process's turns at the database's write lock: lease writes go first.

SQLite has one write lock per database file. Threads of one process that meet it
wait in SQLite's busy handler, which sleeps in steps growing to 100 ms and does not
wake when the lock frees. While a fleet's Omaha event reports were written (the API
threads, three transactions per report), a later lease round's releases waited
0.3 s median, 1.8 s p90 for their turn, and a lease transaction's first write up to
2.2 s in that handler (bench/rollout.py, timed inside the server). Writers that take
a turn here wait on a condition instead, woken as soon as the turn ends, and a lease
write that waits goes before event writes that wait: a slot stays idle until its
release is written, an event report holds up nothing but its own answer.
"""
from __future__ import annotations

import threading


class WriteTurns:
    """One writer at a time; ``urgent`` waiters before ``normal`` ones. Both are
    lock-like: ``with turns.urgent: ...``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0
        self._normal_waiting = 0
        self.urgent = _Turn(self, urgent=True)
        self.normal = _Turn(self, urgent=False)

    def _take(self, urgent: bool) -> None:
        with self._cond:
            if urgent:
                self._urgent_waiting += 1
                try:
                    while self._busy:
                        self._cond.wait()
                finally:
                    self._urgent_waiting -= 1
            else:
                self._normal_waiting += 1
                try:
                    while self._busy or self._urgent_waiting:
                        self._cond.wait()
                finally:
                    self._normal_waiting -= 1
            self._busy = True

    def _give_back(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def waiting(self) -> tuple[int, int]:
        """(urgent, normal) writers waiting for a turn (tests)."""
        with self._cond:
            return self._urgent_waiting, self._normal_waiting


class _Turn:
    def __init__(self, turns: WriteTurns, urgent: bool):
        self._turns, self._urgent = turns, urgent

    def __enter__(self) -> None:
        self._turns._take(self._urgent)

    def __exit__(self, *exc: object) -> None:
        self._turns._give_back()
