"""Small loopback HTTP peers for the Redfish tests, each a real socket server.

* ``FileServer``: serves fixed files (the ISO the emulator downloads on insert)
  and records what was fetched.
* ``RecordingProxy``: forwards to the emulator and records request bodies, so a
  test can see the ``BootSourceOverrideEnabled`` we sent (the emulator ignores it).
* ``FaultyRedfish``: a service root and system collection, and HTTP 500 on the system.
* ``SilentPeer``: a TCP listener that never answers (read timeouts).

``run_emulator`` wraps virtlab.redfish for module-scoped fixtures.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from virtlab.redfish import start_emulator, stop_emulator


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 with a kernel-chosen port, in a thread."""

    handler: type[BaseHTTPRequestHandler]

    def __init__(self):
        self.requests: list[tuple[str, str, bytes]] = []
        handler = type("Handler", (self.handler,), {"peer": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, and the client knows it. With HTTP/1.1
    # and no "Connection: close" in the answer, urllib3 pools the socket this
    # handler is about to close and may send the next request into it
    # (RemoteDisconnected), a race that made these peers flaky.
    peer: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):  # keep pytest output readable
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _record(self) -> bytes:
        body = self._body()
        self.peer.requests.append((self.command, self.path, body))
        return body

    def _send(self, status: int, body: bytes, content_type="application/json",
              headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _FileHandler(_Handler):
    def do_GET(self):
        self._record()
        data = self.peer.files.get(self.path)
        if data is None:
            self._send(404, b"not found", "text/plain")
        else:
            self._send(200, data, "application/octet-stream")

    do_HEAD = do_GET


class FileServer(_Server):
    handler = _FileHandler

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        super().__init__()


#: Headers that belong to one hop, not to the message (RFC 9110 §7.6.1).
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length",
               "proxy-connection", "te", "upgrade", "trailer"}


class _ProxyHandler(_Handler):
    def _forward(self):
        body = self._record()
        upstream = urlsplit(self.peer.upstream)
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        self._send(response.status, data, response.getheader("Content-Type", "text/plain"),
                   [(k, v) for k, v in response.getheaders()
                    if k.lower() not in HOP_HEADERS | {"content-type"}])

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward


class RecordingProxy(_Server):
    handler = _ProxyHandler

    def __init__(self, upstream: str):
        self.upstream = upstream
        super().__init__()

    def bodies(self, method: str) -> list[dict]:
        return [json.loads(body) for m, _, body in self.requests if m == method and body]


def _error(message: str) -> bytes:
    return json.dumps({"error": {"code": "Base.1.0.InternalError", "message": message,
                                 "@Message.ExtendedInfo": [{"Message": message,
                                                            "Severity": "Critical"}]}}
                      ).encode()


class _FaultyHandler(_Handler):
    ROOT = {"@odata.id": "/redfish/v1/", "Id": "RootService", "RedfishVersion": "1.5.0",
            "Systems": {"@odata.id": "/redfish/v1/Systems"}}
    SYSTEMS = {"@odata.id": "/redfish/v1/Systems", "Members@odata.count": 1,
               "Members": [{"@odata.id": "/redfish/v1/Systems/1"}]}

    def do_GET(self):
        self._record()
        path = self.path.rstrip("/")
        if path == "/redfish/v1":
            self._send(200, json.dumps(self.ROOT).encode())
        elif path == "/redfish/v1/Systems":
            self._send(200, json.dumps(self.SYSTEMS).encode())
        else:
            self._send(500, _error("Internal BMC fault (simulated)"))

    def do_POST(self):
        self._record()
        self._send(404, _error("no such resource"))


class FaultyRedfish(_Server):
    handler = _FaultyHandler


class SilentPeer:
    """Accepts TCP connections (the kernel's backlog does) and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def stop(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_emulator(tmp_path_factory, name: str, **kwargs):
    """Fixture body: a virtlab.redfish emulator in a fresh state dir, stopped by PID."""
    try:
        emulator = start_emulator(tmp_path_factory.mktemp(name), quiet=True, **kwargs)
    except RuntimeError as exc:  # missing sushy-tools or a broken install: fail, never skip
        pytest.fail(f"cannot start the Redfish emulator: {exc}")
    try:
        yield emulator
    finally:
        stop_emulator(emulator)
