"""The HTTP boot server's pure message rules: request heads, Range, the request
target, conditional requests and response heads.

The server itself runs against curl in tests/functional/test_http_boot.py; the attacks
(malformed requests, connection floods, slowloris) are replayed in tests/security/.
"""
from __future__ import annotations

import os
from http import HTTPStatus

import pytest

from conductor.netboot.http_messages import (
    BadRequest,
    Request,
    error_body,
    file_fields,
    not_modified,
    parse_head,
    parse_range,
    response_head,
    target_path,
    wanted_range,
)

SIZE = 1000


@pytest.mark.parametrize("header, span", [
    ("bytes=0-9", (0, 9)), ("bytes=990-", (990, 999)), ("bytes=-10", (990, 999)),
    ("bytes=5-5000", (5, 999)), ("bytes=-5000", (0, 999)), (" BYTES = 1-2", (1, 2)),
    ("bytes=0-" + "9" * 19, (0, 999)),
])
def test_satisfiable_ranges(header, span):
    assert parse_range(header, SIZE) == span


@pytest.mark.parametrize("header", ["bytes=0-1,4-5", "items=0-5", "=0-5", "none"])
def test_ranges_served_whole(header):
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize("header", [
    "bytes=1000-", "bytes=-0", "bytes=9-1", "bytes=x-", "bytes=-", "bytes=5",
    "bytes=0-" + "9" * 20, "bytes=0-" + "9" * 5000, "bytes=" + "1" * 5000 + "-",
    "bytes=0-\u00b2", "bytes=\u0661-\u0662", "bytes=0x1-", "bytes=+1-", "bytes=1_0-",
    "bytes= 1 - 2 ", "bytes=1e3-",
])
def test_unsatisfiable_or_malformed_ranges_are_416(header):
    """Never an exception: int() of 5000 digits or of '²' raised before."""
    assert parse_range(header, SIZE) == "416"


def test_empty_file_has_no_suffix_range():
    assert parse_range("bytes=-5", 0) == "416"


@pytest.mark.parametrize("target, path", [
    ("/boot.ipxe", "/boot.ipxe"), ("/a%20b?x=1#f", "/a b"), ("//double/slash", "//double/slash"),
    ("http://host:8080/k?q", "/k"), ("HTTP://host/k", "/k"), ("/%ff", "/\ufffd"),
])
def test_target_path(target, path):
    assert target_path(target) == path


@pytest.mark.parametrize("target", ["*", "boot.ipxe", "", "http://[::1/k", "ftp://h/k"])
def test_targets_naming_no_file(target):
    assert target_path(target) is None


def test_a_request_head_is_parsed_into_method_target_version_and_fields():
    request = parse_head(b"\r\nGET /boot.ipxe HTTP/1.1\r\nHost: boot\r\nRange:  bytes=0-9 \r\n"
                         b"X-Two: first\r\nx-two: second")
    assert (request.method, request.target, request.version) == ("GET", "/boot.ipxe", (1, 1))
    assert request.get("host") == "boot" and request.get("range") == "bytes=0-9"
    assert request.get("x-two") == "first"  # the first of a repeated field
    assert request.line == "GET /boot.ipxe HTTP/1.1"


def test_a_bare_lf_ends_lines_too():
    request = parse_head(b"HEAD /k HTTP/1.0\nConnection: keep-alive")
    assert request.method == "HEAD" and request.keep_alive


@pytest.mark.parametrize("head, keep", [
    (b"GET / HTTP/1.1", True), (b"GET / HTTP/1.1\r\nConnection: close", False),
    (b"GET / HTTP/1.1\r\nConnection: TE, Close", False), (b"GET / HTTP/1.0", False),
    (b"GET / HTTP/1.0\r\nConnection: Keep-Alive", True),
])
def test_keep_alive_follows_the_version_and_connection_field(head, keep):
    assert parse_head(head).keep_alive is keep


@pytest.mark.parametrize("fields, body", [
    (b"", False), (b"Content-Length: 0", False), (b"Content-Length: 5", True),
    (b"Transfer-Encoding: chunked", True), (b"Content-Length: x", True),
    (b"Expect: 100-continue\r\nContent-Length: 10", True),
])
def test_a_request_announcing_a_body_is_recognised(fields, body):
    head = b"GET /k HTTP/1.1\r\nHost: boot" + (b"\r\n" + fields if fields else b"")
    assert parse_head(head).announces_body is body


