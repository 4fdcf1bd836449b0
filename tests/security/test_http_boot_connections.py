"""Connection floods against the HTTP boot server, replayed on loopback.

The attack: the boot server (``conductor/netboot/http.py``, open to the whole
provisioning network, no authentication) ran one thread per connection with no
bound: 300 connections that never sent a request held 313 threads, each for its
60 s idle timeout, renewable forever; a connection stuck in a download to a client
that stops reading held its thread as well. Now connections are bounded per client
address and in total (``limits.HttpLimits``), the longest-idle one makes room for a
newcomer, a connection idle or stalled past the idle timeout is closed, no
connection costs a thread (one event loop serves them all: the process's thread
count does not move), and a real curl download from another machine completes
throughout.

Attackers use other loopback addresses (127.0.0.0/8 is all local) than the curl
that plays the booting machine (127.0.0.1).
"""
from __future__ import annotations

import filecmp
import os
import socket

import pytest

from conductor.netboot.http import BootHttpServer
from conductor.netboot.limits import HttpLimits
from tests.functional.netboot_peers import curl
from tests.security.http_attacks import new_threads, pending, thread_idents
from tests.waiting import wait_until

ATTACKER = "127.0.0.2"
FLOOD = 300


def open_idle(port: int, source: str, count: int) -> list[socket.socket]:
    """``count`` connections from ``source`` that never send a byte."""
    return [socket.create_connection(("127.0.0.1", port), timeout=10,
                                     source_address=(source, 0)) for _ in range(count)]


def closed_by_server(sock: socket.socket) -> bool:
    """The server closed it: a 503 and EOF, or EOF, or a reset, waiting to be read."""
    data = pending(sock)
    return data is not None and (data == b"" or data.startswith(b"HTTP/1.1 503 "))


@pytest.fixture
def root(tmp_path):
    top = tmp_path / "root"
    top.mkdir()
    (top / "vmlinuz").write_bytes(os.urandom(4 << 20))
    with open(top / "huge.img", "wb") as huge:  # sparse: fills any socket buffer
        huge.truncate(256 << 20)
    return top


def serve(root, limits: HttpLimits | None = None) -> BootHttpServer:
    server = BootHttpServer(root, "127.0.0.1", 0, limits)
    server.start()
    return server


def download_works(server: BootHttpServer, root, out) -> bool:
    done = curl("-f", "--max-time", "20", "-o", str(out), f"{server.url}/vmlinuz")
    assert done.returncode == 0, done.stderr
    return filecmp.cmp(out, root / "vmlinuz", shallow=False)


def test_idle_flood_from_one_address_holds_a_few_threads_and_curl_boots(root, tmp_path):
    server = serve(root)  # the defaults: 16 per client, 256 in all
    per_client = server.limits.per_client
    threads = thread_idents()
    socks = open_idle(server.port, ATTACKER, FLOOD)
    try:
        wait_until(lambda: server.open_connections() <= per_client, message=lambda: (
            f"at most {per_client} connections (the flood holds "
            f"{server.open_connections()})"))
        assert new_threads(threads) == []  # not one thread for the flood
        # Every connection but the newest few was closed by the server, not held.
        wait_until(lambda: sum(map(closed_by_server, socks)) >= FLOOD - per_client)
        assert not any(closed_by_server(s) for s in socks[-per_client:])
        assert download_works(server, root, tmp_path / "k")
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def test_flood_from_many_addresses_stays_under_the_total_and_curl_boots(root, tmp_path):
    limits = HttpLimits(connections=24, per_client=4, idle_timeout=15.0)
    server = serve(root, limits)
    threads = thread_idents()
    socks = []
    try:
        for n in range(10, 20):  # 10 addresses x 4 = 40 connections > 24
            socks += open_idle(server.port, f"127.0.0.{n}", limits.per_client)
        wait_until(lambda: server.open_connections() <= limits.connections,
                   message=lambda: f"at most {limits.connections} connections, not "
                                   f"{server.open_connections()}")
        assert new_threads(threads) == []
        # The oldest idle connections made room; the newest are still open.
        wait_until(lambda: sum(map(closed_by_server, socks)) >= 40 - limits.connections)
        assert not any(closed_by_server(s) for s in socks[-limits.per_client:])
        assert download_works(server, root, tmp_path / "k")  # evicts one more idle one
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def stall(port: int, count: int) -> list[socket.socket]:
    """``count`` downloads of 256 MiB whose client never reads: busy connections."""
    socks = open_idle(port, ATTACKER, count)
    for sock in socks:
        sock.sendall(b"GET /huge.img HTTP/1.1\r\nHost: boot\r\n\r\n")
    for sock in socks:  # the answer started: the server is in its send, busy
        wait_until(lambda sock=sock: sock.recv(12, socket.MSG_PEEK) == b"HTTP/1.1 200")
    return socks


def test_busy_downloads_are_not_closed_for_a_newcomer_who_gets_503(root, tmp_path):
    """When every connection is busy sending a file, a newcomer is refused with 503 at
    once; a download in progress is never cut to make room."""
    limits = HttpLimits(connections=4, per_client=4, idle_timeout=300.0)
    server = serve(root, limits)
    threads = thread_idents()
    stalled = stall(server.port, limits.connections)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                      source_address=("127.0.0.3", 0)) as sock:
            sock.sendall(b"GET /vmlinuz HTTP/1.1\r\nHost: boot\r\n\r\n")
            answer = sock.recv(300)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer, answer
        assert server.open_connections() == limits.connections
        assert new_threads(threads) == []  # four stalled downloads, no thread each
        assert not any(closed_by_server(s) for s in stalled)
        for sock in stalled:  # the stalled clients go away: their slots come back
            sock.close()
        wait_until(lambda: server.open_connections() == 0)
        assert download_works(server, root, tmp_path / "k")
    finally:
        for sock in stalled:
            sock.close()
        server.stop()


def test_a_download_nobody_reads_ends_after_the_idle_timeout(root, tmp_path):
    server = serve(root, HttpLimits(idle_timeout=1.0))
    stalled = stall(server.port, 1)
    try:
        wait_until(lambda: server.open_connections() == 0,
                   message="the stalled download to time out and close")
        assert download_works(server, root, tmp_path / "k")
    finally:
        stalled[0].close()
        server.stop()


def test_an_idle_connection_is_closed_after_the_idle_timeout(root):
    server = serve(root, HttpLimits(idle_timeout=1.0))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30,
                                      source_address=(ATTACKER, 0)) as sock:
            wait_until(lambda: server.open_connections() == 1)
            assert sock.recv(100) == b""  # closed by the server, well before 30 s
        wait_until(lambda: server.open_connections() == 0)
    finally:
        server.stop()
