"""Request body caps, per route, applied before authentication and before a body is read.

Every route takes at most ``[api] max_request_body_size`` bytes (112 KiB, the cap
Ironic's API has through oslo.middleware): JSON documents, the public heartbeat
included, are far smaller. A few routes take more (:data:`LARGE_BODIES`); those are
authenticated, and a view reads its body only after ``api/auth.py`` has checked the
credentials. The cap is chosen from the route the URL map matches (a path no route
matches gets the default), so a new route cannot be forgotten.

:class:`BodyLimitMiddleware` wraps the Flask app (WSGI): it reads ``Content-Length``
and the route, and answers 413 with Ironic's error body before anything reads the
body; a body without a length (chunked) is counted as it streams. Under ``metalcast
serve`` the same caps already bite one step earlier, in waitress's request parser
(api/http_server.py), which would otherwise buffer up to the largest cap to disk
before the app is even called.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import flask
from werkzeug import exceptions as http

from api import errors
from api.console import patches as console_patches
from api.starlingx import patching
from api.updates import operator, public
from api.v1 import microversion, nodes

LOG = logging.getLogger(__name__)

#: Ironic's cap on a request body ([oslo_middleware] max_request_body_size, 112 KiB).
DEFAULT_LIMIT = 114688
#: A config drive (gzipped, base64) sent with ``PUT .../states/provision``.
CONFIGDRIVE_LIMIT = 64 << 20
#: View -> its larger cap. Only views behind authentication belong here.
LARGE_BODIES: dict[Callable, int] = {
    patching.upload: patching.MAX_UPLOAD,
    console_patches.upload_patch: patching.MAX_UPLOAD,   # the console's patch upload
    nodes.set_provision_state: CONFIGDRIVE_LIMIT,
    operator.upload_image: operator.MAX_UPLOAD,
}
#: View -> its smaller cap: the public Omaha endpoint takes at most 64 KiB of XML
#: (update_engine's requests are ~1 KiB; ramdisk_agent/wire/omaha_xml.py).
SMALL_BODIES: dict[Callable, int] = {public.update_check: public.MAX_BODY}
#: app.extensions key of the app's :class:`BodyLimits`.
EXTENSION = "metalcast.body_limits"
#: At most this many (method, path) caps of routes without variables are remembered.
STATIC_ENTRIES = 1024


class BodyLimits:
    """The body cap of each route of one Flask app."""

    def __init__(self, app: flask.Flask, default: int = DEFAULT_LIMIT,
                 large: dict[Callable, int] | None = None):
        self.app, self.default = app, default
        self.large = LARGE_BODIES if large is None else large
        # (method, path) -> cap of the paths a route without variables matched: an
        # update check or a GET /v1 skips two URL-map matches (waitress's parser and
        # the middleware each ask; ~4 us each). Only routes without variables are kept,
        # so the entries are bounded by the URL map (and STATIC_ENTRIES besides).
        self._static: dict[tuple[str, str], int] = {}

    def cap(self, method: str, path: str) -> int:
        """The most bytes a ``method`` request to ``path`` may carry."""
        known = self._static.get((method, path))
        if known is not None:
            return known
        adapter = self.app.url_map.bind("metalcast")
        try:
            endpoint, arguments = adapter.match("/" + path.lstrip("/"),
                                                method=method.upper())
        except http.HTTPException:  # no such route (404, 405; redirects are exceptions too)
            return self.default
        cap = self._view_cap(self.app.view_functions.get(endpoint))
        if not arguments and len(self._static) < STATIC_ENTRIES:
            self._static[(method, path)] = cap
        return cap

    def _view_cap(self, view: Callable | None) -> int:
        if view in SMALL_BODIES:
            return min(SMALL_BODIES[view], self.default)
        return max(self.large.get(view, self.default), self.default) if view else self.default

    def is_large(self, cap: int) -> bool:
        """True for a cap above the default: a route that needs credentials."""
        return cap > self.default


def too_large_message(cap: int) -> str:
    return (f"The request body is too large: this route accepts at most {cap} bytes "
            "(see [api] max_request_body_size).")


def refusal(status: str, message: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """Status, headers and Ironic's error body of a request refused before the app runs
    (also used by waitress's request parser, api/http_server.py)."""
    body = errors.document(errors.client_fault(message))
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               (microversion.MIN_HEADER, microversion.text(microversion.MIN_VERSION)),
               (microversion.MAX_HEADER, microversion.text(microversion.MAX_VERSION))]
    return status, headers, body


TOO_LARGE = "413 Request Entity Too Large"


class _CappedInput:
    """``wsgi.input`` of a body without a length: raises 413 once more than ``cap``
    bytes have been read (Flask renders it with Ironic's body)."""

    def __init__(self, stream, cap: int):
        self._stream, self._cap, self._seen = stream, cap, 0

    def _count(self, data: bytes) -> bytes:
        self._seen += len(data)
        if self._seen > self._cap:
            raise http.RequestEntityTooLarge(too_large_message(self._cap))
        return data

    def read(self, size: int | None = -1) -> bytes:
        room = self._cap + 1 - self._seen  # one byte more than allowed proves too much
        wanted = room if size is None or size < 0 else min(size, room)
        return self._count(self._stream.read(max(wanted, 0)))

    def readline(self, size: int | None = -1) -> bytes:
        room = self._cap + 1 - self._seen
        wanted = room if size is None or size < 0 else min(size, room)
        return self._count(self._stream.readline(max(wanted, 0)))

    def __iter__(self):
        return iter(self.readline, b"")


class BodyLimitMiddleware:
    """WSGI middleware in front of the Flask app: the route's cap, before any read."""

    def __init__(self, wsgi_app, limits: BodyLimits):
        self.wsgi_app, self.limits = wsgi_app, limits

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        cap = self.limits.cap(environ.get("REQUEST_METHOD", "GET"),
                              environ.get("PATH_INFO") or "/")
        length = (environ.get("CONTENT_LENGTH") or "").strip()
        refused = None
        if length and not (length.isascii() and length.isdigit()):
            refused = refusal("400 Bad Request", f"Invalid Content-Length {length!r}.")
        elif length and int(length) > cap:
            LOG.info("Refused a %s-byte body for %s %s from %s (cap %d)", length,
                     environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"),
                     environ.get("REMOTE_ADDR"), cap)
            refused = refusal(TOO_LARGE, too_large_message(cap))
        if refused is not None:
            status, headers, body = refused
            start_response(status, headers)
            return [body]
        if not length and environ.get("wsgi.input_terminated") or "chunked" in environ.get(
                "HTTP_TRANSFER_ENCODING", "").lower():
            environ["wsgi.input"] = _CappedInput(environ["wsgi.input"], cap)
        return self.wsgi_app(environ, start_response)


def install(app: flask.Flask, default: int = DEFAULT_LIMIT) -> BodyLimits:
    """Put :class:`BodyLimitMiddleware` in front of ``app`` (the Flask way: wrap
    ``app.wsgi_app``, so the test client goes through it too)."""
    limits = BodyLimits(app, default)
    app.wsgi_app = BodyLimitMiddleware(app.wsgi_app, limits)  # type: ignore[method-assign]
    app.extensions[EXTENSION] = limits
    return limits
