"""Half-open connections against a running ``metalcast serve``.

The attack: 1,000 connections, each holding half-sent headers, filled waitress's
connection limit; it stopped accepting, and a ramdisk's lookup waited in the backlog
until it timed out (the idle ones were closed after 120 s, a trickling one never).
Now a client holds at most ``max_connections_per_client`` connections (a new one
takes the place of its longest-idle one), a new connection at the total cap takes
the place of the longest-idle of all, and a request's headers must be in within
``header_timeout`` seconds, however slowly they trickle.
"""
from __future__ import annotations

import contextlib
import select
import socket

import pytest
import requests

from tests.functional.conftest import start_server, stop_server
from tests.security.http_attacks import address, declared_only
from tests.waiting import wait_until

ATTACK = 1000
#: The lookup's client timeout: generous, it is answered at once when the server is fine.
LOOKUP_TIMEOUT = 10.0
PER_CLIENT = 64  # [api] max_connections_per_client's default
HALF_SENT = b"GET /v1/lookup?addresses=52:54:00:00:00:01 HTTP/1.1\r\nHost: metalcast\r\n"
AGENT = {"X-OpenStack-Ironic-API-Version": "1.62"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Headers may take 60 s here: only the connection bounds can save a lookup."""
    running = start_server(tmp_path_factory.mktemp("connections"),
                           {"api": {"header_timeout": 60}})
    yield running
    stop_server(running.process)


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory):
    """Headers must be in within 2 s; the patching listener is on too."""
    with socket.socket() as probe:  # a free port for the listener (StarlingX's is 5487)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = start_server(tmp_path_factory.mktemp("deadline"),
                           {"api": {"header_timeout": 2},
                            "patching": {"listen_port": port}})
    running.patching_url = f"http://127.0.0.1:{port}"
    yield running
    stop_server(running.process)


def _sources(count: int, addresses: int) -> list[str]:
    """``count`` source addresses spread over ``addresses`` loopback addresses."""
    return [f"127.0.{2 + n % addresses // 250}.{2 + n % addresses % 250}"
            for n in range(count)]


@contextlib.contextmanager
def half_open(url: str, sources: list[str], payload: bytes = HALF_SENT):
    """One connection per source, each holding a request whose headers never end."""
    socks = []
    try:
        for source in sources:
            sock = socket.socket()
            socks.append(sock)
            sock.bind((source, 0))
            sock.connect(address(url))
            with contextlib.suppress(OSError):  # refused at once: fine too
                sock.sendall(payload)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _closed(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (EOF or reset), without blocking."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _still_open(socks) -> int:
    return sum(not _closed(sock) for sock in socks)


def _lookup(url: str) -> int:
    reply = requests.get(f"{url}/v1/lookup?addresses=52:54:00:aa:bb:cc", headers=AGENT,
                         timeout=LOOKUP_TIMEOUT)
    return reply.status_code


def test_a_lookup_answers_while_one_client_holds_1000_half_open_connections(server):
    with half_open(server.url, ["127.0.0.2"] * ATTACK) as socks:
        assert _lookup(server.url) == 404  # no such node: answered, not timed out
        wait_until(lambda: _still_open(socks) <= PER_CLIENT, 30, 0.1,
                   lambda: f"the server to hold at most {PER_CLIENT} of them "
                           f"({_still_open(socks)} open)")


def test_a_lookup_answers_while_1000_addresses_hold_a_half_open_connection_each(server):
    with half_open(server.url, _sources(ATTACK, ATTACK)) as socks:
        assert _lookup(server.url) == 404
        assert _lookup(server.url) == 404
        assert _still_open(socks) >= ATTACK - 10  # each took only the place of an idle one


def test_headers_that_trickle_in_are_cut_off_at_the_deadline(quick_server):
    url = quick_server.url
    with half_open(url, ["127.0.0.3"] * 200, payload=b"") as idle, \
            half_open(url, ["127.0.0.4"], payload=b"GET / HTTP/1.1\r\n") as (slow,):
        # one header byte every 0.2 s keeps a connection "active" for waitress's
        # channel_timeout; the deadline counts from the request's start instead
        sent = 0
        while sent < 150 and not select.select([slow], [], [], 0.2)[0]:
            with contextlib.suppress(OSError):
                slow.sendall(b"X")
            sent += 1
        assert _closed(slow), "a trickled request was still open after 30 s"
        wait_until(lambda: _still_open(idle) == 0, 30, 0.1,
                   lambda: f"the idle connections to be closed ({_still_open(idle)} open)")
    assert sent * 0.2 < LOOKUP_TIMEOUT, f"closed only after {sent * 0.2:.1f} s"
    assert _lookup(url) == 404


def test_the_patching_listener_has_the_same_bounds(quick_server):
    listener = quick_server.patching_url
    status, _, _ = declared_only(listener, "POST", "/patch/apply/P_1", 1 << 20)
    assert status == 413
    # one client's connections are counted over both listeners together
    with half_open(quick_server.url, ["127.0.0.5"] * PER_CLIENT) as on_api, \
            half_open(listener, ["127.0.0.5"] * PER_CLIENT) as on_listener:
        wait_until(lambda: _still_open(on_api + on_listener) <= PER_CLIENT, 30, 0.1,
                   lambda: f"at most {PER_CLIENT} held "
                           f"({_still_open(on_api + on_listener)} open)")
    reply = requests.get(f"{listener}/patch/query", timeout=LOOKUP_TIMEOUT)
    assert reply.status_code == 200
