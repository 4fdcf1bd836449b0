"""One error handler: every error becomes Ironic's ``error_message`` body, except a
refused patch operation on StarlingX's patching API, which gets StarlingX's body."""
from __future__ import annotations

import json
import logging

import flask
from werkzeug import exceptions as http

from api.starlingx import orchestration, patching
from conductor import errors

LOG = logging.getLogger(__name__)


def document(payload: dict) -> bytes:
    """Ironic's error body: ``error_message`` holds the fault as a JSON *string*. Also
    written outside Flask, before a request reaches it (api/limits.py, api/http_server.py)."""
    return json.dumps({"error_message": json.dumps(payload)}).encode()


def client_fault(message: str) -> dict:
    """The fault of a refused request (``faultcode`` Client), as :func:`document` takes it."""
    return {"faultcode": "Client", "faultstring": message, "debuginfo": None}


def _body(status: int, payload: dict) -> flask.Response:
    # StarlingX's VIM API (wsme) puts faultstring at the top level; its client reads it.
    body = json.dumps(payload).encode() if orchestration.is_orchestration_path(
        flask.request.path) else document(payload)
    return flask.current_app.response_class(body, status=status, mimetype="application/json")


def _starlingx_body(exc: errors.PatchOpError) -> flask.Response:
    # StarlingX answers a refused operation with HTTP 200 and the reason in "error":
    # sw-patch decides by that text (specs/starlingx-patching.md §3).
    return flask.current_app.response_class(
        json.dumps({"info": "", "warning": "", "error": f"{exc}\n"}), status=200,
        mimetype="application/json")


def render(exc: errors.MetalcastError) -> flask.Response:
    if isinstance(exc, errors.PatchOpError) and patching.is_patch_path(flask.request.path):
        return _starlingx_body(exc)
    if isinstance(exc, errors.NotAcceptable):
        return _body(406, {"code": 406, "title": "Not Acceptable", "description": str(exc)})
    response = _body(exc.status_code, exc.to_dict())
    if isinstance(exc, errors.NotAuthorized):
        response.headers["WWW-Authenticate"] = 'Basic realm="Baremetal API"'
    return response


def render_http(exc: http.HTTPException) -> flask.Response:
    message = exc.description or exc.name
    if isinstance(exc, http.BadRequest) and "JSON" in (exc.description or ""):
        message = f"Malformed JSON in request body: {exc.description}"
    client = 400 <= (exc.code or 500) < 500
    response = _body(exc.code or 500, {"faultcode": "Client" if client else "Server",
                                       "faultstring": message, "debuginfo": None})
    if isinstance(exc, http.MethodNotAllowed):
        response.headers["Allow"] = ", ".join(exc.valid_methods or [])
    retry_after = getattr(exc, "retry_after", None)  # 429 and 503 may say when to retry
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def render_unexpected(exc: Exception) -> flask.Response:
    LOG.exception("Unexpected error handling %s %s", flask.request.method, flask.request.path)
    return _body(500, {"faultcode": "Server", "faultstring": "Internal Server Error: "
                       f"{type(exc).__name__}; see the server log.", "debuginfo": None})


def init_app(app: flask.Flask) -> None:
    app.register_error_handler(errors.MetalcastError, render)
    app.register_error_handler(http.HTTPException, render_http)
    app.register_error_handler(Exception, render_unexpected)
