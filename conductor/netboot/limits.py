"""How much of a boot server one client, and all clients together, may hold.

The TFTP and HTTP boot servers answer anyone on the provisioning network before
any authentication, so a client that opens connections or transfers and then
goes silent must not be able to take every slot (one thread each) from the
machines that are booting. The bounds are plain values (``[pxe]`` options, see
``conductor/config.py``); the TFTP server's thread admits every transfer, so
they hold across its worker processes.

:class:`ConnectionTable` applies the HTTP ones to the event-loop HTTP server, the
way nginx reuses keep-alive connections: a connection is *idle* while it waits for
(the rest of) a request, and an idle connection may be closed at any time
(RFC 9112 section 9.3). A new connection over a cap takes the place of the
longest-idle one (its own client's first, at the per-client cap); it is refused
only when every connection in its way is busy sending a file.
"""
from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections import Counter


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """Bounds of the HTTP boot server (one event loop; a connection costs a socket)."""

    connections: int = 256       # open connections in total
    per_client: int = 16         # open connections from one client address
    idle_timeout: float = 15.0   # s a connection may wait for a request, or stall a download
    header_timeout: float = 10.0  # s from a request's first byte to its whole head
    header_bytes: int = 16384    # longest request head (boot clients send < 1 KiB)


@dataclasses.dataclass(frozen=True)
class TftpLimits:
    """Bounds of the TFTP server (one socket and one open file per transfer)."""

    sessions: int = 256          # live transfers in total
    per_client: int = 4          # live transfers from one client address
    max_timeout: int = 5         # RFC 2349 ``timeout`` accepted up to this many s
    lifetime: float = 900.0      # s after which a transfer ends, finished or not


#: ``[pxe]`` option -> (limits class, field). Values must be positive.
PXE_OPTIONS = {
    "http_max_connections": (HttpLimits, "connections"),
    "http_connections_per_client": (HttpLimits, "per_client"),
    "http_idle_timeout": (HttpLimits, "idle_timeout"),
    "http_header_timeout": (HttpLimits, "header_timeout"),
    "tftp_max_sessions": (TftpLimits, "sessions"),
    "tftp_sessions_per_client": (TftpLimits, "per_client"),
    "tftp_max_timeout": (TftpLimits, "max_timeout"),
    "tftp_session_lifetime": (TftpLimits, "lifetime"),
}


def from_pxe_settings(pxe) -> tuple[HttpLimits, TftpLimits]:
    """The limits named by ``[pxe]`` settings; ValueError names a value that is not > 0."""
    values: dict[type, dict] = {HttpLimits: {}, TftpLimits: {}}
    for option, (kind, name) in PXE_OPTIONS.items():
        value = getattr(pxe, option)
        if not value > 0:
            raise ValueError(f"[pxe] {option} must be greater than 0, not {value!r}")
        values[kind][name] = value
    return HttpLimits(**values[HttpLimits]), TftpLimits(**values[TftpLimits])


@dataclasses.dataclass
class _Connection:
    client: str
    idle_since: float | None     # None: busy serving a request


class ConnectionTable:
    """Open connections of the HTTP boot server, admitted under :class:`HttpLimits`.

    Keys are the accepted sockets; closing one means ``shutdown(SHUT_RDWR)``, which
    wakes its reader in the event loop (it sees EOF, ends and calls ``release``).
    """

    def __init__(self, limits: HttpLimits, clock=time.monotonic):
        self.limits, self._clock = limits, clock
        self._lock = threading.Lock()
        self._open: dict[object, _Connection] = {}
        self._per_client: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, sock, client: str) -> str | None:
        """Register ``sock`` as idle; None, or why it is refused (nothing registered)."""
        evicted = []  # at most one: a client's own idle one, or the longest idle of all
        with self._lock:
            if self._per_client[client] >= self.limits.per_client:
                victim = self._longest_idle(client)
                if victim is None:
                    return f"too many connections from {client}"
                evicted.append(self._forget(victim))
            elif len(self._open) >= self.limits.connections:
                victim = self._longest_idle(None)
                if victim is None:
                    return "too many connections"
                evicted.append(self._forget(victim))
            self._register(sock, _Connection(client, self._clock()))
        for old_sock, _ in evicted:
            _close(old_sock)
        return None

    def busy(self, sock) -> None:
        """``sock`` has a whole request and is serving it: never closed for another."""
        self._mark(sock, None)

    def idle(self, sock) -> None:
        """``sock`` waits for its next request (keep-alive)."""
        self._mark(sock, self._clock())

    def release(self, sock) -> None:
        """``sock`` is closed (a no-op for one already evicted)."""
        with self._lock:
            if sock in self._open:
                self._forget(sock)

    def close_all(self) -> None:
        """Close every open connection (the server stops)."""
        with self._lock:
            socks = list(self._open)
        for sock in socks:
            _close(sock)

    def _mark(self, sock, idle_since: float | None) -> None:
        with self._lock:
            entry = self._open.get(sock)
            if entry is not None:
                entry.idle_since = idle_since

    def _longest_idle(self, client: str | None):
        idle = [(c.idle_since, id(s), s) for s, c in self._open.items()
                if c.idle_since is not None and client in (None, c.client)]
        return min(idle, key=lambda item: item[:2])[2] if idle else None

    def _register(self, sock, entry: _Connection) -> None:
        self._open[sock] = entry
        self._per_client[entry.client] += 1

    def _forget(self, sock) -> tuple[object, _Connection]:
        entry = self._open.pop(sock)
        self._per_client[entry.client] -= 1
        if not self._per_client[entry.client]:
            del self._per_client[entry.client]
        return sock, entry


def _close(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already gone
        pass
