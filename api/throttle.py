"""How many password checks run at once, per client and in total, and how fast one
client may fail them.

A bcrypt check costs ~0.1-0.4 s of CPU (cost 10-12) and the API has 8 threads: a
client sending wrong passwords as fast as it can would otherwise keep every thread
and both cores busy, and starve everyone else. So a check needs a slot: at most
``total`` run at once (the other threads keep serving requests with verified
credentials, tokens and the ramdisk routes) and at most ``per_client`` for one
client address (an IPv6 client is its /64). A client that fails ``free_failures``
checks in a row then waits before each next one: 1 s, 2 s, 4 s ... up to
``max_backoff``; a success, or ``FORGET_AFTER`` s without a failure, clears its
record. A check refused for any of these reasons costs nothing: the caller answers
429 with ``Retry-After`` at once.

Credentials verified before never come here (api/auth.py remembers them), so a
flood of wrong passwords from one address costs a good client nothing.
"""
from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
import math
import re
import threading
import time
from collections.abc import Callable

LOG = logging.getLogger(__name__)

#: Seconds without a failure after which a client's failures are forgotten.
FORGET_AFTER = 900.0
#: Clients remembered at most (the oldest idle record goes first).
MAX_CLIENTS = 10000
#: An IPv4 address as ipaddress writes it back (no leading zeros): its own key.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PLAIN_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


@dataclasses.dataclass(frozen=True)
class CheckLimits:
    """Bounds on password checks (``[api] auth_*`` options, conductor/config.py)."""

    total: int = 4               # checks running at once, all clients together
    per_client: int = 2          # checks running at once for one client address
    free_failures: int = 5       # failures in a row before the backoff starts
    max_backoff: float = 60.0    # s, the longest wait between two checks of one client


class Busy(Exception):
    """A check refused without running it; retry after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: int):
        super().__init__(reason)
        self.retry_after = retry_after


@dataclasses.dataclass
class _Client:
    running: int = 0
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0


def client_of(address: str | None) -> str:
    """The key one client is counted under: its IP address, or its /64 for IPv6
    (one host usually holds a whole /64)."""
    if not address:
        return "unknown"
    if _PLAIN_IPV4.fullmatch(address):  # what every request on IPv4 has: ~0.2 us, not 3
        return address
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class CheckBudget:
    """Runs password checks within :class:`CheckLimits` (thread-safe)."""

    def __init__(self, limits: CheckLimits = CheckLimits(),
                 clock: Callable[[], float] = time.monotonic):
        self.limits, self._clock = limits, clock
        self._lock = threading.Lock()
        self._running = 0
        self._clients: collections.OrderedDict[str, _Client] = collections.OrderedDict()

    @classmethod
    def from_settings(cls, api) -> CheckBudget:
        """The budget the ``[api]`` settings describe (conductor/config.py ApiSettings)."""
        return cls(CheckLimits(total=api.auth_max_concurrent_checks,
                               per_client=api.auth_checks_per_client,
                               free_failures=api.auth_failures_before_backoff,
                               max_backoff=api.auth_max_backoff))

    def run(self, client: str, check: Callable[[], bool]) -> bool:
        """``check()`` (True: the password is right) in a slot of ``client``'s; raises
        :class:`Busy` without calling it when no slot is free or the client must wait."""
        self._acquire(client)
        ok = False
        try:
            ok = check()
        finally:
            self._release(client, ok)
        return ok

    def _acquire(self, client: str) -> None:
        with self._lock:
            now = self._clock()
            entry = self._entry(client, now)
            if entry.blocked_until > now:
                raise Busy(f"Too many failed logins from {client}; try again later.",
                           max(1, math.ceil(entry.blocked_until - now)))
            if entry.running >= self.limits.per_client:
                raise Busy(f"Too many logins in progress from {client}.", 1)
            if self._running >= self.limits.total:
                raise Busy("Too many logins in progress; try again in a moment.", 1)
            entry.running += 1
            self._running += 1

    def _release(self, client: str, ok: bool) -> None:
        with self._lock:
            now = self._clock()
            entry = self._clients.setdefault(client, _Client(running=1))
            entry.running -= 1
            self._running -= 1
            if ok:
                entry.failures, entry.blocked_until = 0, 0.0
                return
            entry.failures += 1
            entry.last_failure = now
            over = entry.failures - self.limits.free_failures + 1
            if over > 0:
                wait = min(2.0 ** (over - 1), self.limits.max_backoff)
                entry.blocked_until = now + wait
                if over == 1:
                    LOG.warning("%d failed logins in a row from %s: its next checks wait "
                                "(up to %g s each)", entry.failures, client,
                                self.limits.max_backoff)

    def _entry(self, client: str, now: float) -> _Client:
        entry = self._clients.get(client)
        if entry is None:
            entry = self._clients[client] = _Client()
            self._forget_oldest()
        else:
            self._clients.move_to_end(client)
            if entry.failures and now - entry.last_failure > FORGET_AFTER:
                entry.failures, entry.blocked_until = 0, 0.0
        return entry

    def _forget_oldest(self) -> None:
        """Keep the table bounded: drop the least recently seen idle records."""
        while len(self._clients) > MAX_CLIENTS:
            client, entry = next(iter(self._clients.items()))
            if entry.running:  # in use: keep it, look no further this time
                self._clients.move_to_end(client)
                return
            del self._clients[client]
