"""The HTTP boot server's pure request parsing: Range and the request target.

The server itself runs against curl in tests/functional/test_http_boot.py; the attacks
(malformed requests, connection floods) are replayed in tests/security/.
"""
from __future__ import annotations

import pytest

from conductor.netboot.http import parse_range, target_path

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
