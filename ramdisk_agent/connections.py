"""Connections of the agent's command API server, bounded in total and per client.

The agent runs in a ramdisk (memory is its disk, threads are few), and anyone on
the provisioning network can connect to it, so ``server.HttpsServer`` admits
connections through :class:`Connections` before any TLS.
"""
from __future__ import annotations

import socket
import threading
import time


class Connections:
    """Open connections, bounded in total and per client address.

    A connection is idle from accept until it has a whole request (TLS handshake and
    headers included) and again between kept-alive requests; an idle one may be
    closed at any time (RFC 9112 9.3). A new connection over a cap takes the place of
    the longest-idle one (its own client's first); it is refused only when every
    connection in its way is busy running a request. Closing is a plain
    ``shutdown`` of the file descriptor, which wakes the thread blocked reading it.
    """

    def __init__(self, total: int, per_client: int):
        self.total, self.per_client = total, per_client
        self._lock = threading.Lock()
        self._open: dict = {}  # socket -> [client address, idle since (None: busy)]

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, sock, client: str) -> bool:
        with self._lock:
            mine = sum(1 for c, _ in self._open.values() if c == client)
            victim = None
            if mine >= self.per_client:
                victim = self._longest_idle(client)
                if victim is None:
                    return False
            elif len(self._open) >= self.total:
                victim = self._longest_idle(None)
                if victim is None:
                    return False
            if victim is not None:
                del self._open[victim]
            self._open[sock] = [client, time.monotonic()]
        if victim is not None:
            _shutdown(victim)
        return True

    def rekey(self, old, new) -> None:
        """``old`` became ``new`` (the TLS socket wrapping it; ``old`` is detached). If
        ``old`` was closed for another meanwhile (its shutdown found no descriptor),
        ``new`` is closed now: no connection runs outside the table."""
        with self._lock:
            entry = self._open.pop(old, None)
            if entry is not None:
                self._open[new] = entry
        if entry is None:
            _shutdown(new)

    def busy(self, sock) -> None:
        self._mark(sock, None)

    def idle(self, sock) -> None:
        self._mark(sock, time.monotonic())

    def release(self, sock) -> None:
        with self._lock:
            self._open.pop(sock, None)

    def _mark(self, sock, since: float | None) -> None:
        with self._lock:
            if sock in self._open:
                self._open[sock][1] = since

    def _longest_idle(self, client: str | None):
        idle = [(since, id(s), s) for s, (c, since) in self._open.items()
                if since is not None and client in (None, c)]
        return min(idle, key=lambda item: item[:2])[2] if idle else None


def _shutdown(sock) -> None:
    try:  # socket.socket's own shutdown: an SSLSocket's would drop its TLS state
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass
