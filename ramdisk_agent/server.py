"""The agent's command API (IPA's paths and shapes) over HTTPS, standard library only.

Paths: ``GET /``, ``GET /v1/``, ``GET /v1/status``, ``GET|POST /v1/commands/``,
``GET /v1/commands/<id>[?wait=true]``, and the same without ``/v1``. Command
endpoints need ``?agent_token=<token from lookup>`` (401 "Token invalid."
otherwise). Errors are ``{faultcode, faultstring}``. The TLS certificate is
self-signed, generated at start (ramdisk_agent/selfsigned.py) and sent to the API as
``agent_verify_ca`` with each heartbeat, so the conductor can pin it.

No web framework: every agent (one per machine being deployed, and under TCG
Python start-up is seconds) would pay for importing one, and the API is six routes.
:class:`CommandApi` routes a request to a ``(status, JSON body)``; it serves
HTTP/1.1 with keep-alive (the conductor keeps one session) from :func:`serve_https`
and is also a WSGI application, which the unit tests drive with a test client.

The agent runs in a ramdisk where memory is the disk, so nothing from an
unauthenticated client is held: the route, method and token are checked from the
request line before a byte of body is read (``CommandApi.body_limit``), only
``POST /v1/commands/`` takes a body at all, and connections are bounded in total
and per client address (``connections.Connections``; over a cap the longest-idle
connection makes room).
"""
from __future__ import annotations

import hmac
import http
import json
import logging
import os
import re
import socket
import socketserver
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from ramdisk_agent import __version__
from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.connections import Connections
from ramdisk_agent.errors import (
    AgentError,
    BodyTooLarge,
    InvalidContent,
    MethodNotAllowed,
    RequestedObjectNotFound,
    TokenInvalid,
)
from ramdisk_agent.ramdisk.configdrive import MAX_CONFIGDRIVE

