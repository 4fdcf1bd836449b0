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
from ramdisk_agent.errors import (
    AgentError,
    InvalidContent,
    MethodNotAllowed,
    RequestedObjectNotFound,
    TokenInvalid,
)

LOG = logging.getLogger(__name__)
WAIT_LIMIT = 3600.0
MAX_BODY = 64 << 20          # a config drive is the largest thing ever posted
IDLE_TIMEOUT = 300.0         # an idle keep-alive connection is closed after this
_TOKEN_RE = re.compile(r"(agent_token=)[^&\s]+")
#: Path (without the optional /v1 prefix) -> method -> (handler name, token needed).
_ROUTES = {"/status": {"GET": ("_status", False)},
           "/commands": {"GET": ("_list", True), "POST": ("_run", True)}}
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

    def _route(self, method: str, path: str, query: dict, body: bytes, host_url: str):
        if path == "/":
            return self._get_only(method, self._root(host_url))
        if path in ("/v1", "/v1/"):
            return self._get_only(method, self._version(host_url))
        rest = path[3:] if path.startswith("/v1/") else path
        rest = rest.rstrip("/") or "/"
        match = _COMMAND_RE.match(rest)
        if match:
            self._get_only(method, None)
            self._check_token(query)
            result = self.runner.get(match.group(1))
            if _wanted(query, "wait"):
                result.done.wait(WAIT_LIMIT)
            return result.serialize()
        methods = _ROUTES.get(rest)
        if methods is None:
            raise RequestedObjectNotFound("The requested URL was not found on the server.")
        if method not in methods:
            raise MethodNotAllowed()
        handler, needs_token = methods[method]
        if needs_token:
            self._check_token(query)
        return getattr(self, handler)(query, body)

    @staticmethod
    def _get_only(method: str, document):
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed()
        return document

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
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "localhost")
        status, document = self.dispatch(
            environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/",
            environ.get("QUERY_STRING", ""), body, f"{environ['wsgi.url_scheme']}://{host}/")
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
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        chunked = "Transfer-Encoding" in self.headers
        if length < 0 or length > MAX_BODY or chunked:
            self.close_connection = True  # 411 chunked, 400 unreadable, 413 too long
            status = 411 if chunked else 400 if length < 0 else 413
            return self._reply(status, _fault(
                status, "A body needs a Content-Length of at most %d bytes" % MAX_BODY))
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        self._reply(*self.server.app.dispatch(method, path, query, body, f"https://{host}/"))

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
    a slow or broken client never holds up ``accept``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, app: CommandApi, context: ssl.SSLContext):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app, self.context = app, context
        super().__init__((host, port), RedactingRequestHandler)

    @property
    def server_port(self) -> int:
        return self.server_address[1]

    def finish_request(self, request, client_address) -> None:
        request.settimeout(IDLE_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            LOG.warning("Command API: TLS handshake with %s failed: %s", client_address[0],
                        exc)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]
        finally:
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
