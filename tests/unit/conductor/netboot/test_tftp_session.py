"""The TFTP transfer state machine, driven with a recording fake socket and a fake clock.

What a worker's loop relies on: lock-step DATA/ACK, the OACK handshake, block
numbers wrapping from 65535 to 0, resends only on the timer (never on a duplicate
ACK), bounded retries, the lifetime, and the hand-over messages' encoding.
"""
from __future__ import annotations

import os
import struct

import pytest

from conductor.netboot import tftp_session as session
from conductor.netboot.tftp_worker import Done, Handoff

TIMEOUT, RETRIES, LIFETIME = 1.0, 2, 100.0


class FakeSocket:
    """Records what the transfer sends; ``inbox`` is what ``recv_into`` returns."""

    def __init__(self):
        self.sent: list[bytes] = []
        self.inbox: list[bytes | Exception] = []
        self.closed = False

    def send(self, data) -> int:
        self.sent.append(bytes(data))
        return len(data)

    def recv_into(self, buffer) -> int:
        if not self.inbox:
            raise BlockingIOError
        item = self.inbox.pop(0)
        if isinstance(item, Exception):
            raise item
        buffer[:len(item)] = item
        return len(item)

    def close(self) -> None:
        self.closed = True


def ack(block: int) -> bytes:
    return struct.pack("!HH", 4, block)


def block_number(packet: bytes) -> int:
    assert packet[:2] == b"\0\3"
    return struct.unpack("!H", packet[2:4])[0]


def transfer(tmp_path, data: bytes, blksize: int = 512, oack: bytes = b"",
             now: float = 0.0) -> tuple[session.Transfer, FakeSocket]:
    path = tmp_path / "file"
    path.write_bytes(data)
    sock = FakeSocket()
    pacing = session.Pacing(TIMEOUT, RETRIES, now + LIFETIME)
    fd = os.open(path, os.O_RDONLY)
    return session.Transfer(sock, fd, blksize, oack, pacing, now), sock


def test_lock_step_until_the_short_block(tmp_path):
    data = os.urandom(1100)
    xfer, sock = transfer(tmp_path, data)
    assert xfer.begin()
    for block in (1, 2):
        sock.inbox.append(ack(block))
        assert xfer.on_readable(0.1)
    assert [block_number(p) for p in sock.sent] == [1, 2, 3]
    assert b"".join(p[4:] for p in sock.sent) == data
    sock.inbox.append(ack(3))
    assert not xfer.on_readable(0.2)
    assert xfer.outcome == session.SENT and xfer.sent == len(data)
    xfer.close()
    assert sock.closed


def test_an_exact_multiple_ends_with_an_empty_block(tmp_path):
    xfer, sock = transfer(tmp_path, b"x" * 1024)
    xfer.begin()
    sock.inbox += [ack(1), ack(2)]
    xfer.on_readable(0.1)
    xfer.on_readable(0.1)
    assert sock.sent[-1] == b"\0\3\0\3"


def test_oack_is_acknowledged_as_block_zero_before_data(tmp_path):
    oack = b"\0\6blksize\x001000\0"
    xfer, sock = transfer(tmp_path, b"y" * 1500, blksize=1000, oack=oack)
    xfer.begin()
    assert sock.sent == [oack]
    sock.inbox.append(ack(1))          # not the ACK of the OACK: ignored
    assert xfer.on_readable(0.1) and sock.sent == [oack]
    sock.inbox.append(ack(0))
    assert xfer.on_readable(0.1)
    assert block_number(sock.sent[-1]) == 1 and len(sock.sent[-1]) == 4 + 1000


def test_block_numbers_wrap_from_65535_to_0(tmp_path):
    blocks = 65537                     # block numbers 1..65535, 0, 1 (short)
    xfer, sock = transfer(tmp_path, b"z" * (8 * (blocks - 1) + 3), blksize=8)
    xfer.begin()
    for number in range(1, blocks):
        sock.inbox.append(ack(number & 0xFFFF))
        assert xfer.on_readable(0.0)
    assert [block_number(p) for p in sock.sent[65533:]] == [65534, 65535, 0, 1]
    assert len(sock.sent[-1]) == 4 + 3
    sock.inbox.append(ack(1))
    assert not xfer.on_readable(0.0) and xfer.outcome == session.SENT


