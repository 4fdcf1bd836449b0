"""Held lease acquires: a waiting host's request is answered when a slot frees, not
when it next polls (issue 16, bench/rollout.py).

A polled semaphore leaves every freed slot idle until some waiter's next poll arrives,
and a fleet's polls are spread thin on purpose; with 50 holders releasing within a
few milliseconds of each other, most slots waited for a poll (measured: ~1 s lost per
lease round at 2,000 hosts, 150 polls/s). An acquire that asks to ``wait`` is held
here instead, in a first-come queue per group:

- a release in this process hands its slot to the group's oldest waiter not called
  yet, in the release's own transaction (conductor/db/leases.py ``hand_over``: the
  count is still decided under the group's row lock, so holders never exceed max),
  and wakes it to answer at once - one write per lease round, and a burst of
  releases serves as many waiters at once;
- a waiter that got its lease, timed out or whose client left wakes the next, which
  tries the usual conditional write (slots freed in another way are found so);
- the oldest waiter also re-checks every :data:`HEAD_POLL` seconds: a release in
  another API process or a lease running out at its TTL is not announced here.

Bounds, since any host agent with a token reaches this: one held request per node
and group, and at most ``most`` in all (each holds a server thread); an acquire
beyond them is answered at once, as a poll is.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

#: Seconds between the oldest waiter's own checks (releases elsewhere, expiries).
HEAD_POLL = 0.5
#: Seconds between a waiter's checks whether its client is still connected.
GONE_POLL = 2.0


class Waiter:
    """One held acquire: woken when it may try for the lease, or handed one."""

    def __init__(self, group: str, node: str, gone: Callable[[], bool]):
        self.group, self.node, self.gone = group, node, gone
        self.wake = threading.Event()
        self.called = False           #: woken and not done trying (the room's lock)
        self.granted: Any = None      #: the lease a release handed over (an Outcome)


def _call_next(queue: collections.deque[Waiter]) -> Waiter | None:
    """The oldest waiter not called yet, now called (one called is about to try)."""
    for waiter in queue:
        if not waiter.called:
            waiter.called = True
            return waiter
    return None


def _wake_next(queue: collections.deque[Waiter]) -> None:
    waiter = _call_next(queue)
    if waiter is not None:
        waiter.wake.set()


class WaitingRoom:
    """First-come queues of held acquires per group, at most ``most`` in all."""

    def __init__(self, most: int):
        self.most = most
        self._lock = threading.Lock()
        self._queues: dict[str, collections.deque[Waiter]] = {}
        self._count = 0

    def enter(self, group: str, node: str, gone: Callable[[], bool] = lambda: False
              ) -> Waiter | None:
        """A place at the end of ``group``'s queue; None when the room is full or the
        node already waits in that group."""
        with self._lock:
            queue = self._queues.setdefault(group, collections.deque())
            if self._count >= self.most or any(w.node == node for w in queue):
                return None
            waiter = Waiter(group, node, gone)
            queue.append(waiter)
            self._count += 1
            return waiter

    def leave(self, waiter: Waiter) -> None:
        """``waiter`` is done (granted, timed out, gone): the next one tries now."""
        with self._lock:
            queue = self._queues.get(waiter.group)
            if queue is None or waiter not in queue:
                return
            queue.remove(waiter)
            self._count -= 1
            if queue:
                _wake_next(queue)
            else:
                del self._queues[waiter.group]

    def tried(self, waiter: Waiter) -> None:
        """``waiter`` tried and did not get a slot: it may be woken again. Its wake
        stays set while it tries, so a release meanwhile wakes the next waiter
        instead of this one a second time (which made a burst of releases a chain of
        one grant after another)."""
        with self._lock:
            waiter.called = False
            waiter.wake.clear()

    def call_next(self, group: str) -> Waiter | None:
        """The oldest waiter of ``group`` not called yet, still connected, now called:
        the caller hands it a lease (``granted``) and sets its ``wake``."""
        with self._lock:
            waiter = _call_next(self._queues.get(group, collections.deque()))
        if waiter is not None and waiter.gone():
            self.tried(waiter)        # it stops at its next check; the next may try
            return None
        return waiter

    def is_first(self, waiter: Waiter) -> bool:
        with self._lock:
            queue = self._queues.get(waiter.group)
            return queue is not None and bool(queue) and queue[0] is waiter

    def wake(self, group: str, every: bool = False) -> None:
        """A slot of ``group`` may be free: its oldest waiter not woken yet (or all)
        tries - 50 releases at once wake 50 waiters at once, not one after another."""
        with self._lock:
            queue = self._queues.get(group)
            if queue and every:
                for waiter in queue:
                    waiter.called = True
                    waiter.wake.set()
            elif queue:
                _wake_next(queue)

    def others_wait(self, group: str, node: str) -> bool:
        """Whether waiters of ``group`` other than ``node`` are held: a free slot goes
        to them first, so a poll from ``node`` is refused without asking the database."""
        with self._lock:
            return any(w.node != node for w in self._queues.get(group, ()))

    def waiting(self, group: str | None = None) -> int:
        with self._lock:
            if group is None:
                return self._count
            return len(self._queues.get(group, ()))
