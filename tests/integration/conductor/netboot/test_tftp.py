"""TFTP transfer state machine, driven packet by packet from a raw local UDP socket."""
from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time

import pytest

from conductor.errors import ServiceUnavailable
from conductor.netboot.limits import TftpLimits
from conductor.netboot.tftp import TftpServer
from tests.waiting import wait_until

TIMEOUT = 0.2


def rrq(name: str, *options: str, opcode: int = 1) -> bytes:
    fields = [name, "octet", *options]
    return struct.pack("!H", opcode) + b"".join(f.encode() + b"\0" for f in fields)


def ack(block: int) -> bytes:
    return struct.pack("!HH", 4, block)


class Client:
    """A raw TFTP client: one socket, one server TID learnt from the first reply."""

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        self.server = ("127.0.0.1", port)

    def request(self, datagram: bytes) -> bytes:
        self.sock.sendto(datagram, self.server)
        return self.receive()

    def receive(self) -> bytes:
        data, self.server = self.sock.recvfrom(70000)
        return data

    def send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.server)

    def quiet_for(self, seconds: float) -> bool:
        self.sock.settimeout(seconds)
        try:
            self.sock.recvfrom(70000)
            return False
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(3)


@pytest.fixture
def server(tmp_path):
    (tmp_path / "f").write_bytes(bytes(range(256)) * 4)   # 1024 bytes: 2 full blocks + 0
    srv = TftpServer(tmp_path, port=0, timeout=TIMEOUT, retries=2,
                     resolver=lambda name, client: b"dyn" if name == "dyn.cfg" else None)
    srv.start()
    yield srv
    srv.stop()


def wait_idle(server: TftpServer) -> None:
    wait_until(lambda: server.session_count() == 0, 5, 0.02,
               lambda: f"every TFTP session to end: {server.session_count()} live")


def test_lock_step_transfer_with_final_empty_block(server):
    client = Client(server.port)
    assert client.request(rrq("f"))[:4] == b"\0\3\0\1"
    client.send(ack(1))
    assert client.receive()[:4] == b"\0\3\0\2"
    client.send(ack(2))
    assert client.receive() == b"\0\3\0\3"           # 1024 % 512 == 0: empty last block
    client.send(ack(3))
    wait_idle(server)


def test_lost_ack_makes_the_block_come_again(server):
    client = Client(server.port)
    first = client.request(rrq("f"))
    assert client.receive() == first                  # no ACK: resent after the timeout


def test_duplicate_ack_does_not_resend(server):
    client = Client(server.port)
    client.request(rrq("f"))
    client.send(ack(1))
    second = client.receive()
    client.send(ack(1))                               # duplicate of the previous ACK
    assert client.quiet_for(TIMEOUT / 2)              # ... answered by nothing
    assert client.receive() == second                 # until the timeout resends


def test_retries_are_bounded(server):
    client = Client(server.port)
    client.request(rrq("f"))
    for _ in range(server.retries):
        client.receive()
    assert client.quiet_for(TIMEOUT * 3)
    wait_idle(server)


def test_oack_then_data_with_negotiated_blksize(server):
    client = Client(server.port)
    oack = client.request(rrq("f", "blksize", "1000", "tsize", "0"))
    assert oack[:2] == b"\0\6"
    assert dict(zip(*[iter(oack[2:-1].split(b"\0"))] * 2)) == {b"blksize": b"1000",
                                                               b"tsize": b"1024"}
    client.send(ack(0))
    assert len(client.receive()) == 4 + 1000


def test_client_error_ends_the_session(server):
    client = Client(server.port)
    client.request(rrq("f"))
    client.send(b"\0\5\0\0cancelled\0")
    wait_idle(server)


def test_resolver_answers_from_memory(server):
    client = Client(server.port)
    assert client.request(rrq("/dyn.cfg")) == b"\0\3\0\1dyn"


