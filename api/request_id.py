"""``x-openstack-request-id`` on every response of an app, as Ironic sends it.

WSGI middleware outermost on the app (around the body caps of api/limits.py), so
refusals before Flask carry the header too. The ID is always made here: a client's
header is never echoed or trusted (it would forge log lines). While the request runs
it is the thread's current ID (conductor/request_ids.py): the log lines it causes
carry it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import flask

from conductor import request_ids

HEADER = "x-openstack-request-id"
ENVIRON_KEY = "metalcast.request_id"


class RequestIdMiddleware:
    def __init__(self, app: Callable[..., Iterable[bytes]]):
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        rid = request_ids.new()
        environ[ENVIRON_KEY] = rid

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [(k, v) for k, v in headers if k.lower() != HEADER]
            headers.append((HEADER, rid))
            return start_response(status, headers, exc_info)

        token = request_ids.CURRENT.set(rid)
        user = request_ids.CURRENT_USER.set(None)   # set once authenticated
        try:
            return self.app(environ, start)
        finally:
            request_ids.CURRENT_USER.reset(user)
            request_ids.CURRENT.reset(token)


def _remember_user() -> None:
    """before_request, after authentication's: the request's user (node history)."""
    user = flask.g.get("user")
    if isinstance(user, str):
        request_ids.CURRENT_USER.set(user)


def install(app: flask.Flask) -> None:
    """Wrap ``app.wsgi_app``: call last in the app factory (outermost; the user hook
    then runs after the authentication's)."""
    app.wsgi_app = RequestIdMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    app.before_request(_remember_user)
