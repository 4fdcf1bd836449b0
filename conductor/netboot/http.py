"""HTTP boot file server: kernels, ramdisks, iPXE scripts and images, from one root.

A threaded HTTP/1.1 server (keep-alive) for GET and HEAD with single byte ranges
(``Range``/``If-Range`` -> 206/416) and conditional requests (``If-None-Match``
with ETags, ``If-Modified-Since`` -> 304). Bodies go out with ``sendfile(2)``, so
the kernel copies page cache to the socket and the transfer runs at disk or
network speed rather than at Python speed. Paths are confined to the root: no
``..``, no symlinks leading out, no directory listings.

Anyone on the provisioning network can connect, so connections are bounded in
total and per client address and an idle one is closed after a timeout
(``limits.HttpLimits``, ``[pxe] http_*`` options); over a cap the longest-idle
connection makes room (``limits.ConnectionTable``). A malformed request (a path
too long for any file, a Range nobody can satisfy) is a 4xx, never a dropped
connection.
"""
from __future__ import annotations

import email.utils
import logging
import os
import re
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from conductor.netboot.limits import ConnectionTable, HttpLimits

LOG = logging.getLogger(__name__)

#: Content types a boot client may care about; everything else is a byte stream.
CONTENT_TYPES = {".ipxe": "text/plain; charset=utf-8", ".cfg": "text/plain; charset=utf-8",
                 ".json": "application/json", ".txt": "text/plain; charset=utf-8"}