@pytest.mark.parametrize("datagram, code", [
    (rrq("upload", opcode=2), 2),                          # WRQ: read-only server
    (rrq("../etc/passwd"), 2),
    (rrq("missing"), 1),
    (rrq("f", "blksize"), 4),                              # odd option count
    (b"\0\4\0\1", 4),                                      # ACK to the listener
    (b"\xff" * 600, 4),
])
def test_bad_requests_get_an_error_and_the_server_keeps_serving(server, datagram, code):
    client = Client(server.port)
    reply = client.request(datagram)
    assert reply[:4] == struct.pack("!HH", 5, code) and reply.endswith(b"\0")
    assert Client(server.port).request(rrq("f"))[:4] == b"\0\3\0\1"


def test_stop_ends_stalled_transfers_promptly(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 5000)
    srv = TftpServer(tmp_path, port=0, timeout=30, retries=5)
    srv.start()
    Client(srv.port).request(rrq("f"))
    started = time.monotonic()
    srv.stop()
    # Not a speed figure: a stop that waited for the stalled transfer would take
    # timeout x (retries + 1) = 180 s; one that ends it returns long before one timeout.
    assert time.monotonic() - started < 30


def test_failing_resolver_answers_an_error_and_serving_goes_on(tmp_path):
    (tmp_path / "f").write_bytes(b"x")

    def resolver(name, client):
        if name == "boom":
            raise RuntimeError("database gone")
        return None
    srv = TftpServer(tmp_path, port=0, resolver=resolver)
    srv.start()
    try:
        assert Client(srv.port).request(rrq("boom")) == b"\0\5\0\0Internal error\0"
        assert Client(srv.port).request(rrq("f")) == b"\0\3\0\1x"
    finally:
        srv.stop()


def test_session_limit_answers_server_busy(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 1024)
    srv = TftpServer(tmp_path, port=0, timeout=TIMEOUT, retries=2,
                     limits=TftpLimits(sessions=1))
    srv.start()
    try:
        Client(srv.port).request(rrq("f"))                  # stalls: never ACKed
        assert Client(srv.port).request(rrq("f")) == b"\0\5\0\0Server busy\0"
    finally:
        srv.stop()


def test_a_withheld_ack_mid_transfer_brings_that_block_again_then_it_goes_on(server):
    client = Client(server.port)
    first = client.request(rrq("f"))
    client.send(ack(1))
    second = client.receive()
    assert second[:4] == b"\0\3\0\2"
    assert client.receive() == second                 # ACK 2 withheld: block 2 again
    client.send(ack(2))
    assert client.receive() == b"\0\3\0\3"            # ... and the transfer goes on
    client.send(ack(3))
    assert first[4:] + second[4:] == bytes(range(256)) * 4
    wait_idle(server)


def test_a_killed_worker_is_replaced_and_its_transfers_released(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 5000)
    srv = TftpServer(tmp_path, port=0, timeout=30, retries=5, workers=2)
    srv.start()
    try:
        Client(srv.port).request(rrq("f"))                   # stalls: never ACKed
        assert srv.session_count() == 1
        holder = next(w for w in srv._pool if w.live)
        os.kill(holder.process.pid, signal.SIGKILL)
        wait_until(lambda: srv.session_count() == 0, message="the lost transfer released")
        wait_until(lambda: all(w.process.poll() is None for w in srv._pool)
                   and holder not in srv._pool, message="a new worker in its place")
        for _ in range(4):                                   # both workers serve
            client = Client(srv.port)
            assert client.request(rrq("f"))[:4] == b"\0\3\0\1"
            client.send(b"\0\5\0\0done\0")
    finally:
        srv.stop()
    assert all(w.process.poll() is not None for w in [holder])


def test_stop_ends_the_worker_processes(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    srv = TftpServer(tmp_path, port=0, workers=3)
    srv.start()
    processes = [w.process for w in srv._pool]
    assert len(processes) == 3 and all(p.poll() is None for p in processes)
    srv.stop()
    assert all(p.poll() is not None for p in processes)


def test_workers_that_cannot_start_fail_the_start_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")  # every worker exits at once
    srv = TftpServer(tmp_path, port=0, workers=2)
    with pytest.raises(ServiceUnavailable, match="TFTP worker processes could not start"):
        srv.start()
    assert srv.session_count() == 0 and srv._pool == []
