"""The direct body reader's bookkeeping, on fakes: the bytes http.client buffered with
the headers come first (however small the reads), then the socket, never past
Content-Length. The real socket cases are tests/integration/.../test_download.py."""
from __future__ import annotations

import io
import os
import socket
import struct

from ramdisk_agent.ramdisk.download import _SocketBody


class FakeSocket:
    """``recv_into`` from a byte string: at most ``piece`` bytes per call, or, with
    MSG_WAITALL (only valid once the socket blocks), all that fits or is left."""

    def __init__(self, data: bytes, piece: int = 777):
        self.data, self.piece, self.calls = data, piece, 0
        self.timeout: float | None = 60.0
        self.options: dict = {}

    def gettimeout(self) -> float | None:
        return self.timeout

    def settimeout(self, value: float | None) -> None:
        self.timeout = value

    def setsockopt(self, level: int, name: int, value: bytes) -> None:
        self.options[level, name] = value

    def recv_into(self, view: memoryview, nbytes: int = 0, flags: int = 0) -> int:
        self.calls += 1
        want = nbytes or len(view)
        if flags & socket.MSG_WAITALL:
            assert self.timeout is None, "MSG_WAITALL on a socket in timeout mode"
        else:
            want = min(want, self.piece)
        got = self.data[:want]
        view[:len(got)] = got
        self.data = self.data[len(got):]
        return len(got)


class SocketIO(io.RawIOBase):
    """What socket.makefile() puts under http.client's BufferedReader."""

    def __init__(self, sock: FakeSocket):
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:
        return self.sock.recv_into(memoryview(view))


def reader_holding(sock: FakeSocket, count: int) -> io.BufferedReader:
    """http.client's BufferedReader on ``sock``, holding its first ``count`` bytes
    (as after reading the headers)."""
    fp = io.BufferedReader(SocketIO(sock), buffer_size=8192)
    piece, sock.piece = sock.piece, count
    if count:
        fp.peek(1)
    sock.piece = piece
    return fp


def read_all(body: _SocketBody, size: int) -> bytes:
    out = bytearray()
    while got := body.readinto(memoryview(buf := bytearray(size))):
        out += buf[:got]
    return bytes(out)


def test_buffered_bytes_first_even_when_reads_are_smaller():
    data = os.urandom(50_000)
    sock = FakeSocket(data)
    body = _SocketBody(reader_holding(sock, 6000), sock, len(data))
    assert read_all(body, 1000) == data
    assert body.left == 0


def test_never_past_content_length():
    data = os.urandom(20_000)
    sock = FakeSocket(data + b"trailing junk from the server")
    body = _SocketBody(reader_holding(sock, 100), sock, len(data))
    assert read_all(body, 4096) == data
    assert sock.data == b"trailing junk from the server"


def test_without_length_reads_until_the_socket_ends():
    data = os.urandom(9000)
    sock = FakeSocket(data)
    body = _SocketBody(reader_holding(sock, 0), sock, None)
    assert read_all(body, 4096) == data and body.left is None


def test_after_the_buffered_bytes_each_read_fills_the_buffer_in_one_call():
    """MSG_WAITALL on a blocking socket whose receive timeout is the connection's."""
    data = os.urandom(4 * 65536 + 10)
    sock = FakeSocket(data)
    body = _SocketBody(reader_holding(sock, 3000), sock, len(data))
    assert read_all(body, 65536) == data
    assert sock.timeout is None
    assert sock.options[socket.SOL_SOCKET, socket.SO_RCVTIMEO] == struct.pack("ll", 60, 0)
    # 1 read by the BufferedReader (3000 bytes), then one call per full buffer
    assert sock.calls == 1 + len(range(3000, len(data), 65536))
