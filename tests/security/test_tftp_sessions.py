"""Session floods and silent clients against the TFTP server, replayed on loopback.

The attack: TFTP answers anyone before any authentication, and every read request
became a transfer with its own thread and socket until 256 were live; after that
every machine's PXE boot got "Server busy". The client chose the retransmission
timeout (RFC 2349 ``timeout``, up to 255 s), so one silent client held a transfer
for 255 s x 5 retries, about 21 minutes; a client ACKing each block just in time
held one for ever. Now one address holds only a few transfers, the timeout option
is honoured only up to a few seconds, and every transfer has a lifetime.

Attackers send from 127.0.0.2 (127.0.0.0/8 is all local); the machine that still
boots is tftp-hpa's ``tftp`` and curl from 127.0.0.1.
"""
from __future__ import annotations

import filecmp
import os
import socket
import struct
import subprocess

import pytest

from conductor.netboot.limits import TftpLimits
from conductor.netboot.tftp import TftpServer
from tests.functional.tools import require
from tests.waiting import wait_until

ATTACKER = "127.0.0.2"
FLOOD = 300
OACK, DATA, ERROR = 6, 3, 5


def rrq(name: str, **options: str) -> bytes:
    fields = [name, "octet"] + [x for kv in options.items() for x in kv]
    return b"\0\1" + b"".join(f.encode() + b"\0" for f in fields)


def udp(source: str = ATTACKER, timeout: float = 10) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.settimeout(timeout)
    return sock


def opcode(packet: bytes) -> int:
    return struct.unpack("!H", packet[:2])[0]


def oack_options(packet: bytes) -> dict[str, str]:
    fields = packet[2:].split(b"\0")[:-1]
    return {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}


@pytest.fixture
def root(tmp_path):
    top = tmp_path / "root"
    top.mkdir()
    (top / "undionly.kpxe").write_bytes(os.urandom(70_000))
    (top / "vmlinuz").write_bytes(os.urandom(1 << 20))
    return top


@pytest.fixture
def server(root):
    srv = TftpServer(root, "127.0.0.1", 0)  # the defaults: 1 s timeout, 5 retries
    srv.start()
    yield srv
    srv.stop()


def tftp_hpa_fetch(port: int, name: str, out) -> None:
    done = subprocess.run([require("tftp"), "-m", "binary", "127.0.0.1", str(port), "-c",
                           "get", name, str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done


def busybox_fetch(port: int, name: str, out) -> None:
    done = subprocess.run([require("busybox"), "tftp", "-b", "1468", "-g", "-r", name, "-l",
                           str(out), "127.0.0.1", str(port)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def curl_fetch(port: int, name: str, out) -> None:
    done = subprocess.run([require("curl"), "-sS", "--tftp-blksize", "1468", "-o", str(out),
                           f"tftp://127.0.0.1:{port}/{name}"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_one_client_opening_many_sessions_gets_a_few_and_others_still_boot(server, root,
                                                                         tmp_path):
    limit = server.limits.per_client
    answers = []
    for _ in range(FLOOD):  # each request from its own port: a new transfer each
        with udp() as sock:
            sock.sendto(rrq("vmlinuz", blksize="1468"), ("127.0.0.1", server.port))
            answers.append(sock.recv(2048))
    started = [a for a in answers if opcode(a) == OACK]
    refused = [a for a in answers if opcode(a) == ERROR]
    assert len(started) == limit and len(refused) == FLOOD - limit
    assert all(b"Too many transfers from this client" in a for a in refused)
    assert server.session_count(ATTACKER) == limit <= server.session_count()
    # The attacker's transfers hold their slots, every other machine still boots.
    tftp_hpa_fetch(server.port, "undionly.kpxe", tmp_path / "pxe")
    assert filecmp.cmp(tmp_path / "pxe", root / "undionly.kpxe", shallow=False)
    curl_fetch(server.port, "vmlinuz", tmp_path / "k")
    assert filecmp.cmp(tmp_path / "k", root / "vmlinuz", shallow=False)
    busybox_fetch(server.port, "vmlinuz", tmp_path / "b")
    assert filecmp.cmp(tmp_path / "b", root / "vmlinuz", shallow=False)
    # ... and the silent ones are dropped after timeout x (retries + 1) = 6 s.
    wait_until(lambda: server.session_count() == 0,
               message=lambda: f"the silent transfers to end ({server.session_count()} live)")


def test_a_silent_client_asking_timeout_255_is_dropped_within_the_clamp(server):
    """The OACK leaves ``timeout`` out (RFC 2349: the server may only accept the
    client's value or ignore it), so the server's own 1 s applies; before, this
    transfer lived 255 s x 5 retries."""
    with udp() as sock:
        sock.sendto(rrq("vmlinuz", timeout="255", blksize="1468", tsize="0"),
                    ("127.0.0.1", server.port))
        first = sock.recv(2048)
        assert opcode(first) == OACK
        assert oack_options(first) == {"blksize": "1468", "tsize": str(1 << 20)}
        assert server.session_count(ATTACKER) == 1
        wait_until(lambda: server.session_count() == 0,
                   message="the silent client's transfer to be dropped")
        resent = 0  # the OACK was retransmitted at most ``retries`` times, then no more
        sock.settimeout(0)
        try:
            while opcode(sock.recv(2048)) == OACK:
                resent += 1
        except BlockingIOError:
            pass
        assert resent <= server.retries


def test_a_timeout_within_the_clamp_is_acknowledged(server):
    ceiling = server.limits.max_timeout
    with udp() as sock:
        sock.sendto(rrq("vmlinuz", timeout=str(ceiling)), ("127.0.0.1", server.port))
        answer, tid = sock.recvfrom(2048)
        assert oack_options(answer) == {"timeout": str(ceiling)}
        sock.sendto(b"\0\5\0\0gone\0", tid)  # the client gives up: the transfer ends
    wait_until(lambda: server.session_count() == 0)


def test_a_slow_drip_client_is_cut_off_at_the_lifetime(root):
    """A client that ACKs every block only after the server's retransmission keeps a
    transfer alive with no timeout ever expiring; the lifetime ends it, with an ERROR
    so the client knows. Paced by the server's own retransmissions (0.1 s), not sleeps."""
    srv = TftpServer(root, "127.0.0.1", 0, timeout=0.1, retries=5,
                     limits=TftpLimits(lifetime=1.0))
    srv.start()
    try:
        with udp() as sock:
            sock.sendto(rrq("vmlinuz"), ("127.0.0.1", srv.port))  # 2048 blocks of 512
            blocks, copies, ended = 0, 0, None
            while ended is None:  # the ERROR may come in place of either copy
                packet, tid = sock.recvfrom(2048)
                if opcode(packet) == ERROR:
                    ended = packet[4:-1].decode()
                    break
                copies += 1
                if copies == 2:  # the same block again, resent: ACK it now
                    blocks, copies = struct.unpack("!H", packet[2:4])[0], 0
                    sock.sendto(struct.pack("!HH", 4, blocks), tid)
        assert ended == "Transfer time limit exceeded"
        assert blocks > 1  # it did drip along until the lifetime
        assert blocks < (1 << 20) // 512
        wait_until(lambda: srv.session_count() == 0)
    finally:
        srv.stop()