#: Name prefix of the thread serving one connection (followed by the client address).
CONNECTION_THREAD = "boot-http-connection"
#: A longer request target names no file in a boot root: 414 before any file lookup.
MAX_TARGET = 2048
#: A byte position: ASCII digits, at most 19 of them (any file size fits in 63 bits).
_POSITION_RE = re.compile(r"[0-9]{0,19}")
#: Answer to a connection over a cap (sent without reading the request).
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nServer: metalcast-boot\r\n"
         b"Retry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
         b"Connection: close\r\n\r\n%s")


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """``Range`` header -> (first, last) inclusive, None (serve everything) or "416".

    Only one ``bytes`` range is honoured; several ranges or another unit are
    ignored (RFC 9110 lets a server answer those with the whole file). A ``bytes``
    range that is not two ASCII numbers of at most 19 digits, or ends before it
    starts, is refused with 416 as nginx does (RFC 9110 14.2 lets a server reject
    an invalid range).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not _POSITION_RE.fullmatch(first) or not _POSITION_RE.fullmatch(last):
        return "416"
    if first == "":  # suffix range: the last N bytes
        if last == "" or int(last) == 0 or size == 0:
            return "416"
        return max(0, size - int(last)), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return "416"
    if start >= size:
        return "416"
    return start, size - 1 if last == "" else min(int(last), size - 1)


def target_path(target: str) -> str | None:
    """The decoded path of a request target (origin or absolute form), or None."""
    if target.startswith("/"):
        path = target.split("?", 1)[0].split("#", 1)[0]
    elif target.lower().startswith(("http://", "https://")):  # RFC 9112 3.2.2
        try:
            path = urlsplit(target).path
        except ValueError:  # e.g. a broken IPv6 literal in the authority
            return None
    else:
        return None
    return unquote(path)


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison, as If-None-Match requires."""
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _parse_date(value: str | None) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "metalcast-boot"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.limits.idle_timeout)  # per recv and send
        threading.current_thread().name = f"{CONNECTION_THREAD} {self.client_address[0]}"

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:  # http.server's naming
        self._guarded(send_body=True)

    def do_HEAD(self) -> None:
        self._guarded(send_body=False)

    def handle_expect_100(self) -> bool:
        """No "100 Continue": this server reads no body, so none should be sent."""
        return True

    def log_message(self, fmt, *args) -> None:
        LOG.debug("boot http %s: " + fmt, self.client_address[0], *args)

    def _guarded(self, send_body: bool) -> None:
        """Serve one request as busy (never closed to make room); a bug is a 500."""
        table = self.server.connections
        table.busy(self.connection)
        # A body was announced, and a file server reads none: the rest of the stream is
        # not a next request, so this connection ends after the answer.
        if self.headers.get("Transfer-Encoding") or \
                self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            self.close_connection = True
        self._sent_head = False
        try:
            self._serve(send_body)
        except (TimeoutError, ConnectionError):
            self.close_connection = True
        except Exception:  # one request fails, the server serves on
            LOG.exception("Boot HTTP request %r from %s failed", self.requestline[:200],
                          self.client_address[0])
            self.close_connection = True
            if not self._sent_head:
                self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR)
        finally:
            table.idle(self.connection)

    def _resolve(self) -> Path | None:
        """The regular file the request names inside the root, or None."""
        root: Path = self.server.root_real
        path = target_path(self.path)
        if path is None:
            return None
        parts = [p for p in path.split("/") if p]
        if "\x00" in path or any(p in (".", "..") for p in parts) or not parts:
            return None
        try:  # a name too long for the file system (ENAMETOOLONG) is no file either
            real = Path(os.path.realpath(root.joinpath(*parts)))
            if root not in real.parents or not real.is_file():
                return None
        except (OSError, ValueError):
            return None
        return real

    def _serve(self, send_body: bool) -> None:
        if len(self.path) > MAX_TARGET:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        path = self._resolve()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        try:
            handle = open(path, "rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with handle:
            st = os.fstat(handle.fileno())
            etag = _etag(st)
            if self._not_modified(etag, st.st_mtime):
                self._head(HTTPStatus.NOT_MODIFIED, etag, st, 0)
                return
            span = self._range(st, etag)
            if span == "416":
                self._head(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, etag, st, 0,
                           {"Content-Range": f"bytes */{st.st_size}"})
                return
            first, last = span if span else (0, st.st_size - 1)
            extra = {"Content-Range": f"bytes {first}-{last}/{st.st_size}"} if span else {}
            status = HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK
            self._head(status, etag, st, last - first + 1, extra, path.suffix)
            if send_body and last >= first:
                self._send_file(handle, first, last - first + 1)

    def _not_modified(self, etag: str, mtime: float) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:  # takes precedence over If-Modified-Since
            return _etag_matches(if_none_match, etag)
        since = _parse_date(self.headers.get("If-Modified-Since"))
        return since is not None and int(mtime) <= since

    def _range(self, st: os.stat_result, etag: str):
        header = self.headers.get("Range")
        if not header:
            return None
        if_range = self.headers.get("If-Range")
        if if_range is not None:
            if if_range.startswith(('"', "W/")):
                if if_range.strip() != etag:  # strong comparison
                    return None
            elif _parse_date(if_range) != int(st.st_mtime):
                return None
        return parse_range(header, st.st_size)

    def _head(self, status, etag, st, length, extra=None, suffix="") -> None:
        self._sent_head = True
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPES.get(suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send_file(self, handle, offset: int, count: int) -> None:
        """Zero-copy body: socket.sendfile uses os.sendfile and honours the timeout."""
        try:
            self.connection.sendfile(handle, offset, count)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (curl -C resumes later)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, root: Path, family: int, limits: HttpLimits):
        self.address_family = family
        self.root_real = Path(os.path.realpath(root))
        self.limits = limits
        self.connections = ConnectionTable(limits)
        super().__init__(address, _Handler)

    def verify_request(self, request, client_address) -> bool:
        """Admit the connection under the caps, or answer 503 without a thread."""
        refused = self.connections.admit(request, client_address[0])
        if refused is None:
            return True
        LOG.info("Boot HTTP: refused a connection from %s: %s", client_address[0], refused)
        body = refused.encode() + b"\n"
        try:  # an empty send buffer takes this at once; never block the accept loop
            request.setblocking(False)
            request.send(_BUSY % (len(body), body))
        except OSError:
            pass
        return False

    def shutdown_request(self, request) -> None:
        self.connections.release(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """One log line per failed connection, not a traceback on stderr."""
        LOG.warning("Boot HTTP: connection from %s failed: %s", client_address[0],
                    sys.exc_info()[1])


class BootHttpServer:
    """The HTTP boot root served on ``host:port``; ``port`` is the bound port after start()."""

    def __init__(self, root: Path, host: str, port: int, limits: HttpLimits | None = None):
        self.root = Path(root)
        self.host = host
        self.port = port
        self.limits = limits or HttpLimits()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def open_connections(self) -> int:
        """Connections open now (each holds one thread)."""
        return len(self._server.connections) if self._server is not None else 0

    def start(self) -> None:
        """Bind and serve in a thread; returns once the socket listens (OSError if not)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._server = _Server((self.host, self.port), self.root, family, self.limits)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="boot-http", daemon=True)
        self._thread.start()
        LOG.info("Boot HTTP server serving %s on %s port %s", self.root, self.host, self.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.connections.close_all()  # wake the threads of kept-alive connections
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None