@pytest.mark.parametrize("head, status", [
    (b"GET /k", HTTPStatus.BAD_REQUEST),                         # HTTP/0.9: no version
    (b"GET /k HTTP/1.1 extra", HTTPStatus.BAD_REQUEST),
    (b"GET /k HTTX/1.1", HTTPStatus.BAD_REQUEST),
    (b"G(T /k HTTP/1.1", HTTPStatus.BAD_REQUEST),                # not a token
    (b"GET /k HTTP/2.0", HTTPStatus.HTTP_VERSION_NOT_SUPPORTED),
    (b"GET /k HTTP/0.9", HTTPStatus.BAD_REQUEST),
    (b"POST /k HTTP/1.1", HTTPStatus.NOT_IMPLEMENTED),
    (b"DELETE /k HTTP/1.1", HTTPStatus.NOT_IMPLEMENTED),
    (b"GET /k HTTP/1.1\r\nHost: boot\r\n folded: value", HTTPStatus.BAD_REQUEST),
    (b"GET /k HTTP/1.1\r\nHost : boot", HTTPStatus.BAD_REQUEST),  # space before colon
    (b"GET /k HTTP/1.1\r\nno colon here", HTTPStatus.BAD_REQUEST),
    (b"GET /k HTTP/1.1\r\n: empty name", HTTPStatus.BAD_REQUEST),
    (b"GET /k HTTP/1.1" + b"\r\nX: y" * 101, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE),
    (b"", HTTPStatus.BAD_REQUEST),
])
def test_bad_heads_are_refused_with_the_status_that_says_why(head, status):
    with pytest.raises(BadRequest) as caught:
        parse_head(head)
    assert caught.value.status == status and caught.value.detail


def stat_of(size=1000, mtime=1_700_000_000.0, ino=7) -> os.stat_result:
    return os.stat_result((0o100644, ino, 0, 1, 0, 0, size, mtime, mtime, mtime))


def request_with(**fields) -> Request:
    return Request("GET", "/k", (1, 1), {k.replace("_", "-"): v for k, v in fields.items()},
                   "GET /k HTTP/1.1")


def test_if_none_match_wins_over_if_modified_since():
    tag, mtime = '"a-1"', 1_700_000_000.0
    since = "Tue, 14 Nov 2023 22:13:20 GMT"  # == mtime
    assert not_modified(request_with(if_modified_since=since), tag, mtime)
    assert not_modified(request_with(if_none_match='"x", W/"a-1"'), tag, mtime)
    assert not_modified(request_with(if_none_match="*"), tag, mtime)
    assert not not_modified(request_with(if_none_match='"x"', if_modified_since=since),
                            tag, mtime)
    assert not not_modified(request_with(if_modified_since="garbage"), tag, mtime)


def test_if_range_names_the_version_a_range_applies_to():
    st, tag = stat_of(), '"a-1"'
    date = "Tue, 14 Nov 2023 22:13:20 GMT"
    assert wanted_range(request_with(range="bytes=0-9"), st, tag) == (0, 9)
    assert wanted_range(request_with(range="bytes=0-9", if_range=tag), st, tag) == (0, 9)
    assert wanted_range(request_with(range="bytes=0-9", if_range=f"W/{tag}"), st, tag) is None
    assert wanted_range(request_with(range="bytes=0-9", if_range='"b"'), st, tag) is None
    assert wanted_range(request_with(range="bytes=0-9", if_range=date), st, tag) == (0, 9)
    assert wanted_range(request_with(range="bytes=0-9",
                                     if_range="Mon, 01 Jan 2001 00:00:00 GMT"), st, tag) is None


def parse_response(raw: bytes) -> tuple[str, dict[str, str]]:
    assert raw.endswith(b"\r\n\r\n")
    status, *lines = raw[:-4].decode("latin-1").split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines)


def test_response_heads_carry_server_date_and_connection():
    status, fields = parse_response(response_head(
        HTTPStatus.PARTIAL_CONTENT, file_fields(stat_of(), '"a-1"', 10, ".ipxe"), close=True))
    assert status == "HTTP/1.1 206 Partial Content"
    assert fields["Server"] == "metalcast-boot" and fields["Date"].endswith(" GMT")
    assert fields["Content-Type"] == "text/plain; charset=utf-8"
    assert fields["Content-Length"] == "10" and fields["ETag"] == '"a-1"'
    assert fields["Last-Modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert fields["Connection"] == "close"
    _, kept = parse_response(response_head(HTTPStatus.OK, [], close=False))
    assert "Connection" not in kept
    _, old = parse_response(response_head(HTTPStatus.OK, [], close=False, keep_alive_1_0=True))
    assert old["Connection"] == "keep-alive"


def test_a_304_announces_no_length():
    assert "Content-Length" not in dict(file_fields(stat_of(), '"a"', None))


def test_error_bodies_say_the_status_and_why():
    assert error_body(HTTPStatus.NOT_FOUND) == b"404 Not Found\n"
    assert error_body(HTTPStatus.BAD_REQUEST, "folded header line") == \
        b"400 Bad Request: folded header line\n"
