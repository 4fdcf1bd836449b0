"""Attacks on the TFTP server's event loops and worker pool, replayed on loopback.

The server reads every request on one thread and hands the transfers to worker
processes, each an event loop over many transfers. So: the per-client limit must
hold across the workers (one address must not get ``per_client`` transfers from
each of them); a flood of requests or of forged datagrams must not stall the
loops or end someone else's transfer; one silent client must not hold up the rest.
Attackers send from 127.0.0.2; the machines that boot use 127.0.0.1 and up.
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
OACK, DATA, ACK, ERROR = 6, 3, 4, 5


def rrq(name: str, **options: str) -> bytes:
    fields = [name, "octet"] + [x for kv in options.items() for x in kv]
    return b"\0\1" + b"".join(f.encode() + b"\0" for f in fields)


def udp(source: str = ATTACKER) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    return sock


def opcode(packet: bytes) -> int:
    return struct.unpack("!H", packet[:2])[0]


def curl(port: int, name: str, out, source: str = "127.0.0.1",
         blksize: int = 1468) -> subprocess.Popen:
    return subprocess.Popen([require("curl"), "-sS", "--max-time", "60", "--interface",
                             source, "--tftp-blksize", str(blksize), "-o", str(out),
                             f"tftp://127.0.0.1:{port}/{name}"])


@pytest.fixture
def root(tmp_path):
    top = tmp_path / "root"
    top.mkdir()
    (top / "vmlinuz").write_bytes(os.urandom(1 << 20))
    return top


@pytest.fixture
def pool(root):
    srv = TftpServer(root, "127.0.0.1", 0, workers=4)
    srv.start()
    yield srv
    srv.stop()


def test_the_per_client_limit_holds_across_every_worker(pool):
    """Before the pool existed one loop counted; now four processes serve, and the
    flood from one address still gets ``per_client`` transfers in all."""
    limit, flood = pool.limits.per_client, 60
    socks = [udp() for _ in range(flood)]
    try:
        for sock in socks:  # each from its own port: a new transfer each
            sock.sendto(rrq("vmlinuz", blksize="1468"), ("127.0.0.1", pool.port))
        answers = [opcode(sock.recv(2048)) for sock in socks]
        assert answers.count(OACK) == limit and answers.count(ERROR) == flood - limit
        assert pool.session_count(ATTACKER) == limit
        # The transfers were spread over the workers: the limit is not per worker.
        assert sum(1 for worker in pool._pool if worker.live) > 1
    finally:
        for sock in socks:
            sock.close()


def test_a_request_flood_does_not_stall_running_transfers(pool, root, tmp_path):
    """3000 junk and refused requests at the listener while four machines download:
    every download completes intact and the server still answers afterwards."""
    outs = [tmp_path / f"m{i}" for i in range(4)]
    machines = [curl(pool.port, "vmlinuz", out, f"127.0.0.{10 + i}", 512)
                for i, out in enumerate(outs)]
    junk = [b"\0\4\0\1", b"\xff" * 600, b"\0\2x\0octet\0", rrq("../etc/passwd"),
            rrq("vmlinuz", blksize="1468")]  # the last: over the per-client limit soon
    with udp() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # drop the answers
        for i in range(3000):
            sock.sendto(junk[i % len(junk)], ("127.0.0.1", pool.port))
    assert [m.wait(timeout=90) for m in machines] == [0] * 4
    assert all(filecmp.cmp(out, root / "vmlinuz", shallow=False) for out in outs)
    with udp("127.0.0.1") as sock:
        sock.sendto(rrq("vmlinuz"), ("127.0.0.1", pool.port))
        assert opcode(sock.recv(2048)) == DATA


def test_forged_acks_and_errors_from_another_tid_are_ignored(pool, root):
    """An attacker who finds a transfer's port sends it an ERROR (to cancel it) and
    ACKs far ahead (to skip blocks): the connected socket only hears its client."""
    victim = udp("127.0.0.1")
    try:
        victim.sendto(rrq("vmlinuz"), ("127.0.0.1", pool.port))
        first, tid = victim.recvfrom(2048)
        assert opcode(first) == DATA
        with udp() as attacker:
            attacker.sendto(b"\0\5\0\0cancelled\0", tid)
            for block in range(1, 50):
                attacker.sendto(struct.pack("!HH", ACK, block), tid)
        data, block = bytearray(first[4:]), 1
        while True:  # the victim fetches the whole file, block by block
            victim.sendto(struct.pack("!HH", ACK, block), tid)
            packet, source = victim.recvfrom(2048)
            assert source == tid and opcode(packet) == DATA
            if struct.unpack("!H", packet[2:4])[0] != (block + 1) & 0xFFFF:
                continue  # a resend of the previous block
            data += packet[4:]
            block += 1
            if len(packet) < 4 + 512:
                break
        victim.sendto(struct.pack("!HH", ACK, block), tid)
        assert bytes(data) == (root / "vmlinuz").read_bytes()
    finally:
        victim.close()
    wait_until(lambda: pool.session_count() == 0)


def test_silent_clients_do_not_hold_up_the_others_and_are_dropped(root, tmp_path):
    """Eight silent transfers spread over the workers (each resent every 4 s, dropped
    after 8 s): six machines download next to them while all eight are still live,
    then the silent ones are dropped after timeout x (retries + 1)."""
    srv = TftpServer(root, "127.0.0.1", 0, timeout=4, retries=1, workers=2,
                     limits=TftpLimits(per_client=8))
    srv.start()
    silent = [udp() for _ in range(8)]
    try:
        for sock in silent:
            sock.sendto(rrq("vmlinuz"), ("127.0.0.1", srv.port))
            assert opcode(sock.recv(2048)) == DATA
        assert all(worker.live for worker in srv._pool)
        outs = [tmp_path / f"m{i}" for i in range(6)]
        machines = [curl(srv.port, "vmlinuz", out, f"127.0.0.{10 + i}")
                    for i, out in enumerate(outs)]
        assert [m.wait(timeout=90) for m in machines] == [0] * 6
        assert all(filecmp.cmp(out, root / "vmlinuz", shallow=False) for out in outs)
        assert srv.session_count(ATTACKER) == 8      # served beside them, not after
        wait_until(lambda: srv.session_count() == 0,
                   message=lambda: f"the silent transfers dropped ({srv.session_count()})")
    finally:
        for sock in silent:
            sock.close()
        srv.stop()
