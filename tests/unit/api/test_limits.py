"""Body caps per route (api/limits.py): chosen from the URL map, applied in front of
Flask to the declared length or as a chunked body streams, answered with Ironic's
413 body; and the JSON parser's depth limit (api/common.py)."""
from __future__ import annotations

import io
import json

import pytest
from werkzeug import exceptions as http

from api import common, create_app, limits
from api.console import patches as console_patches
from api.starlingx import patching
from api.updates import operator, public
from api.v1 import nodes
from conductor import config, errors


@pytest.fixture(scope="module")
def app():
    return create_app(object(), config.from_options({"api.max_request_body_size": 1000}))


def test_every_route_has_the_default_cap_but_the_authenticated_large_ones(app):
    caps = app.extensions[limits.EXTENSION]
    large = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            path = rule.rule.replace("<path:ids>", "a/b")
            for arg in rule.arguments:
                path = path.replace(f"<{arg}>", "x")
            cap = caps.cap(method, path)
            if cap != 1000:
                large.add((app.view_functions[rule.endpoint], cap))
    assert large == {(patching.upload, patching.MAX_UPLOAD),
                     (nodes.set_provision_state, limits.CONFIGDRIVE_LIMIT),
                     (console_patches.upload_patch, patching.MAX_UPLOAD),
                     (operator.upload_image, operator.MAX_UPLOAD)}
    assert caps.cap("POST", "/no/such/route") == 1000
    assert caps.cap("DELETE", "/patching/v1/upload") == 1000  # 405: the default


def test_the_omaha_endpoint_takes_at_most_64_kib_even_when_the_default_is_larger():
    app = create_app(object(), config.from_options({"api.max_request_body_size": 1 << 20}))
    caps = app.extensions[limits.EXTENSION]
    assert caps.cap("POST", "/v1/update/") == public.MAX_BODY == 64 << 10
    assert caps.cap("POST", "/v1/nodes") == 1 << 20


def test_caps_of_routes_without_variables_are_remembered_and_stay_the_same():
    default = 1 << 20
    app = create_app(object(), config.from_options({"api.max_request_body_size": default}))
    caps = app.extensions[limits.EXTENSION]
    asked = [("POST", "/v1/update/"), ("POST", "/updates/v1/images"), ("GET", "/v1"),
             ("POST", "/v1/nodes"), ("PUT", "/v1/nodes/x/states/provision"),
             ("POST", "/no/such/route"), ("DELETE", "/patching/v1/upload")]
    first = [caps.cap(method, path) for method, path in asked]
    again = [caps.cap(method, path) for method, path in asked]
    assert first == again == [public.MAX_BODY, operator.MAX_UPLOAD, default, default,
                              limits.CONFIGDRIVE_LIMIT, default, default]
    # a route with variables (one entry per node) and a path no route has are not kept
    assert set(caps._static) == {("POST", "/v1/update/"), ("POST", "/updates/v1/images"),
                                 ("GET", "/v1"), ("POST", "/v1/nodes")}


def test_remembered_caps_are_bounded(monkeypatch):
    app = create_app(object(), config.from_options({"api.max_request_body_size": 1 << 20}))
    caps = app.extensions[limits.EXTENSION]
    monkeypatch.setattr(limits, "STATIC_ENTRIES", 2)
    for slashes in range(1, 6):   # leading slashes: the same route, another key
        assert caps.cap("POST", "/" * slashes + "v1/update/") == public.MAX_BODY
    assert len(caps._static) == 2


def test_every_large_view_is_served(app):
    views = set(app.view_functions.values())
    assert set(limits.LARGE_BODIES) <= views


def _environ(method: str, path: str, body: bytes, length: str | None,
             chunked: bool = False) -> dict:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "x",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
               "CONTENT_TYPE": "application/json", "HTTP_X_OPENSTACK_IRONIC_API_VERSION":
               "latest", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.errors": io.StringIO()}
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
    return environ


def _call(app, environ) -> tuple[str, dict, bytes]:
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen.update(status=status, headers=dict(headers))
    body = b"".join(app.wsgi_app(environ, start_response))
    return seen["status"], seen["headers"], body


def test_a_declared_length_over_the_cap_is_refused_unread(app):
    stream = io.BytesIO(b" " * 5000)
    environ = _environ("POST", "/v1/heartbeat/n1", b"", "5000")
    environ["wsgi.input"] = stream
    status, headers, body = _call(app, environ)
    assert status.startswith("413") and stream.tell() == 0
    fault = json.loads(json.loads(body)["error_message"])
    assert fault["faultcode"] == "Client" and "at most 1000 bytes" in fault["faultstring"]
    assert headers["X-OpenStack-Ironic-API-Maximum-Version"]


def test_an_invalid_length_is_a_400(app):
    status, _, body = _call(app, _environ("POST", "/v1/nodes", b"{}", "12x"))
    assert status.startswith("400") and b"Content-Length" in body


def test_a_chunked_body_is_counted_as_it_streams(app):
    environ = _environ("POST", "/v1/heartbeat/n1", b'{"a": "' + b"x" * 5000 + b'"}', None,
                       chunked=True)
    status, _, body = _call(app, environ)
    assert status.startswith("413") and b"at most 1000 bytes" in body
    assert environ["wsgi.input"]._seen <= 1001


def test_a_body_within_the_cap_reaches_the_view(app):
    status, _, body = _call(app, _environ("POST", "/v1/heartbeat/n1", b"[1]", "3"))
    assert status.startswith("400") and b"must be a JSON object" in body
    chunked = _environ("POST", "/v1/heartbeat/n1", b"[1]", None, chunked=True)
    status, _, body = _call(app, chunked)
    assert status.startswith("400") and b"must be a JSON object" in body


def test_capped_input_reads_and_lines_up_to_the_cap():
    stream = limits._CappedInput(io.BytesIO(b"ab\ncd\nef"), 6)
    assert stream.readline() == b"ab\n" and stream.read(3) == b"cd\n"
    with pytest.raises(http.RequestEntityTooLarge, match="at most 6 bytes"):
        stream.read()


@pytest.mark.parametrize(("depth", "ok"), [(32, True), (33, False), (900, False),
                                           (5000, False)])
def test_json_nested_deeper_than_32_levels_is_a_400(app, depth, ok):
    body = '[{"op": "add", "path": "/extra/a", "value": ' + "[" * (depth - 2) + \
        "]" * (depth - 2) + "}]"
    with app.test_request_context("/v1/nodes/x", method="PATCH", data=body,
                                  content_type="application/json"):
        if ok:
            assert common.json_body(list)
        else:
            with pytest.raises(errors.InvalidParameter, match="nested"):
                common.json_body(list)
