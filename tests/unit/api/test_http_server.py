"""waitress's bounds (api/http_server.py) without a socket: which connection makes
room for a new one, which ones miss the header deadline, and the body cap the
request parser takes from the route before it reads a byte of the body."""
from __future__ import annotations

import json

import pytest
from waitress.adjustments import Adjustments

from api import create_app, limits
from api.http_server import (
    BodyPolicy,
    BoundedParser,
    ConnectionGuard,
    ConnectionLimits,
    TooBusy,
    TooLarge,
)
from conductor import config


class Channel:
    """What the guard reads of a connection."""

    def __init__(self, client: str, waiting_since: float, idle: bool = True):
        self.client, self.waiting_since, self.idle = client, waiting_since, idle
        self.will_close = False

    def __repr__(self) -> str:
        return f"Channel({self.client}, {self.waiting_since})"


def _guard(**bounds) -> ConnectionGuard:
    return ConnectionGuard(ConnectionLimits(**bounds))


def test_at_its_cap_a_client_longest_idle_connection_makes_room():
    guard = _guard(total=100, per_client=2)
    old, new = Channel("192.0.2.1", 10), Channel("192.0.2.1", 20)
    other = Channel("192.0.2.2", 1)
    for channel in (old, new, other):
        guard.opened(channel)
    assert guard.make_room("192.0.2.1")
    assert old.will_close and not new.will_close and not other.will_close
    assert guard.make_room("192.0.2.3")  # under every cap: nothing closed
    assert not new.will_close


def test_at_the_total_cap_the_longest_idle_of_all_makes_room():
    guard = _guard(total=3, per_client=3)
    channels = [Channel("192.0.2.1", 10), Channel("192.0.2.2", 5, idle=False),
                Channel("192.0.2.3", 7)]
    for channel in channels:
        guard.opened(channel)
    assert guard.make_room("192.0.2.9")
    assert [c.will_close for c in channels] == [False, False, True]


def test_when_every_connection_in_the_way_is_busy_the_new_one_is_refused():
    guard = _guard(total=2, per_client=1)
    busy = Channel("192.0.2.1", 1, idle=False)
    guard.opened(busy)
    assert not guard.make_room("192.0.2.1")
    guard.opened(Channel("192.0.2.2", 2, idle=False))
    assert not guard.make_room("192.0.2.3")
    assert not busy.will_close


def test_connections_waiting_too_long_for_headers_are_closed():
    guard = _guard(header_timeout=10)
    late, fresh = Channel("192.0.2.1", 100), Channel("192.0.2.1", 105)
    served = Channel("192.0.2.2", 50, idle=False)
    for channel in (late, fresh, served):
        guard.opened(channel)
    guard.expire(111)
    assert (late.will_close, fresh.will_close, served.will_close) == (True, False, False)
    guard.closed(late)  # the loop closes it later: counted once
    assert guard._count == 2


def test_large_body_slots_are_one_per_client_and_few_in_total():
    guard = _guard(large_bodies=2)
    first = guard.large_body_slot("192.0.2.1")
    assert first is not None and guard.large_body_slot("192.0.2.1") is None
    second = guard.large_body_slot("192.0.2.2")
    assert second is not None and guard.large_body_slot("192.0.2.3") is None
    first()
    assert guard.large_body_slot("192.0.2.3") is not None


@pytest.fixture(scope="module")
def policy_of():
    app = create_app(object(), config.from_options({"api.max_request_body_size": 1000}))

    def build(verified: bool, guard: ConnectionGuard | None = None) -> BodyPolicy:
        return BodyPolicy(app.extensions[limits.EXTENSION], lambda header: verified,
                          guard or _guard())
    return build


def _parse(policy: BodyPolicy, request: bytes) -> BoundedParser:
    parser = BoundedParser(Adjustments(), policy, "192.0.2.1")
    while request:
        consumed = parser.received(request)
        request = request[consumed:]
        if parser.completed:
            break
    return parser


def test_a_declared_body_over_the_route_cap_is_refused_at_the_headers(policy_of):
    parser = _parse(policy_of(False), b"POST /v1/heartbeat/n1 HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Length: 1001\r\n\r\n")
    assert parser.completed and isinstance(parser.error, TooLarge)
    status, headers, body = parser.error.to_response()
    assert status.startswith("413") and ("Content-Type", "application/json") in headers
    assert "at most 1000 bytes" in json.loads(json.loads(body)["error_message"])[
        "faultstring"]


def test_a_chunked_body_is_refused_once_it_passes_the_cap(policy_of):
    chunk = b"%x\r\n%s\r\n" % (600, b" " * 600)
    parser = _parse(policy_of(False), b"POST /v1/nodes HTTP/1.1\r\nHost: x\r\n"
                                      b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 3)
    assert parser.completed and isinstance(parser.error, TooLarge)
    assert parser.body_bytes_received < 2000


def test_a_body_within_the_cap_is_read(policy_of):
    parser = _parse(policy_of(False), b"POST /v1/nodes HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Length: 2\r\n\r\n{}")
    assert parser.completed and parser.error is None
    assert parser.get_body_stream().read() == b"{}"


def test_an_upload_gets_its_large_cap_with_verified_credentials(policy_of):
    request = (b"POST /patching/v1/upload HTTP/1.1\r\nHost: x\r\n"
               b"Content-Length: 5000\r\n\r\n")
    parser = _parse(policy_of(True), request)
    assert not parser.completed and parser.error is None  # waits for its body


def test_an_upload_without_verified_credentials_needs_a_slot(policy_of):
    guard = _guard(large_bodies=1)
    request = (b"POST /patching/v1/upload HTTP/1.1\r\nHost: x\r\n"
               b"Content-Length: 5000\r\n\r\n")
    holder = _parse(policy_of(False, guard), request)
    assert not holder.completed  # it holds the one slot
    refused = _parse(policy_of(False, guard), request)
    assert isinstance(refused.error, TooBusy)
    status, headers, _ = refused.error.to_response()
    assert status.startswith("429") and ("Retry-After", "5") in headers
    holder.close()  # its slot comes back when the request is done with
    again = _parse(policy_of(False, guard), request)
    assert not again.completed  # it holds the slot...
    again.received(b" " * 5000)
    assert again.completed and again.error is None  # ...until its body is in
    assert not _parse(policy_of(False, guard), request).completed
