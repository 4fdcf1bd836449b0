"""What update clients reach without operator credentials (the contract of issue 16):

- ``POST /v1/update/``: an Omaha v3 request (Flatcar's update_engine's XML), answered
  with XML; a malformed or hostile body is a 400 and changes nothing (parsing is
  bounded and uses defusedxml: ramdisk_agent/wire/omaha_xml.py). At most
  :data:`MAX_BODY` bytes are read.
- ``GET /updates/v1/payloads/<sha256>``: a payload, with ``Range`` (a resumed
  download); any other name is a 404.
- ``GET /updates/v1/key``: the appliance's Ed25519 update key (PEM).
- ``POST /updates/v1/leases``: a reboot lease, authenticated with the host agent's
  token in the JSON body (401 otherwise); an acquire with ``wait`` is held until a
  slot frees or the wait is over.
"""
from __future__ import annotations

import flask

from api import common
from api.throttle import client_of
from conductor import errors
from ramdisk_agent.wire import omaha_xml
from ramdisk_agent.wire.errors import WireError

bp = flask.Blueprint("updates_public", __name__)
MAX_BODY = omaha_xml.MAX_BODY
XML = "text/xml; charset=utf-8"
#: The route whose body is Omaha XML, not JSON.
RAW_BODIES = ("/v1/update",)


def _updates():
    return common.service().updates


def _base_url() -> str:
    """[api] public_endpoint, else the scheme and Host the client used (what
    werkzeug's host_url gives, without its IRI round trip on every check)."""
    configured = flask.current_app.config.get("PUBLIC_ENDPOINT")
    if configured:
        return str(configured)
    environ = flask.request.environ
    host = environ.get("HTTP_HOST") or \
        f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}/"


@bp.post("/v1/update")
def update_check():
    length = flask.request.content_length
    if length is not None and length > MAX_BODY:
        raise errors.InvalidParameter(f"An update request is at most {MAX_BODY} bytes.")
    body = flask.request.stream.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise errors.InvalidParameter(f"An update request is at most {MAX_BODY} bytes.")
    try:
        answer = _updates().update_check(body, _base_url(),
                                         client_of(flask.request.remote_addr))
    except WireError as exc:
        raise errors.InvalidParameter(f"Invalid Omaha request: {exc}") from None
    return flask.Response(answer, 200, content_type=XML)


@bp.get("/updates/v1/payloads/<name>")
def payload(name: str):
    path = _updates().payload(name)
    response = flask.send_file(path, mimetype="application/octet-stream",
                               conditional=True, etag=name, max_age=0)
    response.headers["Accept-Ranges"] = "bytes"
    return response


@bp.get("/updates/v1/key")
def key():
    return flask.Response(_updates().public_key(), 200,
                          content_type="application/x-pem-file")


@bp.post("/updates/v1/leases")
def lease():
    """An acquire with ``wait`` may be held until a slot frees (conductor/updates/
    leases.py): it runs on the listener's stream threads (api/updates/__init__.py),
    and stops when its client leaves."""
    gone = flask.request.environ.get("waitress.client_disconnected", lambda: False)
    status, body = _updates().lease_request(common.json_body(), gone)
    return flask.jsonify(body), status
