"""waitress with bounds: body caps per route before the body is read, connections per
client and in total, and a deadline for a request's headers.

waitress reads a whole request, body included, before it calls the app, and its own
bounds are global: one ``max_request_body_size`` for every route, one
``connection_limit`` (reached, it stops accepting: 1,000 idle connections holding
half-sent headers made a lookup wait in the backlog until they timed out) and one
``channel_timeout`` that a client resets by sending a byte now and then. So three
small subclasses, documented here and nowhere else:

* :class:`BoundedParser` (the request parser) takes the route's cap from
  :class:`api.limits.BodyLimits` as soon as the headers are in, so a body over it is
  refused (413, Ironic's body) before it is read, whether it declares a length or
  streams chunked. A route with a large cap (a patch upload) gets it only if its
  credentials were verified before (``preverified``: a cheap lookup, no bcrypt) or
  if one of ``ConnectionLimits.large_bodies`` slots for unverified senders is free
  (one per client): an anonymous client cannot make the server spool large bodies
  to disk. The app checks the credentials before the view reads the body.
* :class:`BoundedChannel` (a connection) knows its client and since when it has
  been waiting for a request; it is *idle* while it waits for (the rest of) a
  request's headers.
* :class:`BoundedServer` (a listening socket) admits a new connection under
  :class:`ConnectionGuard`, shared by every listener: at a client's cap its
  longest-idle connection makes room (an idle connection may be closed at any time,
  RFC 9112 §9.3), at the total cap the longest-idle of all; only when every
  connection in the way is busy is the new one refused. Its periodic maintenance
  also closes connections that have waited longer than ``header_timeout`` for their
  request's headers, however slowly they trickle in. A request for one of the app's
  long-lived stream paths (``app.extensions[STREAMS]``: the console's events) runs on
  the listener's stream threads, not its worker threads, so open streams never
  starve the API; the app bounds how many are open at once.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import Error, RequestEntityTooLarge

from api import auth, limits
from api.throttle import client_of

LOG = logging.getLogger(__name__)

#: app.extensions key: (paths, most open at once) of the app's long-lived streams.
STREAMS = "metalcast.streams"
#: Stream threads beyond the most open streams: they answer the refusals (503).
STREAM_SPARE_THREADS = 4
#: Seconds between two warnings about refused connections (a flood logs one line).
REFUSAL_LOG_INTERVAL = 60.0


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """Bounds of the API listeners (``[api]`` options, conductor/config.py)."""

    total: int = 1000            # open connections, every listener and client together
    per_client: int = 64         # open connections from one client address
    header_timeout: float = 10.0  # s a connection may wait for its request headers
    large_bodies: int = 2        # bodies above the default cap read at once for
                                 # credentials not verified yet (one per client)

    @classmethod
    def from_settings(cls, api) -> ConnectionLimits:
        """The bounds the ``[api]`` settings name (conductor/config.py ApiSettings)."""
        return cls(total=api.max_connections, per_client=api.max_connections_per_client,
                   header_timeout=api.header_timeout)


class TooLarge(RequestEntityTooLarge):
    """waitress's 413, with Ironic's error body."""

    def __init__(self, cap: int):
        super().__init__(limits.too_large_message(cap))

    def to_response(self, ident=None):
        return limits.refusal(limits.TOO_LARGE, self.body)


class TooBusy(Error):
    """429: no slot to read a large body for credentials not verified yet."""

    code, reason = 429, "Too Many Requests"

    def to_response(self, ident=None):
        status, headers, body = limits.refusal(f"{self.code} {self.reason}", self.body)
        return status, headers + [("Retry-After", "5")], body


class _Adjusted:
    """waitress's settings for one request, with that request's body cap."""

    def __init__(self, adj: Adjustments, max_request_body_size: int):
        self._adj, self.max_request_body_size = adj, max_request_body_size

    def __getattr__(self, name: str):
        return getattr(self._adj, name)


class ConnectionGuard:
    """Open connections of every listener, admitted under :class:`ConnectionLimits`;
    and the slots for large bodies of credentials not verified yet. Channels are
    added and closed in the event loop; slots are released by worker threads too."""

    def __init__(self, bounds: ConnectionLimits = ConnectionLimits()):
        self.limits = bounds
        self._lock = threading.Lock()
        self._open: dict[str, set[BoundedChannel]] = {}
        self._count = 0
        self._large: set[str] = set()  # clients reading a large body on a slot
        self._refused, self._logged_at = 0, 0.0

    def opened(self, channel: BoundedChannel) -> None:
        with self._lock:
            channels = self._open.setdefault(channel.client, set())
            if channel not in channels:
                channels.add(channel)
                self._count += 1

    def closed(self, channel: BoundedChannel) -> None:
        with self._lock:
            channels = self._open.get(channel.client, set())
            if channel in channels:
                channels.discard(channel)
                self._count -= 1
                if not channels:
                    del self._open[channel.client]

    def make_room(self, client: str) -> bool:
        """Room for one more connection of ``client``: False if every connection in
        the way is busy. Closes the longest-idle one in the way (event loop only)."""
        with self._lock:
            if len(self._open.get(client, ())) >= self.limits.per_client:
                victim = _longest_idle(self._open.get(client, ()))
            elif self._count >= self.limits.total:
                victim = _longest_idle(c for cs in self._open.values() for c in cs)
            else:
                return True
        if victim is None:
            self._note_refusal(client)
            return False
        victim.will_close = True  # the loop closes it; it no longer counts from now
        self.closed(victim)
        return True

    def expire(self, now: float) -> None:
        """Close every connection that has waited longer than ``header_timeout`` for
        a request's headers (event loop only)."""
        cutoff = now - self.limits.header_timeout
        with self._lock:
            late = [c for cs in self._open.values() for c in cs
                    if c.idle and c.waiting_since < cutoff]
        for channel in late:
            channel.will_close = True
            self.closed(channel)

    def large_body_slot(self, client: str) -> Callable[[], None] | None:
        """A slot to read one large body for ``client``, or None; call the result
        to give it back."""
        with self._lock:
            if client in self._large or len(self._large) >= self.limits.large_bodies:
                return None
            self._large.add(client)
        return functools.partial(self._release_large, client)

    def _release_large(self, client: str) -> None:
        with self._lock:
            self._large.discard(client)

    def _note_refusal(self, client: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= REFUSAL_LOG_INTERVAL:
            LOG.warning("Refused %d connection(s) over the limits (%d per client, %d in "
                        "all) while every connection in the way was busy; last from %s",
                        self._refused, self.limits.per_client, self.limits.total, client)
            self._refused, self._logged_at = 0, now


def _longest_idle(channels) -> BoundedChannel | None:
    idle = [c for c in channels if c.idle]
    return min(idle, key=lambda c: c.waiting_since) if idle else None


class BodyPolicy:
    """The body cap of a request, decided from its request line and headers."""

    def __init__(self, body_limits: limits.BodyLimits, preverified: Callable[[str | None], bool],
                 guard: ConnectionGuard):
        self.body_limits, self.preverified, self.guard = body_limits, preverified, guard

    def admit(self, method: str, path: str, authorization: str | None,
              client: str) -> tuple[int, Callable[[], None] | None]:
        """(cap, release): ``release`` gives back a large-body slot; cap -1: the route
        is large and no slot is free."""
        cap = self.body_limits.cap(method, path)
        if not self.body_limits.is_large(cap) or self.preverified(authorization):
            return cap, None
        release = self.guard.large_body_slot(client)
        return (cap, release) if release is not None else (-1, None)


class BoundedParser(HTTPRequestParser):
    """waitress's request parser with the route's body cap (see the module doc)."""

    adj: Any  # waitress's settings, then this request's (:class:`_Adjusted`)
    error: Any  # a waitress.utilities.Error once the request is refused

    def __init__(self, adj: Adjustments, policy: BodyPolicy, client: str):
        super().__init__(adj)
        self._policy, self._client = policy, client
        self.cap: int | None = None
        self._slot: weakref.finalize | None = None

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        self.cap, release = self._policy.admit(
            self.command, self.path, self.headers.get("AUTHORIZATION"), self._client)
        if release is not None:  # given back when done with, or dropped at the latest
            self._slot = weakref.finalize(self, release)
        # waitress refuses a body of max_request_body_size bytes or more
        self.adj = _Adjusted(self.adj, max(self.cap, 0) + 1)

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if isinstance(self.error, RequestEntityTooLarge) and not isinstance(
                self.error, (TooLarge, TooBusy)) and self.cap is not None:
            if self.cap < 0:
                self.error = TooBusy("Too many large uploads are being received for "
                                     "credentials not verified yet; retry in a moment.")
            else:
                self.error = TooLarge(self.cap)
        if self.error is not None:
            # no "100 Continue" for a refused request: the client must not send the body
            self.expect_continue = False
        if self.completed:  # the slot bounds bodies being received, not answered: a
            self.give_back()  # client's next upload may follow the answer at once
        return consumed

    def give_back(self) -> None:
        """Return the large-body slot now (idempotent, any thread)."""
        if self._slot is not None:
            self._slot()

    def close(self) -> None:
        self.give_back()
        super().close()


class BoundedChannel(HTTPChannel):
    """A connection that knows its client and how long it has waited for a request."""

    request: Any  # waitress's: the request being received (None between requests)
    #: Serving a long-lived stream (the console's events): on the stream threads.
    streaming = False

    def __init__(self, server: BoundedServer, sock, addr, adj, socket_map: dict):
        self.client = client_of(addr[0] if isinstance(addr, tuple) else None)
        self.waiting_since = time.time()  # waitress's maintenance clock is time.time()
        self.parser_class = functools.partial(
            BoundedParser, policy=server.body_policy, client=self.client)
        super().__init__(server, sock, addr, adj, map=socket_map)

    @property
    def idle(self) -> bool:
        """Waiting for (the rest of) a request's headers, nothing being served or sent."""
        partial = self.request
        return (not self.requests and not self.total_outbufs_len
                and (partial is None or not partial.headers_finished))

    def service(self) -> None:
        try:
            super().service()
        finally:
            self.waiting_since = time.time()

    def add_channel(self, socket_map=None) -> None:
        super().add_channel(socket_map)
        self.server.guard.opened(self)

    def del_channel(self, socket_map=None) -> None:
        super().del_channel(socket_map)
        self.server.guard.closed(self)

    def handle_close(self) -> None:
        partial = self.request
        if partial is not None:  # a body cut short: its large-body slot is free again
            partial.give_back()
        super().handle_close()

    def write_soon(self, data) -> int:
        """waitress sends small writes on its loop's next wake (up to a second): a
        stream's event is sent at once."""
        sent = super().write_soon(data)
        if self.streaming:
            self.server.pull_trigger()
        return sent


class BoundedServer(TcpWSGIServer):
    """A listening socket that admits connections under the shared guard."""

    channel_class = BoundedChannel

    def __init__(self, application, socket_map: dict, *, guard: ConnectionGuard,
                 body_policy: BodyPolicy, streams: ThreadedTaskDispatcher | None = None,
                 stream_paths: frozenset[str] = frozenset(), **kw):
        self.guard, self.body_policy = guard, body_policy
        self.streams, self.stream_paths = streams, stream_paths
        super().__init__(application, socket_map, **kw)

    def add_task(self, task) -> None:
        """A request for a stream path runs on the stream threads: an open stream holds
        its thread, and must not hold one of the API's."""
        channel = task
        requests = getattr(channel, "requests", None)
        if self.streams is not None and requests and requests[0].path in self.stream_paths:
            channel.streaming = True
            self.streams.add_task(task)
            return
        if requests:
            channel.streaming = False
        super().add_task(task)

    def handle_accept(self) -> None:
        try:
            pair = self.accept()
            if pair is None:
                return
            conn, addr = pair
            self.set_socket_options(conn)
        except OSError:  # the peer left before accept completed
            return
        if not self.guard.make_room(client_of(addr[0])):
            conn.close()
            return
        self.channel_class(self, conn, addr, self.adj, self._map)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # connections silent for channel_timeout
        self.guard.expire(now)


def create_server(app, *, sockets: dict, guard: ConnectionGuard, threads: int,
                  **adjustments) -> BoundedServer:
    """One listener of ``app`` (a Flask app built by ``api.create_app`` or
    ``api.create_patching_app``), served by the event loop of ``sockets`` (waitress's
    socket map) and bounded by ``guard`` (both shared by every listener), with its own
    ``threads`` workers.
    ``adjustments`` are waitress's (``host``, ``port``, ``ident``, ...)."""
    bounds = guard.limits
    stream_paths, most = app.extensions.get(STREAMS, (frozenset(), 0))
    if stream_paths:  # read while a stream runs: a client that left is seen at once
        adjustments.setdefault("channel_request_lookahead", 1)  # (client_disconnected)
    adj = Adjustments(
        threads=threads, asyncore_use_poll=True,  # select() fails above fd 1024
        cleanup_interval=1,  # maintenance (header deadline) every second
        connection_limit=bounds.total + 64,  # waitress stops accepting at this: ours first
        max_request_body_size=max(limits.LARGE_BODIES.values()),
        **adjustments)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    policy = BodyPolicy(app.extensions[limits.EXTENSION], auth.preverified(app), guard)
    streams = None
    if stream_paths:  # a thread for each stream the app lets open, and a few to refuse more
        streams = ThreadedTaskDispatcher()
        streams.set_thread_count(most + STREAM_SPARE_THREADS)
    return BoundedServer(app, sockets, guard=guard, body_policy=policy, dispatcher=dispatcher,
                         streams=streams, stream_paths=stream_paths,
                         adj=adj, sockinfo=adj.listen[0])
