"""Kept-alive HTTP(S) connections to the agents' command APIs (standard library).

A deploy sends each agent five or six requests, one heartbeat apart. Each agent gets
one idle connection here, kept between those requests (up to ``MAX_IDLE``
connections, each at most ``IDLE_SECONDS``), and each pinned certificate one
``SSLContext``, built from the PEM its agent sent with the heartbeats: a request on
a kept connection costs no TLS handshake and no certificate loading.

Measured: requests' Session spent ~0.6 ms of CPU per agent request on settings
merged from the environment (proxies, netrc, cookies) and its pool manager kept
the connections of 10 agents only, so a fleet deploy redid TLS handshakes; a
kept ``http.client`` connection costs ~0.06 ms a request.

Verification is unchanged: a pinned certificate is the only trust anchor of its
context, the host name (or IP address) of the callback URL must match it, and an
agent without one is verified against the system's CAs. What an agent may cost the
conductor is bounded: ``timeout`` is one deadline for the whole exchange, TLS
handshake included (a peer that trickles bytes does not get a new timeout for each,
so it cannot hold a worker longer), the answer's body at most ``MAX_ANSWER`` bytes.
"""
from __future__ import annotations

import collections
import hashlib
import http.client
import logging
import select
import socket
import ssl
import threading
import time
from typing import NamedTuple
from urllib.parse import urlsplit

LOG = logging.getLogger(__name__)

#: Idle connections kept in total (least recently used closed first).
MAX_IDLE = 256
#: An idle connection older than this is closed, not reused: under the agent's own
#: idle limit (ramdisk_agent/server.py, 300 s), so the conductor is the one closing.
IDLE_SECONDS = 240.0
#: Pinned certificates whose SSLContext is kept.
MAX_CONTEXTS = 256
#: The largest answer body read from an agent (command results are a few KiB).
MAX_ANSWER = 16 << 20
READ_CHUNK = 64 << 10
USER_AGENT = "metalcast-conductor"


class AnswerTooLarge(Exception):
    """The agent's answer is larger than MAX_ANSWER."""


class Origin(NamedTuple):
    """Where a connection goes and which certificate it trusts: what a kept
    connection must match to be reused."""

    scheme: str
    host: str
    port: int
    pem_digest: str | None


def _stale(conn: http.client.HTTPConnection) -> bool:
    """True when an idle connection was closed by the agent (or holds unread data)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class AgentConnections:
    """The idle connections to agents, and the TLS contexts of their certificates.

    Thread-safe; a connection is used by one request at a time (taken out while in
    use). ``keep=False`` closes every connection after its request (a one-off client).
    """

    def __init__(self, keep: bool = True, max_idle: int = MAX_IDLE,
                 idle_seconds: float = IDLE_SECONDS):
        self.keep, self.max_idle, self.idle_seconds = keep, max_idle, idle_seconds
        self._lock = threading.Lock()
        self._idle: collections.OrderedDict[Origin, tuple[http.client.HTTPConnection, float]] \
            = collections.OrderedDict()
        self._contexts: collections.OrderedDict[str | None, ssl.SSLContext] \
            = collections.OrderedDict()

    def request(self, method: str, url: str, body: bytes | None, pem: str | None,
                timeout: float, who: str = "the agent") -> tuple[int, bytes]:
        """(HTTP status, body) of one request to ``url``, verified against ``pem``
        when it is https (``who``: for the log). OSError (ssl.SSLError and
        TimeoutError included), http.client.HTTPException (InvalidURL for a URL that
        can never work) or AnswerTooLarge when it fails."""
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = 0
        if parts.scheme not in ("http", "https") or not parts.hostname or not port:
            raise http.client.InvalidURL(f"not an http(s) URL with a host and port: {url!r}")
        origin = Origin(parts.scheme, parts.hostname, port,
                        hashlib.sha256(pem.encode()).hexdigest() if pem else None)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        deadline = time.monotonic() + timeout
        conn = self._take(origin)
        try:
            if conn is None:
                conn = _Connection(origin.host, origin.port)
                context = None if origin.scheme == "http" else \
                    self._context(origin.pem_digest, pem, who)
                conn.sock = _open(origin, context, deadline)
            status, data, reusable = _exchange(conn, method, target, body, deadline)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        if reusable and self.keep:
            self._give(origin, conn)
        else:
            conn.close()
        return status, data

    @property
    def kept(self) -> int:
        """How many idle connections are kept now."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """Close every idle connection (at shutdown)."""
        with self._lock:
            idle, self._idle = list(self._idle.values()), collections.OrderedDict()
        for conn, _ in idle:
            conn.close()

    def _context(self, digest: str | None, pem: str | None, who: str) -> ssl.SSLContext:
        """The context trusting only ``pem`` (the system CAs without one), built once."""
        with self._lock:
            context = self._contexts.get(digest)
            if context is not None:
                self._contexts.move_to_end(digest)
                return context
        # Certificate and host name (IP address) checked, as requests did with the
        # certificate file: create_default_context requires both.
        context = ssl.create_default_context(cadata=pem) if pem else \
            ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.sslsocket_class = _DeadlineSSLSocket
        if digest:
            LOG.info("TLS to %s pinned to the certificate of its heartbeats (sha256 %s)",
                     who, digest)
        with self._lock:
            self._contexts[digest] = context
            while len(self._contexts) > MAX_CONTEXTS:
                self._contexts.popitem(last=False)
        return context

    def _take(self, origin: Origin) -> http.client.HTTPConnection | None:
        with self._lock:
            kept = self._idle.pop(origin, None)
        if kept is None:
            return None
        conn, since = kept
        if time.monotonic() - since > self.idle_seconds or _stale(conn):
            conn.close()
            return None
        return conn

    def _give(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        now, closing = time.monotonic(), []
        with self._lock:
            previous = self._idle.pop(origin, None)
            if previous is not None:   # two requests to one agent at once: keep one
                closing.append(previous[0])
            self._idle[origin] = (conn, now)
            while len(self._idle) > self.max_idle:
                closing.append(self._idle.popitem(last=False)[1][0])
            while self._idle:          # the oldest first: drop those past their age
                oldest_conn, since = next(iter(self._idle.values()))
                if now - since <= self.idle_seconds:
                    break
                self._idle.popitem(last=False)
                closing.append(oldest_conn)
        for old in closing:
            old.close()


class _Deadline:
    """Socket reads that wait at most until ``deadline`` (monotonic) in all: each
    read gets what is left, so a peer dribbling bytes cannot stretch an exchange."""

    deadline: float | None = None

    def recv(self, *args, **kwargs):
        self._bound()
        return super().recv(*args, **kwargs)

    def recv_into(self, *args, **kwargs):
        self._bound()
        return super().recv_into(*args, **kwargs)

    def _bound(self) -> None:
        if self.deadline is not None:
            self.settimeout(_left(self.deadline))  # type: ignore[attr-defined]


class _DeadlineSocket(_Deadline, socket.socket):
    """A plain-HTTP agent's socket."""


