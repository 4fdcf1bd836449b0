"""Slow clients against the HTTP boot server, replayed on loopback.

The attack (slowloris): connect, then send a request head one byte at a time, each
byte well inside the idle timeout. The threaded server applied its timeout to each
``recv``, so such a connection never ended and held its thread for ever; a few
hundred of them took every thread a booting rack needed. Now the whole head must
arrive within ``HttpLimits.header_timeout`` of its first byte or the connection is
dropped unanswered, and no connection (dribbling, idle or a download nobody reads)
costs a thread: the process's threads do not change while a curl download from
another address completes.

Attackers use other loopback addresses (127.0.0.0/8 is all local) than the curl that
plays the booting machine (127.0.0.1).
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

ATTACKERS = [f"127.0.0.{n}" for n in range(2, 6)]
#: A head that takes the dribbler far longer than any wait of this test to finish.
HEAD = b"GET /vmlinuz HTTP/1.1\r\nHost: boot\r\nX-Slow: " + b"a" * 4000 + b"\r\n\r\n"


@pytest.fixture
def root(tmp_path):
    top = tmp_path / "root"
    top.mkdir()
    (top / "vmlinuz").write_bytes(os.urandom(4 << 20))
    with open(top / "huge.img", "wb") as huge:  # sparse: fills any socket buffer
        huge.truncate(256 << 20)
    return top


@pytest.fixture
def serve(root):
    servers = []

    def start(limits: HttpLimits) -> BootHttpServer:
        server = BootHttpServer(root, "127.0.0.1", 0, limits)
        server.start()
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


def connect(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def dropped(sock: socket.socket) -> bool:
    """The server closed the connection without an answer (EOF or reset waiting)."""
    data = pending(sock, 1)
    if data is None:
        return False
    assert data == b"", f"the server answered a head it never got: {data!r}"
    return True


class Dribbler:
    """Slowloris: each ``step()`` sends every connection one more byte of ``HEAD``."""

    def __init__(self, socks: list[socket.socket]):
        self.sent = dict.fromkeys(socks, 0)
        self.closed: set[socket.socket] = set()

    def step(self) -> bool:
        """One byte more on each open connection; whether the server dropped them all."""
        for sock, sent in self.sent.items():
            if sock in self.closed:
                continue
            if dropped(sock):
                self.closed.add(sock)
                continue
            assert sent < len(HEAD), "a whole head was dribbled out: the attack outlasted the test"
            try:
                sock.send(HEAD[sent:sent + 1])
                self.sent[sock] = sent + 1
            except (BrokenPipeError, ConnectionResetError):
                self.closed.add(sock)
        return len(self.closed) == len(self.sent)


def download_works(server: BootHttpServer, root, out) -> bool:
    done = curl("-f", "--max-time", "20", "-o", str(out), f"{server.url}/vmlinuz")
    assert done.returncode == 0, done.stderr
    return filecmp.cmp(out, root / "vmlinuz", shallow=False)


def test_dribbled_heads_are_dropped_after_the_header_timeout_and_curl_boots(
        serve, root, tmp_path):
    # The idle timeout alone (60 s, per byte) would never end the dribble.
    server = serve(HttpLimits(idle_timeout=60.0, header_timeout=1.0))
    threads = thread_idents()
    socks = [connect(server.port, source) for source in ATTACKERS for _ in range(10)]
    try:
        attack = Dribbler(socks)
        attack.step()  # every connection has started its head
        wait_until(lambda: server.open_connections() == len(socks))
        assert download_works(server, root, tmp_path / "k")  # served amid the dribble
        assert new_threads(threads) == []  # 40 slow heads, not one thread
        wait_until(attack.step, interval=0.1, message=lambda: (
            f"the server to drop the dribbling connections ({len(attack.closed)} of "
            f"{len(socks)} dropped)"))
        assert all(sent < len(HEAD) for sent in attack.sent.values())
        wait_until(lambda: server.open_connections() == 0)
        assert download_works(server, root, tmp_path / "k2")
    finally:
        for sock in socks:
            sock.close()


def test_a_head_sent_whole_but_late_in_its_connection_is_still_served(serve, root):
    """The header timeout runs from a request's first byte, not from the connect: a
    keep-alive client that waits before asking is no slowloris."""
    server = serve(HttpLimits(idle_timeout=60.0, header_timeout=1.0))
    with connect(server.port, ATTACKERS[0]) as sock:
        wait_until(lambda: server.open_connections() == 1)
        with pytest.raises(TimeoutError):  # nothing is said to a silent client
            sock.settimeout(1.5)
            sock.recv(1)
        sock.settimeout(10)
        sock.sendall(b"HEAD /vmlinuz HTTP/1.1\r\nHost: boot\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")


def test_downloads_nobody_reads_hold_no_thread_and_curl_boots(serve, root, tmp_path):
    """Forty 256 MiB downloads whose clients never read: forty busy connections in the
    event loop, the same threads as before, and a download from elsewhere completes."""
    server = serve(HttpLimits(idle_timeout=300.0))
    threads = thread_idents()
    socks = [connect(server.port, source) for source in ATTACKERS for _ in range(10)]
    try:
        for sock in socks:
            sock.sendall(b"GET /huge.img HTTP/1.1\r\nHost: boot\r\n\r\n")
        for sock in socks:  # every answer has started: the server is in its sendfile
            wait_until(lambda sock=sock: sock.recv(12, socket.MSG_PEEK) == b"HTTP/1.1 200")
        assert server.open_connections() == len(socks)
        assert new_threads(threads) == []
        assert download_works(server, root, tmp_path / "k")
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: server.open_connections() == 0)
