"""HTTP boot file server: kernels, ramdisks, iPXE scripts and images, from one root.

A threaded HTTP/1.1 server (keep-alive) for GET and HEAD with single byte ranges
(``Range``/``If-Range`` -> 206/416) and conditional requests (``If-None-Match``
with ETags, ``If-Modified-Since`` -> 304). Bodies go out with ``sendfile(2)``, so
the kernel copies page cache to the socket and the transfer runs at disk or
network speed rather than at Python speed. Paths are confined to the root: no
``..``, no symlinks leading out, no directory listings.
"""
from __future__ import annotations

import email.utils
import logging
import os
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LOG = logging.getLogger(__name__)

#: Content types a boot client may care about; everything else is a byte stream.
CONTENT_TYPES = {".ipxe": "text/plain; charset=utf-8", ".cfg": "text/plain; charset=utf-8",
                 ".json": "application/json", ".txt": "text/plain; charset=utf-8"}
#: Seconds an idle keep-alive connection stays open.
IDLE_TIMEOUT = 60


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """``Range`` header -> (first, last) inclusive, None (serve everything) or "416".

    Only one ``bytes`` range is honoured; several ranges or a malformed header are
    ignored (RFC 9110 lets a server answer those with the whole file).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":  # suffix range: the last N bytes
        if last == "":
            return None
        if int(last) == 0 or size == 0:
            return "416"
        return max(0, size - int(last)), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None  # syntactically invalid: ignore
    if start >= size:
        return "416"
    return start, end


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison, as If-None-Match requires."""
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _parse_date(value: str | None) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError, IndexError):
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "metalcast-boot"
    timeout = IDLE_TIMEOUT

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:  # http.server's naming
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def log_message(self, fmt, *args) -> None:
        LOG.debug("boot http %s: " + fmt, self.client_address[0], *args)

    def _resolve(self) -> Path | None:
        """The regular file the request names inside the root, or None."""
        root: Path = self.server.root_real  # type: ignore[attr-defined]
        path = unquote(urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        if "\x00" in path or any(p in (".", "..") for p in parts) or not parts:
            return None
        real = Path(os.path.realpath(root.joinpath(*parts)))
        if root not in real.parents or not real.is_file():
            return None
        return real

    def _serve(self, send_body: bool) -> None:
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
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPES.get(suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
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

    def __init__(self, address, root: Path, family: int):
        self.address_family = family
        self.root_real = Path(os.path.realpath(root))
        super().__init__(address, _Handler)


class BootHttpServer:
    """The HTTP boot root served on ``host:port``; ``port`` is the bound port after start()."""

    def __init__(self, root: Path, host: str, port: int):
        self.root = Path(root)
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a thread; returns once the socket listens (OSError if not)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._server = _Server((self.host, self.port), self.root, family)
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
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None
