"""A small, real Omaha update server for the host update engine's tests.

Stand-in for the appliance's update server (conductor side of issue 16, built in
parallel by another helper against the same contract): until that lands, the engine
is tested against this responder, which follows the contract exactly - Omaha v3 at
``/v1/update/`` (rendered with ``omaha_response.render_response``), content-addressed
payloads with Range at ``/updates/v1/payloads/<sha256>``, and the reboot lease API at
``/updates/v1/leases`` with a TTL. It is a real HTTP server on loopback, in a thread
of the test process; faults are switches on it (stall a download, tamper a payload).
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import threading
import time
from pathlib import Path

from ramdisk_agent.wire import image_signature, omaha


@dataclasses.dataclass
class Release:
    version: str
    full: str                                        #: payload sha256 hex
    deltas: dict[str, str] = dataclasses.field(default_factory=dict)   #: from -> sha


class Responder:
    def __init__(self, key, appid: str):
        self.key, self.appid = key, appid
        self.payloads: dict[str, Path] = {}
        self.signatures: dict[str, bytes] = {}
        self.release: Release | None = None
        self.events: list[tuple[str, omaha.Event]] = []      #: (version, event)
        self.checks: list[omaha.AppRequest] = []
        self.stall_after: int | None = None      #: stop sending after this many bytes
        self.stalled = threading.Event()
        self.stall_reached = False
        self.served: list[str] = []              #: payload names, per GET from byte 0
        self.ranges: list[int] = []              #: start of every ranged GET
        self.tamper = False                      #: flip a byte in every payload served
        self.raw_answer: bytes | None = None     #: sent instead of the Omaha answer
        self.size_lie = 0                        #: added to the offered package size
        self.no_length = False                   #: payloads without Content-Length
        self.lease_raw: tuple[int, bytes] | None = None   #: sent instead of a lease answer
        self.lease_max, self.lease_ttl = 1, 300.0
        self.leases: dict[str, float] = {}       #: holder -> expiry (monotonic)
        self.tokens: dict[str, str] = {}         #: node -> token
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Responder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stalled.set()
        self.server.shutdown()
        self.server.server_close()

    # -- catalogue --------------------------------------------------------------
    def add_payload(self, path: Path) -> str:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        self.payloads[sha] = path
        return sha

    def publish(self, version: str, image: Path, deltas: dict[str, Path] | None = None,
                key=None) -> Release:
        sha = self.add_payload(image)
        size = image.stat().st_size + self.size_lie     # a lying server signs its lie
        self.signatures[sha] = image_signature.sign(key or self.key, bytes.fromhex(sha), size,
                                                    version)
        self.release = Release(version, sha, {old: self.add_payload(path)
                                              for old, path in (deltas or {}).items()})
        return self.release

    def events_of(self, kind: int, result: int | None = None) -> list[omaha.Event]:
        return [e for _, e in self.events if e.type == kind
                and (result is None or e.result == result)]

    # -- Omaha ------------------------------------------------------------------
    def answer(self, body: bytes) -> bytes:
        request = omaha.parse_request(body)
        apps = []
        for app in request.apps:
            with self.lock:
                self.events.extend((app.version, event) for event in app.events)
                if app.updatecheck:
                    self.checks.append(app)
            check = self._check(app) if app.updatecheck else None
            apps.append(omaha.AppResponse(app.appid, "ok", app.ping, len(app.events), check))
        return omaha.render_response(omaha.Response(tuple(apps)))

    def _check(self, app: omaha.AppRequest) -> omaha.UpdateCheck:
        release = self.release
        if release is None or app.version == release.version:
            return omaha.UpdateCheck("noupdate")
        delta = release.deltas.get(app.version) if app.delta_okay else None
        name = delta or release.full
        size = self.payloads[name].stat().st_size + self.size_lie
        manifest = omaha.Manifest(
            release.version, (omaha.Package(name, size, sha256=bytes.fromhex(name)),),
            bytes.fromhex(name), is_delta=delta is not None,
            signature=None if delta else self.signatures[name])
        return omaha.UpdateCheck("ok", (self.url + "/updates/v1/payloads/",), manifest)

    # -- leases -----------------------------------------------------------------
    def lease(self, doc: dict) -> tuple[int, dict]:
        node, token, action = doc.get("node"), doc.get("agent_token"), doc.get("action")
        if not isinstance(node, str) or action not in ("acquire", "renew", "release"):
            return 400, {"error": "bad body"}
        if self.tokens.get(node) != token:
            return 401, {"error": "bad token"}
        with self.lock:
            now = time.monotonic()
            self.leases = {h: t for h, t in self.leases.items() if t > now}
            if action == "release":
                self.leases.pop(node, None)
                return 200, {"held": False, "holders": len(self.leases), "max": self.lease_max}
            if node not in self.leases and len(self.leases) >= self.lease_max:
                return 409, {"held": False, "max": self.lease_max,
                             "holders": len(self.leases), "retry_after": 1}
            self.leases[node] = now + self.lease_ttl
            return 200, {"held": True, "holder": node, "ttl": self.lease_ttl,
                         "max": self.lease_max, "holders": len(self.leases),
                         "expires_at": "later"}

    def holders(self) -> list[str]:
        now = time.monotonic()
        return [h for h, t in self.leases.items() if t > now]


def _handler(responder: Responder):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/v1/update/":
                answer = responder.answer(body)
                self._send(200, responder.raw_answer or answer, "text/xml")
            elif self.path == "/updates/v1/leases" and responder.lease_raw is not None:
                self._send(*responder.lease_raw, "application/json")
            elif self.path == "/updates/v1/leases":
                status, doc = responder.lease(json.loads(body or b"{}"))
                self._send(status, json.dumps(doc).encode(), "application/json")
            else:
                self._send(404, b"not found", "text/plain")

        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            path = responder.payloads.get(name)
            if not self.path.startswith("/updates/v1/payloads/") or path is None:
                self._send(404, b"no such payload", "text/plain")
                return
            size = path.stat().st_size
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                start = int(ranged[6:].split("-")[0])
                responder.ranges.append(start)
            else:
                responder.served.append(name)
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            if responder.no_length:              # the body ends when the connection does
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(size - start))
            self.send_header("ETag", f'"{name}"')
            self.end_headers()
            self._stream(path, start, size)

        def _stream(self, path: Path, start: int, size: int) -> None:
            sent = start
            with open(path, "rb") as handle:
                handle.seek(start)
                while sent < size:
                    if responder.stall_after is not None and sent >= responder.stall_after:
                        responder.stall_reached = True
                        responder.stalled.wait(60)
                        return
                    block = handle.read(1 << 20)
                    if responder.tamper and sent == start:
                        block = bytes([block[0] ^ 1]) + block[1:]
                    self.wfile.write(block)
                    sent += len(block)

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


