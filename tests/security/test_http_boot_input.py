"""Malformed requests against the HTTP boot server, replayed on loopback.

The attack: a 6000-character path (ENAMETOOLONG), ``Range: bytes=0-`` followed by
5000 digits (int() refuses more than 4300), or a non-ASCII digit in a Range
(``'²'.isdigit()`` but ``int('²')`` fails) raised in the handler: the connection was
dropped without an answer and a traceback went to stderr. Now each is a clean 4xx
and the server keeps serving; a request announcing a body (which a file server never
reads) closes its connection, so the body cannot be taken for a second request.
Heads larger than any boot client sends are a 414 or 431 (read no further), and
header lines that could hide a field from a proxy in front (folded, a space before
the colon) a 400.
"""
from __future__ import annotations

import http.client
import logging
import socket

import pytest

from conductor.netboot.http import BootHttpServer
from tests.functional.netboot_peers import curl

SIZE = 100_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("httpboot")
    root = base / "root"
    root.mkdir()
    (root / "k").write_bytes(b"k" * SIZE)
    (base / "secret.txt").write_text("outside the root\n")
    srv = BootHttpServer(root, "127.0.0.1", 0)
    srv.start()
    yield srv
    srv.stop()


def send(server, raw: bytes) -> http.client.HTTPResponse:
    """One raw request; its (complete) response, read the way clients read it."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(raw)
    answer = http.client.HTTPResponse(sock)
    answer.begin()  # raises RemoteDisconnected on a dropped connection
    answer.body = answer.read()
    answer.sock_ = sock
    return answer


def get(path: bytes, *headers: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: boot\r\n" + b"".join(
        h + b"\r\n" for h in headers) + b"\r\n"


ATTACKS = {
    "6000-character path": (get(b"/" + b"a" * 6000), 414),
    "1500-character name": (get(b"/" + b"a" * 1500), 404),     # ENAMETOOLONG
    "deep path": (get(b"/a" * 900), 404),
    "5000-digit range end": (get(b"/k", b"Range: bytes=0-" + b"9" * 5000), 416),
    "5000-digit range start": (get(b"/k", b"Range: bytes=" + b"1" * 5000 + b"-"), 416),
    "latin-1 superscript digit": (get(b"/k", b"Range: bytes=0-\xb2"), 416),
    "arabic-indic digits": (get(b"/k", "Range: bytes=\u0661-\u0662".encode()), 416),
    "huge suffix": (get(b"/k", b"Range: bytes=-" + b"9" * 5000), 416),
    "absurd If-Modified-Since": (get(b"/k", b"If-Modified-Since: Mon, 01 Jan 99999999999 "
                                             b"00:00:00 GMT"), 200),
    "absurd If-Range date": (get(b"/k", b"Range: bytes=0-1",
                                 b"If-Range: Mon, 01 Jan 99999999999 00:00:00 GMT"), 200),
    "broken IPv6 authority": (get(b"http://[::1/k"), 404),
    "asterisk target": (get(b"*"), 404),
    "NUL in path": (get(b"/k%00.txt"), 404),
    "escape by dot-dot": (get(b"/%2e%2e/secret.txt"), 404),
    # Heads no boot client sends: refused whole, never read without end.
    "20000-character request line": (get(b"/" + b"a" * 20000), 414),
    "20 KiB of header fields": (get(b"/k", *[b"X-Pad-%d: %s" % (n, b"p" * 1000)
                                          for n in range(20)]), 431),
    "101 header fields": (get(b"/k", *[b"X-%d: 1" % n for n in range(101)]), 431),
    # Ways to hide a header from a proxy in front (RFC 9112 5.1, 5.2): refused.
    "folded header line": (get(b"/k", b"X-A: 1", b" Range: bytes=0-1"), 400),
    "space before the colon": (get(b"/k", b"Range : bytes=0-1"), 400),
    "header line without a colon": (get(b"/k", b"Range bytes=0-1"), 400),
    "HTTP/2.0 request line": (b"GET /k HTTP/2.0\r\nHost: boot\r\n\r\n", 505),
    "no version (HTTP/0.9)": (b"GET /k\r\n\r\n", 400),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_malformed_requests_get_a_clean_answer_and_serving_goes_on(server, name, caplog,
                                                                  capfd):
    caplog.set_level(logging.DEBUG, logger="conductor.netboot.http")
    raw, status = ATTACKS[name]
    answer = send(server, raw)
    assert answer.status == status, (answer.status, answer.body[:200])
    if status == 416:
        assert answer.getheader("Content-Range") == f"bytes */{SIZE}"
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    done = curl("-f", "-o", "/dev/null", "-w", "%{http_code}", f"{server.url}/k")
    assert done.stdout == b"200", done.stderr


def test_a_body_is_never_taken_for_the_next_request(server):
    """A GET announcing a body that hides a second request: one answer, then close."""
    hidden = b"GET /k HTTP/1.1\r\nHost: boot\r\n\r\n"
    answer = send(server, get(b"/k", b"Content-Length: %d" % len(hidden)) + hidden)
    assert answer.status == 200 and answer.getheader("Connection") == "close"
    assert answer.sock_.recv(100) == b""  # nothing more: the hidden request was not served


def test_keep_alive_still_works_for_well_formed_requests(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", "/k")
        first = connection.getresponse()
        assert first.status == 200 and len(first.read()) == SIZE
        sock = connection.sock
        connection.request("GET", "/k", headers={"Range": "bytes=0-9"})
        second = connection.getresponse()
        assert second.status == 206 and second.read() == b"k" * 10
        assert connection.sock is sock  # the same connection served both
    finally:
        connection.close()
