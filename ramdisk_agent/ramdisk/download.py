"""HTTP(S) image download as a byte stream that survives dropped connections.

:class:`HttpStream` reads the body straight into caller-supplied buffers
(``readinto``; no intermediate ``bytes``). ``http.client`` parses the status line
and headers; a body of plain bytes on a plain TCP socket (not chunked, not TLS) is
then read with ``socket.recv_into`` straight into the caller's buffer
(:class:`_SocketBody`), after taking the few body bytes ``http.client`` had
already buffered with the headers. ``http.client``'s own path goes through a
``BufferedReader`` and a Python-level ``SocketIO`` for each ``recv`` of whatever
has arrived; with the direct read the image writer used 0.95 instead of 1.03 CPU
s/GiB (same run, loopback, A/B interleaved), CPU the hash thread wants on a 2-core
machine. Chunked and TLS bodies keep ``http.client``'s reader.

When the connection drops mid-body it reconnects and asks
for ``Range: bytes=<received>-`` (with ``If-Range`` so a changed image is not
spliced onto the old one); a server that answers 200 instead of 206 is handled by
discarding the bytes already received. Only the standard library is used: the agent
runs inside a small Python initramfs.
"""
from __future__ import annotations

import http.client
import logging
import socket
import ssl
import struct
import time
import urllib.parse
from dataclasses import dataclass

from ramdisk_agent.errors import ImageDownloadError

LOG = logging.getLogger(__name__)

SOCKET_BUFFER = 4 << 20      # SO_RCVBUF asked for: fewer wake-ups on a fast link
MAX_REDIRECTS = 5
RETRYABLE = (OSError, http.client.HTTPException)


@dataclass
class DownloadOptions:
    """How to fetch: TLS verification, timeouts and how often to resume."""
    insecure: bool = False
    ca_file: str | None = None
    timeout: float = 60.0
    retries: int = 5             # consecutive failures without progress before giving up
    retry_delay: float = 1.0     # first back-off; doubled on each consecutive failure


class HttpStream:
    """The body of ``url`` as a resumable stream; use as a context manager."""

    def __init__(self, url: str, options: DownloadOptions | None = None):
        self.url = url
        self.options = options or DownloadOptions()
        self.offset = 0                  # body bytes handed to the caller so far
        self.length: int | None = None   # Content-Length of the full body, if known
        self.resumes = 0
        self._validator: str | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None    # the connection's, kept past its close
        self._response: http.client.HTTPResponse | None = None
        self._body: _SocketBody | http.client.HTTPResponse | None = None

    @property
    def direct(self) -> bool:
        """Whether the body is read from the socket directly (plain HTTP, not chunked)."""
        return isinstance(self._body, _SocketBody)

    def __enter__(self) -> HttpStream:
        try:
            self._open()
        except RETRYABLE as exc:   # connection refused/reset: same back-off as a resume
            self._resume(exc, 1)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._response is not None:   # a "Connection: close" response owns the socket
            self._response.close()
        self._conn = self._sock = self._response = self._body = None

    def fill(self, buffer: memoryview) -> int:
        """Read until ``buffer`` is full or the body ends; how many bytes it holds."""
        filled = 0
        while filled < len(buffer):
            got = self.readinto(buffer[filled:])
            if not got:
                break
            filled += got
        return filled

    def readinto(self, buffer: memoryview) -> int:
        """Fill as much of ``buffer`` as one read gives; 0 only at the real end."""
        failures = 0
        while True:
            assert self._body is not None, "read after close"
            try:
                count = self._body.readinto(buffer)
            except RETRYABLE as exc:
                count, error = 0, exc
            else:
                if count or self.length is None or self.offset >= self.length:
                    self.offset += count
                    return count
                error = ConnectionError(
                    f"connection closed at byte {self.offset} of {self.length}")
            failures += 1
            self._resume(error, failures)

    def _resume(self, error: Exception, failures: int) -> None:
        """Reconnect after ``error`` and continue at ``self.offset``."""
        if isinstance(error, ssl.SSLCertVerificationError):   # retrying cannot help
            raise ImageDownloadError(f"TLS verification of {self.url} failed: {error}")
        if failures > self.options.retries:
            raise ImageDownloadError(
                f"Download of {self.url} failed at byte {self.offset} after "
                f"{failures - 1} retries: {error}")
        delay = self.options.retry_delay * (2 ** (failures - 1))
        LOG.warning("Download of %s interrupted at byte %s (%s); resuming in %.1fs",
                    self.url, self.offset, error, delay)
        time.sleep(delay)
        self.close()
        try:
            self._open()
        except ImageDownloadError:
            raise
        except RETRYABLE as exc:
            self._resume(exc, failures + 1)
            return
        self.resumes += bool(self.offset)

    def _open(self) -> None:
        """Send the GET (ranged when resuming) and leave the body ready to read."""
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(url)
            if response.status in (301, 302, 303, 307, 308):
                url = urllib.parse.urljoin(url, response.getheader("Location", ""))
                response.close()
                continue
            self._accept(response)
            return
        raise ImageDownloadError(f"Too many redirects fetching {self.url}")

    def _request(self, url: str) -> http.client.HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageDownloadError(f"Unsupported image URL {url!r}: only http(s) is supported")
        self._conn = self._connection(parts)
        # getresponse() drops conn.sock when the server will close the connection (the
        # response's reader keeps it open): the direct body reader needs it after that.
        self._sock = self._conn.sock
        headers = {"Accept-Encoding": "identity", "User-Agent": "metalcast-agent"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
            if self._validator:
                headers["If-Range"] = self._validator
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        self._conn.request("GET", path, headers=headers)
        return self._conn.getresponse()

    def _connection(self, parts) -> http.client.HTTPConnection:
        port, timeout = parts.port, self.options.timeout
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=self.options.ca_file)
            if self.options.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
        conn.connect()
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        return conn

    def _accept(self, response: http.client.HTTPResponse) -> None:
        """Check the status; on a resume, line the new body up with ``offset``."""
        if response.status == 206 and self.offset:
            start = _content_range_start(response.getheader("Content-Range", ""))
            if start != self.offset:
                raise ImageDownloadError(
                    f"Server resumed {self.url} at byte {start}, asked for {self.offset}")
        elif response.status == 200:
            if self.length is None and response.length is not None:
                self.length = response.length
            self._validator = (response.getheader("ETag")
                               or response.getheader("Last-Modified"))
            self._response = response     # before the skip, which reads through it
            if self.offset:
                LOG.info("Server ignored the Range request for %s; skipping %s bytes",
                         self.url, self.offset)
                self._skip(self.offset)
        else:
            body = response.read(200).decode("utf-8", "replace")
            raise ImageDownloadError(
                f"Image download from {self.url} failed: HTTP {response.status} "
                f"{response.reason} {body.strip()}")
        self._response = response
        self._body = _SocketBody.of(response, self._sock) or response

    def _skip(self, count: int) -> None:
        scratch = memoryview(bytearray(1 << 20))
        assert self._response is not None
        while count:
            got = self._response.readinto(scratch[:min(count, len(scratch))])
            if not got:
                raise ConnectionError("connection closed while skipping to the resume point")
            count -= got


