"""HTTP boot file server: kernels, ramdisks, iPXE scripts and images, from one root.

An HTTP/1.1 server (keep-alive) for GET and HEAD with single byte ranges
(``Range``/``If-Range`` -> 206/416) and conditional requests (``If-None-Match``
with ETags, ``If-Modified-Since`` -> 304); the message rules are pure functions in
``http_messages.py``, one connection's work is ``http_connection.py``. Paths are
confined to the root: no ``..``, no symlinks leading out, no directory listings.

Every connection lives on one asyncio event loop in one thread, on non-blocking
sockets: an open connection costs a socket and a few KiB, never a thread, so a rack
powering on at once, or a client holding connections idle, takes no thread from
anyone. Bodies go out with ``sendfile(2)`` from the loop's writability callbacks,
so the kernel copies page cache to the socket and the transfer runs at disk or
network speed rather than at Python speed (``bench/http_boot.py --storm``: 100
concurrent 64 MiB downloads at 1.0-1.1x the aggregate rate of a one-worker nginx in
the same run, on a loaded 2-core machine; the threaded server it replaces held 103
threads for them).

One client cannot keep the loop: a connection yields after every request, so a
client pipelining requests back to back shares the loop with the machines booting.

Anyone on the provisioning network can connect, so connections are bounded in
total and per client address (``limits.HttpLimits``, ``[pxe] http_*`` options);
over a cap the longest-idle connection makes room (``limits.ConnectionTable``).
A connection silent for the idle timeout, a download the client stops reading for
as long, and a request head not complete within the header timeout of its first
byte (slowloris) are closed. A malformed request (a path too long for any file, a
Range nobody can satisfy, a broken header line) is a clean 4xx, never a dropped
connection.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from pathlib import Path

from conductor.netboot.http_connection import Connection, TransferRecorder
from conductor.netboot.limits import ConnectionTable, HttpLimits

LOG = logging.getLogger(__name__)

#: Name of the one thread that runs the event loop (and every connection).
LOOP_THREAD = "boot-http"
#: Listen backlog: a rack powering on connects at once.
BACKLOG = 1024
#: Connections accepted per wake-up of the listening socket.
ACCEPT_BATCH = 64
#: Answer to a connection over a cap (sent without reading the request).
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nServer: metalcast-boot\r\n"
         b"Retry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
         b"Connection: close\r\n\r\n%s")


class _Server:
    """The listening socket and the open connections, all on one event loop."""

    def __init__(self, listener: socket.socket, root: Path, limits: HttpLimits,
                 loop: asyncio.AbstractEventLoop, on_transfer: TransferRecorder | None):
        self.listener, self.limits, self.loop = listener, limits, loop
        self.on_transfer = on_transfer
        self.root_real = Path(os.path.realpath(root))
        self.connections = ConnectionTable(limits)
        self.tasks: set[asyncio.Task] = set()
        self.closed = False

    def listen(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.listener.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:  # the client gave up while queued
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: let a second pass first
                LOG.error("Boot HTTP: cannot accept connections (%s); retrying in 1 s", exc)
                self.loop.remove_reader(self.listener.fileno())
                self.loop.call_later(1.0, self.listen)
                return
            self._admit(sock, address[0])

    def _admit(self, sock: socket.socket, client: str) -> None:
        """Serve the connection under the caps, or answer 503 at once and close it."""
        refused = self.connections.admit(sock, client)
        sock.setblocking(False)
        if refused is not None:
            LOG.info("Boot HTTP: refused a connection from %s: %s", client, refused)
            body = refused.encode() + b"\n"
            try:  # an empty send buffer takes this at once
                sock.send(_BUSY % (len(body), body))
            except OSError:
                pass
            sock.close()
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # reset already: give its slot back
            self.connections.release(sock)
            sock.close()
            return
        connection = Connection(sock, client, self.root_real, self.limits, self.connections,
                                self.loop, self.on_transfer)
        task = self.loop.create_task(connection.run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """Stop accepting, end every connection (a download in progress too)."""
        self.closed = True
        self.loop.remove_reader(self.listener.fileno())
        self.listener.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class BootHttpServer:
    """The HTTP boot root served on ``host:port``; ``port`` is the bound port after start()."""

    def __init__(self, root: Path, host: str, port: int, limits: HttpLimits | None = None,
                 on_transfer: TransferRecorder | None = None):
        self.root = Path(root)
        #: Told of each file response's end (protocol "http", complete, bytes sent).
        self.on_transfer = on_transfer
        self.host = host
        self.port = port
        self.limits = limits or HttpLimits()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def open_connections(self) -> int:
        """Connections open now (each a socket in the event loop, none a thread)."""
        return len(self._server.connections) if self._server is not None else 0

    def start(self) -> None:
        """Bind and serve in one thread; returns once the socket listens (OSError if not)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._server = _Server(listener, self.root, self.limits, loop, self.on_transfer)
        self._server.listen()
        self._thread = threading.Thread(target=_run_loop, args=(loop,), name=LOOP_THREAD,
                                        daemon=True)
        self._thread.start()
        LOG.info("Boot HTTP server serving %s on %s port %s", self.root, self.host, self.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self._server is None:
            return
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if thread is None or not thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(server.close(), server.loop).result(10)
        except Exception:  # stopping goes on: the loop ends below in any case
            LOG.exception("Boot HTTP server did not close its connections")
        server.loop.call_soon_threadsafe(server.loop.stop)
        thread.join(10)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()
