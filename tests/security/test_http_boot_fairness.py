"""A greedy client against the event-loop HTTP boot server, replayed on loopback.

The attack: one connection pipelines requests back to back (1000 ``HEAD`` requests
per write, as fast as the socket takes them) and reads the answers as fast. On one
event loop, a connection whose ``recv`` and ``send`` never have to wait never gives
the loop back: in the first version of the rewrite, a curl download from another
machine got no byte in 15 s. Now a connection yields to the others after every
request, and the download completes while the attack goes on.
"""
from __future__ import annotations

import filecmp
import os
import subprocess
import sys

import pytest

from conductor.netboot.http import BootHttpServer
from tests.functional.netboot_peers import curl
from tests.waiting import wait_until

#: The attacker, in its own process: pipelined HEADs (bounded: 5000 writes of 1000),
#: answers drained by a second thread; prints "go" once connected.
ATTACKER = r"""
import socket, sys, threading
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])),
                                source_address=("127.0.0.2", 0))
batch = b"HEAD /vmlinuz HTTP/1.1\r\nHost: boot\r\n\r\n" * 1000
def drain():
    while sock.recv(1 << 20):
        pass
threading.Thread(target=drain, daemon=True).start()
print("go", flush=True)
for _ in range(5000):
    sock.sendall(batch)
"""


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "vmlinuz").write_bytes(os.urandom(4 << 20))
    srv = BootHttpServer(root, "127.0.0.1", 0)
    srv.start()
    yield srv
    srv.stop()


def test_a_pipelining_client_does_not_keep_the_loop_from_a_booting_machine(server, tmp_path):
    attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, str(server.port)],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert attacker.stdout.readline().strip() == "go"
        wait_until(lambda: server.open_connections() == 1)
        out = tmp_path / "k"
        done = curl("-f", "--max-time", "20", "-o", str(out), f"{server.url}/vmlinuz")
        assert done.returncode == 0, done.stderr
        assert filecmp.cmp(out, server.root / "vmlinuz", shallow=False)
        assert attacker.poll() is None  # the download completed during the attack
    finally:
        attacker.kill()
        attacker.wait(10)
