"""One TFTP read transfer as a state machine a worker's event loop drives.

A ``Transfer`` owns its connected, non-blocking socket (RFC 1350: the server's TID
is that socket's port, and the kernel drops datagrams from any other client TID),
the file it sends (an fd: a confined file or an in-memory copy) and one
preallocated DATA buffer. The loop calls ``on_readable`` when the socket has a
datagram and ``on_timer`` when ``due()`` has passed; both return False once the
transfer is over (``outcome`` says how), and the loop then calls ``close``.
Nothing here blocks, sleeps or reads the clock: the loop passes ``now``.

Per block the hot path is one ``recv_into`` (the ACK, checked in place), one
``readinto`` the buffer and one ``send``. A block is resent only by ``on_timer``,
never because of a duplicate ACK (no Sorcerer's Apprentice). Block numbers wrap
from 65535 to 0, as tftp-hpa, curl, iPXE and busybox expect.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from conductor.netboot import tftp_request as req

#: Big enough for an ERROR with its message; an ACK is 4 bytes.
ACK_BUFFER = 516
EXPIRED = "Transfer time limit exceeded"
#: ``outcome`` of a transfer still going, and of one that sent its last block.
RUNNING, SENT = "running", "sent"


@dataclass(frozen=True)
class Pacing:
    """Retransmission timeout (s), retransmissions, and the transfer's end (monotonic s)."""

    timeout: float
    retries: int
    deadline: float


class Transfer:
    """Send one file block by block; the loop feeds it datagrams and timer ticks."""

    __slots__ = ("sock", "file", "blksize", "timeout", "retries", "deadline", "started",
                 "sent_at", "tries", "hi", "lo", "last", "sent", "packet", "buf", "view",
                 "payload", "ack", "_recv_into", "_send", "_read", "outcome")

    def __init__(self, sock, fd: int, blksize: int, oack: bytes, pacing: Pacing,
                 now: float):
        """``fd`` is read from its current offset and closed with the transfer;
        ``oack`` is the OACK to send first (empty: none, DATA block 1 comes first)."""
        self.sock, self.file, self.blksize = sock, io.FileIO(fd, closefd=True), blksize
        self.timeout, self.retries = pacing.timeout, pacing.retries
        self.deadline, self.started, self.sent_at = pacing.deadline, now, now
        self.tries, self.hi, self.lo, self.last, self.sent = 0, 0, 0, False, 0
        self.buf = bytearray(4 + self.blksize)
        self.buf[1] = req.OPCODE_DATA
        self.view = memoryview(self.buf)
        self.payload = self.view[4:]
        self.ack = bytearray(ACK_BUFFER)
        self._recv_into, self._send, self._read = sock.recv_into, sock.send, self.file.readinto
        self.outcome = RUNNING
        # With options the client must ACK the OACK as block 0 (RFC 2347) first.
        self.packet: bytes | memoryview = oack or self._next_block()

    def begin(self) -> bool:
        """Send the OACK or the first block; False if the client is already gone."""
        return self._transmit()

    def due(self) -> float:
        """When ``on_timer`` has work: a retransmission or the lifetime's end."""
        return min(self.sent_at + self.timeout, self.deadline)

    def on_readable(self, now: float) -> bool:
        """Take one datagram from the client; False when the transfer is over."""
        ack = self.ack
        try:
            got = self._recv_into(ack)
        except BlockingIOError:
            return True
        except OSError as exc:  # ECONNREFUSED: the client's port is closed (ICMP)
            return self._end(f"client gone: {exc}")
        # Literal 4 (OPCODE_ACK): no attribute lookup per block.
        if got >= 4 and ack[3] == self.lo and ack[2] == self.hi and ack[1] == 4 \
                and not ack[0]:
            if self.last:
                return self._end(SENT)
            try:
                self.packet = self._next_block()
            except OSError as exc:  # EIO, or a file on a vanished mount
                self._error(req.NOT_DEFINED, "Read error")
                return self._end(f"reading the file failed: {exc}")
            self.tries, self.sent_at = 0, now
            return self._transmit()
        if got >= 4 and ack[0] == 0 and ack[1] == req.OPCODE_ERROR:
            text = bytes(ack[4:got]).split(b"\0", 1)[0].decode("ascii", "replace")
            return self._end(f"client sent error {ack[2] << 8 | ack[3]}: {text}")
        return True  # a duplicate ACK or a stray datagram: never a resend

    def on_timer(self, now: float) -> bool:
        """Resend the unacknowledged packet, or end the transfer; False when over."""
        if now >= self.deadline:
            self._error(req.NOT_DEFINED, EXPIRED)
            return self._end(EXPIRED)
        if now - self.sent_at < self.timeout:
            return True
        if self.tries >= self.retries:
            return self._end(f"no ACK after {self.tries} retransmissions")
        self.tries, self.sent_at = self.tries + 1, now
        return self._transmit()

    def close(self) -> None:
        """Release the socket and the file."""
        self.file.close()
        self.sock.close()

    def _next_block(self) -> memoryview:
        count = self._read(self.payload)
        self.sent += count
        self.last = count < self.blksize
        lo = (self.lo + 1) & 0xFF
        hi = (self.hi + (lo == 0)) & 0xFF   # 65535 + 1 wraps to block 0
        self.buf[2], self.buf[3], self.hi, self.lo = hi, lo, hi, lo
        return self.view if count == self.blksize else self.view[:4 + count]

    def _transmit(self) -> bool:
        try:
            self._send(self.packet)
        except BlockingIOError:  # send buffer full: as if lost, the timer resends it
            pass
        except OSError as exc:
            return self._end(f"client gone: {exc}")
        return True

    def _error(self, code: int, message: str) -> None:
        try:
            self._send(req.error_packet(code, message))
        except OSError:
            pass

    def _end(self, outcome: str) -> bool:
        self.outcome = outcome
        return False
