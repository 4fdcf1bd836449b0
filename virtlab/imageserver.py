"""A small HTTP image server for the virtual lab, tests and benchmarks.

Serves the files of one directory with ``sendfile``, ``HEAD``, single ``Range``
requests (206/416), ``ETag``/``If-Range``, and optional fault injection: with
``drop_after=N`` the first ``GET`` of each file is cut after N body bytes (the
connection is closed), which is how the agent's resume is tested against a real
socket; with ``hold_after=N`` every ``GET`` sends N body bytes and the rest only once
``release()`` is called, which keeps a download in progress for as long as a test
needs (e.g. to kill the agent or its conductor mid-write). Paths are confined to the
directory.

Run it as a process: ``python -m virtlab.imageserver DIR [--port 0] [--drop-after N]``;
it prints ``IMAGESERVER {"url": ...}`` once listening (see ``virtlab.process``).
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import ssl
import sys
import threading
import urllib.parse

RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")
HOLD_LIMIT = 600.0      #: seconds a held body waits for release() at most


class ImageHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ImageServer

    def log_message(self, fmt, *args):  # quiet: the tests read the request log instead
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self._resolve()
        if path is None:
            self._status(404)
            return
        size, etag = os.path.getsize(path), self._etag(path)
        start, end, status = self._range(size, etag)
        if status == 416:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.record(self.command, self.path, self.headers.get("Range"))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if body:
            self._send_body(path, start, end)

    def _resolve(self) -> str | None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        path = os.path.realpath(os.path.join(self.server.root, rel))
        if not path.startswith(self.server.root + os.sep) or not os.path.isfile(path):
            return None
        return path

    @staticmethod
    def _etag(path: str) -> str:
        st = os.stat(path)
        return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'

    def _range(self, size: int, etag: str) -> tuple[int, int, int]:
        header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if not header or (if_range and if_range != etag):
            return 0, size, 200
        match = RANGE_RE.match(header.strip())
        if not match or not (match.group(1) or match.group(2)):
            return 0, size, 200
        first, last = match.groups()
        if not first:       # suffix range: the last N bytes
            start, end = max(0, size - int(last)), size
        else:
            start, end = int(first), min(size, int(last) + 1 if last else size)
        if start >= size or start >= end:
            return 0, 0, 416
        return start, end, 206

    def _send_body(self, path: str, start: int, end: int) -> None:
        limit = end
        drop = self.server.take_drop(path)
        if drop is not None:
            limit = min(end, start + drop)
        with open(path, "rb") as f:
            if self.server.hold_after is not None:
                held = min(limit, start + self.server.hold_after)
                self._copy(f, start, held)
                self.server.released.wait(HOLD_LIMIT)
                start = held
            self._copy(f, start, limit)
        if limit < end:
            self.close_connection = True
            self.connection.shutdown(2)

    def _copy(self, f, start: int, end: int) -> None:
        """Bytes ``[start, end)`` of the open file ``f`` to the client."""
        if end <= start:
            return
        if isinstance(self.connection, ssl.SSLSocket):   # sendfile would bypass TLS
            f.seek(start)
            while (left := end - f.tell()) > 0 and (data := f.read(min(left, 1 << 20))):
                self.connection.sendall(data)
        else:
            self.connection.sendfile(f, start, end - start)

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


class ImageServer(http.server.ThreadingHTTPServer):
    """Serves ``root``; ``requests`` records (method, path, Range header)."""

    daemon_threads = True

    def __init__(self, root: str, host: str = "127.0.0.1", port: int = 0,
                 drop_after: int | None = None, tls: tuple[str, str] | None = None,
                 hold_after: int | None = None):
        super().__init__((host, port), ImageHandler)
        self.scheme = "http"
        if tls:      # (certificate, key) PEM files: serve HTTPS
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.socket = context.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"
        self.root = os.path.realpath(root)
        self.drop_after = drop_after
        self.hold_after = hold_after
        self.released = threading.Event()
        self.requests: list[tuple[str, str, str | None]] = []
        self._dropped: set[str] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)
        return f"{self.scheme}://{host}:{port}"

    def record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, range_header))

    def take_drop(self, path: str) -> int | None:
        """The byte count to cut this GET after (only the first GET of each file)."""
        with self._lock:
            if self.drop_after is None or path in self._dropped:
                return None
            self._dropped.add(path)
            return self.drop_after

    def release(self) -> None:
        """Let every held body (``hold_after``) go on, now and from now on."""
        self.released.set()

    def start_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--drop-after", type=int)
    args = parser.parse_args(argv)
    server = ImageServer(args.root, args.host, args.port, args.drop_after)
    print("IMAGESERVER " + json.dumps({"url": server.url}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
