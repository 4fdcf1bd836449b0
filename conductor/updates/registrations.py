"""How many new instances one client address may register: a token bucket per address.

The Omaha endpoint is public and a request names its own machine id, so one client
could otherwise add a row for every id it makes up. Known instances are never
limited (their checks cost one read); a new one takes a token from its address's
bucket (``burst`` tokens, refilled at ``rate`` a second). Addresses are kept for at
most ``max_clients`` (the least recently seen one is forgotten first), so the table
itself stays bounded.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

DEFAULT_BURST = 2000.0    # a whole rack behind one NAT address registers at once
DEFAULT_RATE = 20.0       # then 20 new instances a second
MAX_CLIENTS = 10000


class Registrations:
    def __init__(self, burst: float = DEFAULT_BURST, rate: float = DEFAULT_RATE,
                 max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic):
        self.burst, self.rate, self.max_clients, self.clock = burst, rate, max_clients, clock
        self._lock = threading.Lock()
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = \
            collections.OrderedDict()

    def allow(self, client: str) -> bool:
        """Take one token of ``client``'s bucket; False when it is empty."""
        now = self.clock()
        with self._lock:
            tokens, since = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - since) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return allowed
