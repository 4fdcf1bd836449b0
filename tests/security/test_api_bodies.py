"""Oversized request bodies, sent to a running ``metalcast serve`` without credentials.

The attack: the public heartbeat parsed whatever it was sent (Flask's 128 MiB cap), and
one 128 MiB heartbeat took the server from 85 to 807 MiB. Now every route has a cap
(112 KiB unless the route needs more and is authenticated), checked on the declared
length, or counted as a chunked body streams, before anything reads the body: the
server answers 413 with Ironic's error body as soon as the headers are in.
"""
from __future__ import annotations

import concurrent.futures
import re

import pytest
import requests

from api import create_app
from api.limits import CONFIGDRIVE_LIMIT, DEFAULT_LIMIT
from api.starlingx.patching import MAX_UPLOAD
from api.updates.operator import MAX_UPLOAD as IMAGE_UPLOAD
from api.updates.public import MAX_BODY as OMAHA_BODY
from conductor import config
from tests.functional.conftest import stop_server
from tests.security.http_attacks import (
    LATEST,
    basic,
    basic_auth_server,
    connect,
    declared_only,
    fault,
    head,
    peak_rss,
    stream_body,
)
from tests.waiting import wait_until

#: How much the server may grow over the whole flood (a generous bound: it held
#: ~720 MiB more after one 128 MiB heartbeat before the caps).
RSS_GROWTH = 64 << 20
BIG = 128 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = basic_auth_server(tmp_path_factory.mktemp("bodies"))
    yield running
    stop_server(running.process)


def _routes() -> list[tuple[str, str, str]]:
    """(method, concrete path, view name) of every route of the API's URL map."""
    app = create_app(object(), config.from_options({}))
    routes = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?[^<>]+>", "x", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((method, path, app.view_functions[rule.endpoint].__name__))
    return routes


ROUTES = _routes()
LARGE = {"upload": MAX_UPLOAD, "upload_patch": MAX_UPLOAD,  # (the console's upload)
         "set_provision_state": CONFIGDRIVE_LIMIT,
         "upload_image": IMAGE_UPLOAD, "update_check": OMAHA_BODY}


@pytest.mark.parametrize(("method", "path", "view"), ROUTES,
                         ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_route_refuses_a_body_over_its_cap_before_reading_it(server, method, path,
                                                                  view):
    cap = LARGE.get(view, DEFAULT_LIMIT)
    # No body follows the headers: an answer proves the server did not wait to read it.
    status, headers, body = declared_only(server.url, method, path, cap + 1)
    assert status == 413, body
    assert "at most" in fault(body) and str(cap) in fault(body)
    assert headers["Content-Type"] == "application/json"


def test_the_routes_cover_the_public_and_the_large_ones():
    views = {view for _, _, view in ROUTES}
    assert {"heartbeat", "lookup", "upload", "set_provision_state", "update_node"} <= views


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/heartbeat/x"),
                                              ("PATCH", "/v1/nodes/x"),
                                              ("POST", "/v3/auth/tokens")])
def test_a_chunked_body_is_refused_once_it_passes_the_cap(server, method, path):
    status, sent = stream_body(server.url, method, path, BIG, chunked=True)
    assert status in (413, None)  # a 413, or a hang-up while we were still sending
    assert sent < BIG // 8, "the server kept reading a chunked body past its cap"


def test_a_body_within_the_cap_still_reaches_the_route(server):
    # 100 KiB of JSON (padded) to the public heartbeat: parsed, refused on its merits.
    body = b'{"callback_url": "https://192.0.2.1:9999"}' + b" " * (100 << 10)
    reply = requests.post(f"{server.url}/v1/heartbeat/no-such-node", data=body,
                          headers={**LATEST, "Content-Type": "application/json"}, timeout=30)
    assert reply.status_code in (400, 404), reply.text


def test_a_flood_of_oversized_bodies_leaves_memory_bounded(server):
    before = peak_rss(server.process.pid)
    floods = [("POST", "/v1/heartbeat/x", False), ("POST", "/v1/heartbeat/x", True),
              ("PATCH", "/v1/nodes/x", False), ("POST", "/v1/nodes", True)] * 4
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # as many as server threads
        results = list(pool.map(lambda f: stream_body(server.url, f[0], f[1], BIG,
                                                      chunked=f[2]), floods))
    grown = peak_rss(server.process.pid) - before
    assert grown < RSS_GROWTH, f"the server's peak grew by {grown >> 20} MiB"
    assert all(status in (413, None) for status, _ in results), results
    # and it still answers
    assert requests.get(server.url + "/", timeout=30).status_code == 200


def test_an_upload_without_verified_credentials_is_read_one_at_a_time(server):
    """The patch upload keeps its large cap, but without credentials verified before
    a client gets one large body read at a time (a second one: 429 at once, unread),
    then a 401 for it: never an import. Verified credentials are not held up."""
    path = "/patching/v1/upload"
    form = {"Content-Type": "multipart/form-data; boundary=b"}
    # (a slot is given back just after the answer: a retry covers the moment between)
    wait_until(lambda: stream_body(server.url, "POST", path, 4 << 20, headers=form)
               == (401, 4 << 20), 30, 0.1, "an anonymous upload read, then refused")
    auth = basic(server.username, server.password)
    assert requests.get(f"{server.url}/v1/nodes", headers={**LATEST, "Authorization": auth},
                        timeout=30).status_code == 200  # verified from now on
    field = b"x" * (DEFAULT_LIMIT + 1)
    body = (b'--b\r\nContent-Disposition: form-data; name="other"\r\n\r\n' + field
            + b"\r\n--b--\r\n")

    def refused_while_one_streams() -> bool:
        with connect(server.url) as first:  # an anonymous upload that takes its time
            first.sendall(head("POST", path, {"Content-Length": str(64 << 20), **form}))
            first.sendall(b" " * (1 << 16))
            if declared_only(server.url, "POST", path, 64 << 20, form, timeout=2)[0] != 429:
                return False  # the first had not got the slot yet: again
            answer = requests.post(server.url + path, data=body, timeout=30,
                                   headers={**form, "Authorization": auth})
            assert answer.status_code == 200 and "No file" in answer.json()["error"], \
                answer.text
            return True
    wait_until(refused_while_one_streams, 60, 0.1,
               "a second anonymous upload to get a 429 while one streams",
               ignore=TimeoutError)
