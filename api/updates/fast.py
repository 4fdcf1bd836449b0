"""``POST /v1/update/`` answered beside Flask, not through it.

An update check is the one request a whole fleet sends all the time, and Flask's
request machinery (request context, URL matching, the before/after hooks of every
other route: authentication, microversions, NUL checks) cost more than the check
itself. :class:`Dispatch` sends exactly ``POST /v1/update`` (with or without the slash)
to :class:`OmahaApp`, a plain WSGI app; the app factory wraps that in the same body
cap and request-ID middleware as the Flask app (api/__init__.py), so the refusals
and headers are the same. Everything else goes to Flask unchanged. The route is
public on every listener, like the Flask view it shadows (api/updates/public.py,
which still answers under a test client built without this wrapper).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from api import errors as api_errors
from api.throttle import client_of
from api.updates.public import MAX_BODY, XML
from conductor import errors
from ramdisk_agent.wire.errors import WireError

LOG = logging.getLogger(__name__)
PATHS = frozenset({"/v1/update", "/v1/update/"})
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Dispatch:
    def __init__(self, default: WSGIApp, omaha_app: WSGIApp):
        self.default, self.omaha_app = default, omaha_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO") in PATHS:
            return self.omaha_app(environ, start_response)
        return self.default(environ, start_response)


def _fault(status: str, message: str) -> tuple[str, list[tuple[str, str]], bytes]:
    body = api_errors.document(api_errors.client_fault(message))
    return status, [("Content-Type", "application/json"),
                    ("Content-Length", str(len(body)))], body


class OmahaApp:
    """The update check as a WSGI app over ``service.updates``."""

    def __init__(self, updates: Any, public_endpoint: str | None):
        self.updates, self.public_endpoint = updates, public_endpoint

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        status, headers, body = self._answer(environ)
        start_response(status, headers)
        return [body]

    def _answer(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        length = (environ.get("CONTENT_LENGTH") or "").strip()
        wanted = int(length) if length.isdigit() else \
            MAX_BODY + 1 if environ.get("wsgi.input_terminated") else 0
        body = environ["wsgi.input"].read(min(wanted, MAX_BODY + 1)) if wanted else b""
        if len(body) > MAX_BODY:
            return _fault("413 Request Entity Too Large",
                          f"An update request is at most {MAX_BODY} bytes.")
        try:
            answer = self.updates.update_check(body, self._base_url(environ),
                                               client_of(environ.get("REMOTE_ADDR")))
        except WireError as exc:
            return _fault("400 Bad Request", f"Invalid Omaha request: {exc}")
        except errors.MetalcastError as exc:
            status = f"{exc.status_code} {'Error' if exc.status_code >= 500 else 'Refused'}"
            return _fault(status, str(exc))
        except Exception:
            LOG.exception("Update check failed")
            return _fault("500 Internal Server Error", "Internal Server Error; see the "
                          "server log.")
        return "200 OK", [("Content-Type", XML), ("Content-Length", str(len(answer)))], \
            answer

    def _base_url(self, environ: dict[str, Any]) -> str:
        if self.public_endpoint:
            return self.public_endpoint
        host = environ.get("HTTP_HOST") or \
            f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
        return f"{environ.get('wsgi.url_scheme', 'http')}://{host}/"
