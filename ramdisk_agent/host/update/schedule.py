"""When to check for updates: update_engine's schedule (spec §2.3), pure.

- the first check ``first_delay`` after start (default 10 min), fuzzed by ``fuzz``
  (update_engine: 7 min +- 5 min; Flatcar's "about 10 minutes after boot");
- then every ``interval`` (default 45 min, "about hourly"), or the server's
  ``PollInterval`` when it sent one, fuzzed the same way so hosts do not synchronise;
- after consecutive failed checks, the interval doubles per failure, capped at
  ``backoff_cap`` (4 h) - update_engine's answer to 500/503 from the server.
"""
from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True)
class Schedule:
    first_delay: float = 600.0
    interval: float = 2700.0
    fuzz: float = 600.0            #: total width: +- fuzz/2
    backoff_cap: float = 4 * 3600.0

    def first(self, rng: random.Random) -> float:
        """Seconds from start to the first check."""
        return self._fuzzed(self.first_delay, rng)

    def next(self, failures: int, rng: random.Random,
             poll_interval: float | None = None) -> float:
        """Seconds to the next check after ``failures`` consecutive failed checks."""
        base = poll_interval if poll_interval and poll_interval > 0 else self.interval
        if failures > 0:
            base = min(base * (2 ** min(failures, 32)), self.backoff_cap)
        return self._fuzzed(base, rng)

    def _fuzzed(self, base: float, rng: random.Random) -> float:
        half = min(self.fuzz / 2, base / 2)
        return max(base + rng.uniform(-half, half), 0.0)