def test_a_duplicate_ack_never_resends_only_the_timer_does(tmp_path):
    xfer, sock = transfer(tmp_path, os.urandom(3000))
    xfer.begin()
    sock.inbox.append(ack(1))
    xfer.on_readable(0.5)              # block 2 sent at t=0.5
    sock.inbox += [ack(1), ack(1), b"\0\4", b"junk datagram"]
    for _ in range(4):
        assert xfer.on_readable(0.6)
    assert len(sock.sent) == 2         # no Sorcerer's Apprentice
    assert xfer.due() == 0.5 + TIMEOUT
    assert xfer.on_timer(1.4) and len(sock.sent) == 2   # not yet due
    assert xfer.on_timer(1.5)
    assert sock.sent[-1] == sock.sent[-2] and block_number(sock.sent[-1]) == 2


def test_retries_are_bounded(tmp_path):
    xfer, sock = transfer(tmp_path, b"a" * 600)
    xfer.begin()
    now = 0.0
    for _ in range(RETRIES):
        now += TIMEOUT
        assert xfer.on_timer(now)
    now += TIMEOUT
    assert not xfer.on_timer(now)
    assert xfer.outcome == f"no ACK after {RETRIES} retransmissions"
    assert len(sock.sent) == 1 + RETRIES


def test_an_ack_resets_the_retry_count(tmp_path):
    xfer, sock = transfer(tmp_path, b"b" * 5000)
    xfer.begin()
    now = 0.0
    for block in range(1, 5):          # every block needs RETRIES resends: still alive
        for _ in range(RETRIES):
            now += TIMEOUT
            assert xfer.on_timer(now)
        sock.inbox.append(ack(block))
        assert xfer.on_readable(now)


def test_the_lifetime_ends_a_transfer_with_an_error(tmp_path):
    xfer, sock = transfer(tmp_path, b"c" * 5000)
    xfer.begin()
    assert xfer.due() == TIMEOUT
    xfer.sent_at = LIFETIME - 0.1      # the client kept ACKing just in time
    assert xfer.due() == LIFETIME
    assert not xfer.on_timer(LIFETIME)
    assert xfer.outcome == session.EXPIRED
    assert sock.sent[-1] == b"\0\5\0\0" + session.EXPIRED.encode() + b"\0"


def test_a_client_error_ends_the_transfer(tmp_path):
    xfer, sock = transfer(tmp_path, b"d" * 5000)
    xfer.begin()
    sock.inbox.append(b"\0\5\0\0cancelled\0")
    assert not xfer.on_readable(0.1)
    assert xfer.outcome == "client sent error 0: cancelled"


@pytest.mark.parametrize("error", [ConnectionRefusedError(111, "refused"),
                                   OSError(101, "unreachable")])
def test_a_gone_client_ends_the_transfer(tmp_path, error):
    xfer, sock = transfer(tmp_path, b"e" * 5000)
    xfer.begin()
    sock.inbox.append(error)
    assert not xfer.on_readable(0.1)
    assert xfer.outcome.startswith("client gone")


def test_a_full_send_buffer_counts_as_a_lost_packet(tmp_path):
    xfer, sock = transfer(tmp_path, b"f" * 5000)

    def full(data):
        raise BlockingIOError
    sock.send = full
    assert xfer.begin()                # the timer will resend it
    assert xfer.outcome == session.RUNNING


def test_hand_over_messages_round_trip():
    handoff = Handoff(7, 1468, "\0\6blksize\x001468\0", 1.0, 5, 1234.5)
    assert Handoff.decode(handoff.encode()) == handoff
    done = Done(7, session.SENT, 1 << 20, 0.25)
    assert Done.decode(done.encode()) == done
