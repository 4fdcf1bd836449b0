"""The console's event streams against a real ``metalcast serve`` (waitress): open
streams never starve the API's workers, their number is bounded (one more is refused
with 503, the page's EventSource retries), a client that leaves frees its stream at
once, and a state change reaches every open stream from the one publisher."""
from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
import requests

from api.console.events import MAX_STREAMS
from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import api_call, unique
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # a client may hold more connections than there are streams: the streams' own
    # bound is what is tested (all the test's clients share one address)
    running = start_server(tmp_path_factory.mktemp("console-streams"),
                           {"api": {"max_connections_per_client": MAX_STREAMS + 40}})
    yield running
    stop_server(running.process)


def _open(url: str) -> tuple[socket.socket, bytes]:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(f"GET /ui/events HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head


def _close(sockets) -> None:
    for sock in sockets:
        sock.close()


def test_streams_are_bounded_do_not_starve_the_api_and_free_at_once(server):
    opened = []
    try:
        for _ in range(MAX_STREAMS):
            sock, head = _open(server.url)
            opened.append(sock)
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
        extra, head = _open(server.url)
        opened.append(extra)
        assert head.startswith(b"HTTP/1.1 503"), head[:200]
        # the API's own workers are free: every stream runs on the stream threads
        for _ in range(20):
            assert requests.get(f"{server.url}/v1/nodes", timeout=10).status_code == 200
        node = api_call(server.url, "POST", "/v1/nodes",
                        {"name": unique("live"), "driver": "fake-hardware"}, ok=(201,))
        api_call(server.url, "PATCH", f"/v1/nodes/{node['uuid']}",
                 [{"op": "replace", "path": "/maintenance", "value": True}])
        for sock in opened[:3] + opened[-4:-1]:   # the change reaches every stream
            seen = b""
            sock.settimeout(30)
            while node["uuid"].encode() not in seen:
                data = sock.recv(65536)
                assert data, "the stream ended"
                seen += data
    finally:
        _close(opened)
    # the clients left: their streams end at once (not at the next keep-alive), so a
    # full set opens again
    again = []

    def reopened():
        _close(again)
        again.clear()
        for _ in range(MAX_STREAMS):
            sock, head = _open(server.url)
            again.append(sock)
            if not head.startswith(b"HTTP/1.1 200"):
                return False
        return True
    try:
        wait_until(reopened, 10, 0.5, "the left streams' slots to be free again")
    finally:
        _close(again)


def test_a_bad_cursor_is_refused(server):
    answer = requests.get(f"{server.url}/ui/events?since=-1", timeout=10)
    assert answer.status_code == 400 and "cursor" in answer.text