class _SocketBody:
    """The rest of a plain (identity, unencrypted) response body, read from the socket.

    ``http.client`` reads the headers through a ``BufferedReader`` that may already
    hold the first body bytes: reads take those with ``read1`` (which returns only
    buffered bytes if there are any, else makes one read) until one returns less
    than asked, which proves that reader empty; every later read is one
    ``recv_into(MSG_WAITALL)`` into the caller's buffer, never past ``Content-Length``.

    ``MSG_WAITALL`` makes the kernel fill the whole buffer (4 MiB in the image
    writer) in one call
    instead of returning each ~300 KiB that has arrived: 256 calls per GiB instead
    of ~2,400, fewer wake-ups of this thread and of the sender (measured on
    loopback: 0.19 instead of 0.21 CPU s/GiB here, 0.20 instead of 0.22 in the
    server). It needs a blocking socket (Python's timeout mode is non-blocking
    underneath, where the flag is ignored), so the connection's timeout becomes
    ``SO_RCVTIMEO``: a call that waits that long returns what it has, or, with
    nothing, fails with ``TimeoutError`` as the ``http.client`` path does.
    """

    def __init__(self, fp, sock: socket.socket, length: int | None):
        self._fp = fp             # http.client's reader: kept, it may hold the socket open
        self._drained = False     # whether every byte it buffered was taken
        self._sock = sock
        self._timeout = sock.gettimeout()
        self.left = length        # None: the body ends when the server closes

    @classmethod
    def of(cls, response: http.client.HTTPResponse,
           sock: socket.socket | None) -> _SocketBody | None:
        """The direct reader for ``response``, or None when it needs ``http.client``."""
        if response.chunked or response.fp is None or isinstance(sock, ssl.SSLSocket) \
                or not isinstance(sock, socket.socket):
            return None
        return cls(response.fp, sock, response.length)

    def readinto(self, buffer: memoryview) -> int:
        view = memoryview(buffer)
        if self.left is not None:
            view = view[:self.left]
        if not view:
            return 0
        if not self._drained:
            data = self._fp.read1(len(view))
            got = len(data)
            self._drained = got < len(view)
            view[:got] = data
            if self._drained:
                self._block()
        else:
            try:
                got = self._sock.recv_into(view, len(view), socket.MSG_WAITALL)
            except BlockingIOError:   # SO_RCVTIMEO expired with nothing received
                raise TimeoutError(f"no data for {self._timeout}s") from None
        if self.left is not None:
            self.left -= got
        return got

    def _block(self) -> None:
        """Blocking mode (for MSG_WAITALL) with the connection's timeout in the kernel."""
        self._sock.settimeout(None)
        if self._timeout:
            seconds = int(self._timeout)
            micro = int((self._timeout - seconds) * 1e6)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                  struct.pack("ll", seconds, micro))


def _content_range_start(value: str) -> int | None:
    """First byte of ``Content-Range: bytes START-END/TOTAL``."""
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None