class _DeadlineSSLSocket(_Deadline, ssl.SSLSocket):
    """A TLS agent's socket (the contexts' ``sslsocket_class``)."""


class _Connection(http.client.HTTPConnection):
    """An HTTP connection on a socket opened by :func:`_open` (TLS or not): it never
    opens one by itself, which would be plain TCP whatever the agent's scheme."""

    def connect(self) -> None:
        raise http.client.NotConnected("the connection to the agent is closed")


def _open(origin: Origin, context: ssl.SSLContext | None, deadline: float) -> socket.socket:
    """A connected socket to ``origin``, TLS verified with ``context`` (None: plain),
    the TCP connection and the TLS handshake both done by ``deadline``."""
    raw = socket.create_connection((origin.host, origin.port), timeout=_left(deadline))
    if context is None:
        sock = _DeadlineSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        sock.settimeout(_left(deadline))
        return sock
    try:
        tls = context.wrap_socket(raw, server_hostname=origin.host,
                                  do_handshake_on_connect=False)
    except BaseException:
        raw.close()
        raise
    try:
        _handshake(tls, deadline)
    except BaseException:
        tls.close()
        raise
    return tls


def _handshake(tls: ssl.SSLSocket, deadline: float) -> None:
    """The TLS handshake, non-blocking, by ``deadline`` (a peer that sends its
    handshake a byte at a time does not get a new timeout for each)."""
    tls.settimeout(0.0)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            ready = select.select([tls], [], [], _left(deadline))[0]
        except ssl.SSLWantWriteError:
            ready = select.select([], [tls], [], _left(deadline))[1]
        if not ready:
            raise TimeoutError("the agent's TLS handshake did not finish in time")
    tls.settimeout(_left(deadline))


def _exchange(conn: http.client.HTTPConnection, method: str, target: str,
              body: bytes | None, deadline: float) -> tuple[int, bytes, bool]:
    """Send one request and read its answer by ``deadline``: (status, body, whether
    the connection may carry another request)."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    sock = conn.sock
    if not isinstance(sock, _Deadline):
        raise http.client.NotConnected("the connection to the agent is closed")
    sock.deadline = deadline   # every read from now on
    sock._bound()              # and the request's send
    conn.request(method, target, body=body, headers=headers)
    response = conn.getresponse()
    chunks, size = [], 0
    # Until the answer is read whole: then the response closes its file, and with
    # "Connection: close" (HTTP/1.0) the socket is gone with it.
    while not response.isclosed():
        chunk = response.read(READ_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_ANSWER:
            raise AnswerTooLarge(f"the answer is larger than {MAX_ANSWER >> 20} MiB")
        chunks.append(chunk)
    return response.status, b"".join(chunks), not response.will_close


def _left(deadline: float) -> float:
    """What is left of the deadline for the next socket operation."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the agent did not answer in time")
    return left
