"""HttpStream against a scripted server on loopback: the direct socket reads of a plain
body (odd-sized pieces, body bytes buffered with the headers or not, a cut mid-body
then resumed, a server ignoring Range, a close-delimited body, a stall) and the
http.client path for chunked bodies. Every byte read is compared with what was sent.
"""
from __future__ import annotations

import hashlib
import itertools
import mmap
import os
import threading

import pytest

from ramdisk_agent.errors import ImageDownloadError
from ramdisk_agent.ramdisk.download import DownloadOptions, HttpStream
from tests.scripted_http import ScriptedServer, head, send_pieces

FAST = DownloadOptions(retry_delay=0.01, timeout=10, retries=2)
ODD = (1, 7, 4093, 65537, 3, 1 << 20, 12345)   # piece sizes the server sends
BODY = os.urandom(3 * (1 << 20) + 4321)
ETAG = '"v1"'


def read_all(stream: HttpStream, sizes=(1 << 20,)) -> bytes:
    """Everything ``stream`` gives, read into page-aligned buffers of the given sizes."""
    out = bytearray()
    for size in itertools.cycle(sizes):
        view = memoryview(mmap.mmap(-1, size))   # closed by the GC, even after an error
        got = stream.readinto(view)
        out += view[:got]
        if not got:
            return bytes(out)
    raise AssertionError("unreachable")


def plain(body: bytes, first: int = 5000, sizes=ODD, status="200 OK", extra=None):
    """An answer: head + the first ``first`` body bytes in one send, the rest in pieces."""
    def answer(conn, request):
        headers = {"Content-Length": len(body), "ETag": ETAG, **(extra or {})}
        conn.sendall(head(status, headers) + body[:first])
        send_pieces(conn, body[first:], sizes)
    return answer


@pytest.mark.parametrize("sizes", [(1 << 20,), (1000, 3, 1 << 20), (4 << 20,)])
def test_plain_body_read_from_the_socket_in_odd_pieces(sizes):
    """Body bytes arrive with the headers (buffered by http.client) and then in odd
    pieces; a first read smaller than what was buffered takes the rest next time."""
    with ScriptedServer([plain(BODY)]) as server:
        with HttpStream(server.url + "/image.raw", FAST) as stream:
            assert stream.direct and stream.length == len(BODY)
            data = read_all(stream, sizes)
    assert data == BODY and stream.resumes == 0


def test_body_sent_only_after_the_headers_were_read():
    """Nothing of the body is buffered with the headers: the first read waits for it."""
    go = threading.Event()

    def answer(conn, request):
        conn.sendall(head("200 OK", {"Content-Length": len(BODY)}))
        assert go.wait(10)
        send_pieces(conn, BODY, ODD)
    with ScriptedServer([answer]) as server:
        with HttpStream(server.url + "/image.raw", FAST) as stream:
            go.set()
            assert stream.direct
            data = read_all(stream)
    assert data == BODY


def test_chunked_body_goes_through_http_client():
    def answer(conn, request):
        conn.sendall(head("200 OK", {"Transfer-Encoding": "chunked"}))
        at = 0
        for size in itertools.cycle(ODD):
            piece = BODY[at:at + size]
            conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            at += len(piece)
            if not piece:
                return
    with ScriptedServer([answer]) as server:
        with HttpStream(server.url + "/image.raw", FAST) as stream:
            assert not stream.direct and stream.length is None
            data = read_all(stream, (1000, 1 << 20))
    assert data == BODY