LOG = logging.getLogger(__name__)
WAIT_LIMIT = 3600.0
#: The largest body: write_image's params with the largest config drive the agent
#: accepts inline (configdrive.MAX_CONFIGDRIVE, Ironic's 64 MiB), base64 of an
#: incompressible ISO (4/3) plus gzip framing, and 1 MiB for the other params. A
#: Nova/metalsmith config drive is tens of KiB; only an authenticated POST gets this.
MAX_BODY = 4 * -(-(MAX_CONFIGDRIVE + (64 << 10)) // 3) + (1 << 20)
IDLE_TIMEOUT = 300.0         # an idle keep-alive connection is closed after this
HANDSHAKE_TIMEOUT = 10.0     # per read while the TLS handshake runs
LINGER = 2.0                 # s a refused body is read and dropped, so its client can
                             # read the refusal instead of a reset (Apache's lingering close)
MAX_CONNECTIONS = 8          # open connections in total (one thread each)
MAX_PER_CLIENT = 4           # ... from one address (the conductor needs one or two)
_TOKEN_RE = re.compile(r"(agent_token=)[^&\s]+")
#: Path (without the optional /v1 prefix) -> method -> (handler name, token needed).
_ROUTES = {"/status": {"GET": ("_status", False)},
           "/commands": {"GET": ("_list", True), "POST": ("_run", True)}}
#: The handlers that read a body; every other request may send none.
_BODY_HANDLERS = frozenset({"_run"})
_COMMAND_RE = re.compile(r"^/commands/([^/]+)$")


def _fault(status: int, message: str) -> dict:
    return {"faultcode": "Client" if status < 500 else "Server", "faultstring": message}


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


def _wanted(query: dict, name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("true", "1", "yes")


class CommandApi:
    """The command API: ``dispatch()`` for the HTTPS server, ``__call__`` for WSGI."""

    def __init__(self, runner: CommandRunner, token: Callable[[], str | None]):
        self.runner, self.token, self.started = runner, token, time.time()

    def dispatch(self, method: str, path: str, query: str, body: bytes,
                 host_url: str) -> tuple[int, dict]:
        """One request -> (HTTP status, JSON document)."""
        try:
            return 200, self._route(method, path, urllib.parse.parse_qs(query), body,
                                    host_url)
        except AgentError as exc:
            return exc.status_code, exc.fault()
        except Exception:  # a bug answers 500, the agent lives on
            LOG.exception("Command API: %s %s failed", method, path)
            return 500, _fault(500, "The server encountered an internal error.")

    def body_limit(self, method: str, path: str, query: str, length: int) -> int:
        """Bytes of body to read for this request, decided before any is read: the
        route's 404/405 and a wrong token's 401 are raised first, a ``length`` above
        the route's limit is a 413. Routes without a body read none (0) of what is sent."""
        handler, _, needs_token = self._match(method, path)
        if needs_token:
            self._check_token(urllib.parse.parse_qs(query))
        if handler not in _BODY_HANDLERS:
            return 0
        if length > MAX_BODY:
            raise BodyTooLarge(f"A body needs a Content-Length of at most {MAX_BODY} bytes")
        return length

    def _route(self, method: str, path: str, query: dict, body: bytes, host_url: str):
        handler, ident, needs_token = self._match(method, path)
        if needs_token:
            self._check_token(query)
        if handler == "_root":
            return self._root(host_url)
        if handler == "_version":
            return self._version(host_url)
        if ident is not None:
            result = self.runner.get(ident)
            if _wanted(query, "wait"):
                result.done.wait(WAIT_LIMIT)
            return result.serialize()
        return getattr(self, handler)(query, body)

    @staticmethod
    def _match(method: str, path: str) -> tuple[str, str | None, bool]:
        """(handler name, command id or None, token needed); 404/405 otherwise."""
        if path in ("/", "/v1", "/v1/"):
            return CommandApi._get_only(method, "_root" if path == "/" else "_version"), \
                None, False
        rest = path[3:] if path.startswith("/v1/") else path
        rest = rest.rstrip("/") or "/"
        match = _COMMAND_RE.match(rest)
        if match:
            return CommandApi._get_only(method, "_command"), match.group(1), True
        methods = _ROUTES.get(rest)
        if methods is None:
            raise RequestedObjectNotFound("The requested URL was not found on the server.")
        if method not in methods:
            raise MethodNotAllowed()
        handler, needs_token = methods[method]
        return handler, None, needs_token

    @staticmethod
    def _get_only(method: str, handler: str) -> str:
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed()
        return handler

    def _check_token(self, query: dict) -> None:
        expected = self.token()
        given = query.get("agent_token", [""])[-1]
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise TokenInvalid()

    @staticmethod
    def _version(host_url: str) -> dict:
        return {"id": "v1", "links": [{"href": host_url + "v1/", "rel": "self"}]}

    def _root(self, host_url: str) -> dict:
        v1 = self._version(host_url)
        return {"name": "metalcast-agent", "version": __version__,
                "description": "metalcast ramdisk agent (ironic-python-agent API)",
                "versions": [v1], "default_version": v1}

    def _status(self, query: dict, body: bytes) -> dict:
        return {"started_at": self.started, "version": __version__}

    def _list(self, query: dict, body: bytes) -> dict:
        return {"commands": [r.serialize() for r in self.runner.list()]}

    def _run(self, query: dict, body: bytes) -> dict:
        try:  # NaN/Infinity are not JSON; a deep nesting overflows the parser's stack
            request = json.loads(body, parse_constant=_not_json) if body.strip() else None
        except (ValueError, RecursionError):
            request = None
        if not isinstance(request, dict) or "name" not in request:
            raise InvalidContent('Body must be a JSON object {"name": ..., "params": {...}}')
        result = self.runner.execute(request["name"], request.get("params") or {})
        if _wanted(query, "wait"):
            result.done.wait(WAIT_LIMIT)
        return result.serialize()

    # -- WSGI (the unit tests' client) -------------------------------------------
    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"
        query = environ.get("QUERY_STRING", "")
        try:
            length = self.body_limit(method, path, query,
                                     int(environ.get("CONTENT_LENGTH") or 0))
        except AgentError as exc:
            status, document = exc.status_code, exc.fault()
        else:
            body = environ["wsgi.input"].read(length) if length else b""
            host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "localhost")
            status, document = self.dispatch(method, path, query, body,
                                             f"{environ['wsgi.url_scheme']}://{host}/")
        data = json.dumps(document).encode()
        start_response(f"{status} {http.HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(data)))])
        return [data]


def create_app(runner: CommandRunner, token: Callable[[], str | None]) -> CommandApi:
    """The command API; ``token()`` returns the token from lookup (None before)."""
    return CommandApi(runner, token)


def make_certificate(host: str, directory: str) -> tuple[str, str, str]:
    """Self-signed EC certificate for ``host`` (ramdisk_agent/selfsigned.py);
    (cert path, key path, PEM text). The key file is 0600."""
    from ramdisk_agent import selfsigned
    cert_pem, key_pem = selfsigned.certificate(host)
    cert_path, key_path = os.path.join(directory, "agent.crt"), os.path.join(directory, "agent.key")
    with open(cert_path, "wb") as f:
        f.write(cert_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    return cert_path, key_path, cert_pem.decode("ascii")


class RedactingRequestHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection (keep-alive) to the command API. Its request log line
    has no agent token, which the conductor sends in the query string (IPA's
    protocol): the log ends up on the serial console."""

    server: HttpsServer
    protocol_version = "HTTP/1.1"
    server_version = f"metalcast-agent/{__version__}"
    timeout = IDLE_TIMEOUT
    # Headers and body go out in separate writes: with Nagle on, the body would wait
    # for the client's delayed ACK (40 ms per request on a kept-alive connection).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        connections = self.server.connections
        connections.busy(self.connection)
        try:
            self._answer(method)
        finally:
            self._continue = False  # per request (set by handle_expect_100)
            connections.idle(self.connection)

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue`` is answered only once the token and the length are
        accepted (in ``_answer``): a refused client never sends its body at all."""
        self._continue = True
        return True

    def _answer(self, method: str) -> None:
        """Refuse from the request line and headers alone, or read the body and run it."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        chunked = "Transfer-Encoding" in self.headers
        if length < 0 or chunked:
            self.close_connection = True  # 411 chunked, 400 unreadable
            status = 411 if chunked else 400
            return self._reply(status, _fault(
                status, "A body needs a Content-Length of at most %d bytes" % MAX_BODY))
        path, _, query = self.path.partition("?")
        try:  # route, method and token before a byte of the body is read
            wanted = self.server.app.body_limit(method, path, query, length)
        except AgentError as exc:
            if length > 0:  # the body is left unread: no next request on this stream
                self.close_connection = True
            self._reply(exc.status_code, exc.fault())
            return self._discard(length)
        if wanted and getattr(self, "_continue", False):
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.rfile.read(wanted) if wanted else b""
        if wanted < length:  # a body this route takes none of
            self.close_connection = True
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        self._reply(*self.server.app.dispatch(method, path, query, body, f"https://{host}/"))
        self._discard(length - wanted)

    def _discard(self, count: int) -> None:
        """Read and drop up to ``count`` bytes of a body nobody will use, for at most
        LINGER s, through one small buffer: a client still sending it then reads the
        answer rather than a reset, and no byte of it is kept."""
        if count <= 0 or getattr(self, "_continue", False):  # Expect: it sent none
            return
        self.server.connections.idle(self.connection)  # answered: may make room at once
        deadline, chunk = time.monotonic() + LINGER, bytearray(1 << 16)
        try:
            while count > 0 and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                got = self.rfile.readinto(memoryview(chunk)[:min(count, len(chunk))])
                if not got:
                    break
                count -= got
        except (OSError, ValueError):  # gone, timed out, or TLS torn down
            pass

    def _reply(self, status: int, document: dict) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code, message=None, explain=None) -> None:
        """http.server's own refusals (a broken request line, a header too long, a
        method with no handler) as the API's JSON fault instead of an HTML page; a
        method this API does not serve is 405, as on every route."""
        status = http.HTTPStatus(code)
        if status is http.HTTPStatus.NOT_IMPLEMENTED:
            status = http.HTTPStatus.METHOD_NOT_ALLOWED
            message = "The method is not allowed for the requested URL."
        if self.request_version in ("", "HTTP/0.9"):  # the request line was not HTTP
            self.request_version = self.protocol_version  # answer with a status line
        self.log_error("code %d, message %s", status.value, message)
        self.close_connection = True
        self._reply(status.value, _fault(status.value, message or status.phrase))

    def log_request(self, code="-", size="-") -> None:
        code = getattr(code, "value", code)
        LOG.info('%s "%s" %s %s', self.client_address[0],
                 _TOKEN_RE.sub(r"\1***", self.requestline), code, size)

    def log_message(self, format, *args) -> None:  # noqa: A002 - http.server's name
        LOG.warning("%s %s", self.client_address[0], _TOKEN_RE.sub(r"\1***", format % args))


class HttpsServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Threaded HTTPS server; the TLS handshake runs in the connection's thread, so
    a slow or broken client never holds up ``accept``. Connections over the caps
    (``connections.Connections``) are closed at once, before any TLS."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, app: CommandApi, context: ssl.SSLContext):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app, self.context = app, context
        self.connections = Connections(MAX_CONNECTIONS, MAX_PER_CLIENT)
        super().__init__((host, port), RedactingRequestHandler)

    @property
    def server_port(self) -> int:
        return self.server_address[1]

    def verify_request(self, request, client_address) -> bool:
        if self.connections.admit(request, client_address[0]):
            return True
        LOG.warning("Command API: refused a connection from %s: too many connections",
                    client_address[0])
        return False

    def shutdown_request(self, request) -> None:
        self.connections.release(request)
        super().shutdown_request(request)

    def finish_request(self, request, client_address) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:  # the table tracks the TLS socket before the handshake can block
            tls = self.context.wrap_socket(request, server_side=True,
                                           do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as exc:
            LOG.warning("Command API: TLS setup with %s failed: %s", client_address[0], exc)
            return
        self.connections.rekey(request, tls)
        try:
            try:
                tls.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                LOG.warning("Command API: TLS handshake with %s failed: %s",
                            client_address[0], exc)
                return
            tls.settimeout(IDLE_TIMEOUT)
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]
        finally:
            self.connections.release(tls)
            tls.close()

    def handle_error(self, request, client_address) -> None:
        """A peer that went away is one log line; anything else logs its traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            LOG.warning("Command API: connection from %s lost: %s", client_address[0],
                        sys.exc_info()[1])
            return
        LOG.exception("Command API: request from %s failed", client_address[0])


def serve_https(app: CommandApi, host: str, port: int, cert_path: str,
                key_path: str) -> HttpsServer:
    """A threaded HTTPS server (not started); ``.server_port`` is the bound port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return HttpsServer(host, port, app, context)