def test_connection_dropped_mid_body_is_resumed_with_range():
    cut = 2 * (1 << 20) + 777

    def first(conn, request):
        conn.sendall(head("200 OK", {"Content-Length": len(BODY), "ETag": ETAG}) + BODY[:10])
        send_pieces(conn, BODY[10:cut], ODD)          # then the connection closes

    def resumed(conn, request):
        rest = BODY[cut:]
        conn.sendall(head("206 Partial Content", {
            "Content-Length": len(rest), "ETag": ETAG,
            "Content-Range": f"bytes {cut}-{len(BODY) - 1}/{len(BODY)}"}))
        send_pieces(conn, rest, ODD)
    with ScriptedServer([first, resumed]) as server:
        with HttpStream(server.url + "/image.raw", FAST) as stream:
            assert stream.direct
            data = read_all(stream)
            assert stream.direct      # the resumed body is read directly too
    assert data == BODY and stream.resumes == 1
    assert server.requests[1].headers["range"] == f"bytes={cut}-"
    assert server.requests[1].headers["if-range"] == ETAG


def test_server_ignoring_range_is_skipped_then_read_directly():
    """A 200 to the resume: the bytes already had are skipped (through http.client,
    which may buffer past them), the rest read from the socket."""
    cut = (1 << 20) + 3

    def cut_short(conn, request):
        conn.sendall(head("200 OK", {"Content-Length": len(BODY), "ETag": ETAG}))
        send_pieces(conn, BODY[:cut], ODD)
    with ScriptedServer([cut_short, plain(BODY, first=7000)]) as server:
        with HttpStream(server.url + "/image.raw", FAST) as stream:
            data = read_all(stream)
            assert stream.direct
    assert data == BODY and stream.resumes == 1
    assert server.requests[1].headers["range"] == f"bytes={cut}-"


def test_close_delimited_body_is_read_directly():
    """No Content-Length and ``Connection: close``: http.client hands the socket to
    the response; the body ends when the server closes."""
    def answer(conn, request):
        conn.sendall(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n" + BODY[:100])
        send_pieces(conn, BODY[100:], ODD)
    with ScriptedServer([answer]) as server:
        with HttpStream(server.url + "/image.raw", FAST) as stream:
            assert stream.direct and stream.length is None
            data = read_all(stream)
    assert data == BODY


def test_body_longer_than_announced_is_cut_at_content_length():
    extra = b"X" * 100_000

    def answer(conn, request):
        conn.sendall(head("200 OK", {"Content-Length": len(BODY)}))
        send_pieces(conn, BODY + extra, ODD)
    with ScriptedServer([answer]) as server:
        with HttpStream(server.url + "/image.raw", FAST) as stream:
            data = read_all(stream, (4 << 20,))
            assert stream.readinto(memoryview(bytearray(10))) == 0
    assert data == BODY


def test_stalled_server_times_out_and_is_resumed():
    cut, release = 1 << 20, threading.Event()

    def stall(conn, request):
        conn.sendall(head("200 OK", {"Content-Length": len(BODY), "ETag": ETAG}))
        send_pieces(conn, BODY[:cut], ODD)
        release.wait(10)                               # silent, connection open

    def resumed(conn, request):
        release.set()
        conn.sendall(head("206 Partial Content", {
            "Content-Length": len(BODY) - cut,
            "Content-Range": f"bytes {cut}-{len(BODY) - 1}/{len(BODY)}"}))
        send_pieces(conn, BODY[cut:], ODD)
    options = DownloadOptions(retry_delay=0.01, timeout=0.5, retries=2)
    with ScriptedServer([stall, resumed]) as server:
        with HttpStream(server.url + "/image.raw", options) as stream:
            data = read_all(stream)
    assert hashlib.sha256(data).digest() == hashlib.sha256(BODY).digest()
    assert stream.resumes == 1


def test_truncated_body_fails_after_the_retries():
    def short(conn, request):
        conn.sendall(head("200 OK", {"Content-Length": len(BODY), "ETag": ETAG}) + BODY[:999])

    def refuse_range(conn, request):
        conn.sendall(head("200 OK", {"Content-Length": len(BODY), "ETag": ETAG}) + BODY[:999])
    with ScriptedServer([short, refuse_range, refuse_range]) as server:
        with HttpStream(server.url + "/image.raw", FAST) as stream:
            with pytest.raises(ImageDownloadError, match="failed at byte 999 after 2 retries"):
                read_all(stream)
