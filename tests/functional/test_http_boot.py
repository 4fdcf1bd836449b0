"""The HTTP boot file server against real curl: ranges, conditional requests, resume,
keep-alive, confinement to its root, and many clients at once (a rack booting)."""
from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import threading
from collections import Counter

import pytest

from conductor.netboot.http import BootHttpServer
from conductor.netboot.limits import HttpLimits
from tests.functional.netboot_peers import curl, require
from tests.waiting import wait_until

SIZE = 3 * 1024 * 1024 + 17


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("httpboot")
    root = base / "root"
    (root / "images").mkdir(parents=True)
    data = os.urandom(SIZE)
    (root / "images" / "disk.img").write_bytes(data)
    (root / "boot.ipxe").write_text("#!ipxe\necho hi\n")
    (base / "secret.txt").write_text("outside the root\n")
    os.symlink(base / "secret.txt", root / "escape.txt")
    os.symlink(root / "boot.ipxe", root / "alias.ipxe")
    server = BootHttpServer(root, "127.0.0.1", 0)
    server.start()
    yield server, data, base
    server.stop()


def headers_of(result) -> tuple[int, dict]:
    text = result.stdout.decode("latin-1")
    blocks = [b for b in re.split(r"\r\n\r\n", text) if b.startswith("HTTP/")]
    lines = blocks[-1].split("\r\n")
    status = int(lines[0].split()[1])
    return status, {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}


def head(url, *args):
    return headers_of(curl("-o", "/dev/null", "-D", "-", *args, url))


def test_full_get_and_head(served, tmp_path):
    server, data, _ = served
    out = tmp_path / "out"
    result = curl("-D", "-", "-o", str(out), f"{server.url}/images/disk.img")
    status, headers = headers_of(result)
    assert status == 200 and out.read_bytes() == data
    assert headers["content-length"] == str(SIZE)
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"].startswith('"') and headers["last-modified"].endswith("GMT")
    result = curl("-I", f"{server.url}/images/disk.img")
    status, head_headers = headers_of(result)
    assert status == 200 and head_headers["content-length"] == str(SIZE)
    assert head_headers["etag"] == headers["etag"]
    assert result.stdout.endswith(b"\r\n\r\n")  # no body after HEAD


@pytest.mark.parametrize("spec, first, last", [
    ("10-19", 10, 19), ("-100", SIZE - 100, SIZE - 1), ("1000-", 1000, SIZE - 1),
    ("0-0", 0, 0), (f"{SIZE - 5}-{SIZE + 1000}", SIZE - 5, SIZE - 1), (f"-{SIZE * 2}", 0, SIZE - 1),
])
def test_single_ranges(served, tmp_path, spec, first, last):
    server, data, _ = served
    out = tmp_path / "part"
    status, headers = headers_of(curl("-D", "-", "-o", str(out), "-r", spec,
                                      f"{server.url}/images/disk.img"))
    assert status == 206
    assert headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert out.read_bytes() == data[first:last + 1]


@pytest.mark.parametrize("spec", [f"{SIZE}-", f"{SIZE + 10}-{SIZE + 20}", "-0"])
def test_unsatisfiable_range(served, spec):
    server, _, _ = served
    status, headers = head(f"{server.url}/images/disk.img", "-H", f"Range: bytes={spec}")
    assert status == 416 and headers["content-range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5"])
def test_multi_or_other_unit_range_serves_everything(served, header):
    server, _, _ = served
    status, headers = head(f"{server.url}/images/disk.img", "-H", f"Range: {header}")
    assert status == 200 and headers["content-length"] == str(SIZE)


@pytest.mark.parametrize("header", ["bytes=5-1", "bytes=x-", "bytes=-", "bytes=0x10-",
                                    "bytes=1e3-", "bytes=+5-", "bytes=0-" + "9" * 20])
def test_malformed_bytes_range_is_416(served, header):
    """As nginx: a bytes range that is not two ASCII numbers (of at most 19 digits) in
    order cannot be satisfied (tests/security/test_http_boot_input.py has the attacks)."""
    server, _, _ = served
    status, headers = head(f"{server.url}/images/disk.img", "-H", f"Range: {header}")
    assert status == 416 and headers["content-range"] == f"bytes */{SIZE}"


def test_conditional_requests(served):
    server, _, _ = served
    url = f"{server.url}/images/disk.img"
    _, headers = head(url)
    etag, modified = headers["etag"], headers["last-modified"]
    assert head(url, "-H", f"If-None-Match: {etag}")[0] == 304
    assert head(url, "-H", f'If-None-Match: "other", W/{etag}')[0] == 304
    assert head(url, "-H", 'If-None-Match: "other"')[0] == 200
    assert head(url, "-H", f"If-Modified-Since: {modified}")[0] == 304
    assert head(url, "-H", "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT")[0] == 200
    # If-None-Match wins over If-Modified-Since when both are sent.
    assert head(url, "-H", 'If-None-Match: "other"', "-H",
                f"If-Modified-Since: {modified}")[0] == 200
    assert head(url, "-H", "If-Modified-Since: garbage")[0] == 200


def test_if_range(served):
    server, _, _ = served
    url = f"{server.url}/images/disk.img"
    _, headers = head(url)
    status, _ = head(url, "-r", "0-9", "-H", f"If-Range: {headers['etag']}")
    assert status == 206
    status, h = head(url, "-r", "0-9", "-H", 'If-Range: "stale"')
    assert status == 200 and h["content-length"] == str(SIZE)
    assert head(url, "-r", "0-9", "-H", f"If-Range: {headers['last-modified']}")[0] == 206
    assert head(url, "-r", "0-9", "-H", "If-Range: Mon, 01 Jan 2001 00:00:00 GMT")[0] == 200


def test_resume_with_curl_continue(served, tmp_path):
    server, data, _ = served
    out = tmp_path / "resumed"
    out.write_bytes(data[:123457])  # an interrupted download
    result = curl("-C", "-", "-o", str(out), "-w", "%{http_code}", f"{server.url}/images/disk.img")
    assert result.stdout == b"206", result.stderr
    assert out.read_bytes() == data


def test_keep_alive_reuses_the_connection(served, tmp_path):
    server, _, _ = served
    result = curl("-v", "-o", str(tmp_path / "a"), "-o", str(tmp_path / "b"),
                  f"{server.url}/boot.ipxe", f"{server.url}/images/disk.img")
    assert result.returncode == 0, result.stderr
    assert b"Re-using existing connection" in result.stderr
    assert (tmp_path / "a").read_text() == "#!ipxe\necho hi\n"


@pytest.mark.parametrize("path", ["/../secret.txt", "/images/../../secret.txt",
                                  "/%2e%2e/secret.txt", "/images/%2E%2E/%2e%2e/secret.txt",
                                  "/escape.txt", "/images", "/images/", "/", "/nope",
                                  "/boot.ipxe%00.png", "//etc/passwd"])
def test_confined_to_root_without_listings(served, path):
    server, _, _ = served
    result = curl("--path-as-is", "-o", "-", "-w", "\n%{http_code}", server.url + path)
    assert result.stdout.endswith(b"\n404"), result.stdout[-200:]
    assert b"outside the root" not in result.stdout and b"disk.img" not in result.stdout


def test_symlink_inside_root_is_served(served):
    server, _, _ = served
    assert curl(f"{server.url}/alias.ipxe").stdout == b"#!ipxe\necho hi\n"


def test_other_methods_refused(served):
    server, _, _ = served
    result = curl("-X", "POST", "-d", "x", "-o", "/dev/null", "-w", "%{http_code}",
                  f"{server.url}/boot.ipxe")
    assert result.stdout == b"501"


def test_file_replaced_while_serving_changes_etag(served):
    server, _, base = served
    path = base / "root" / "changing.txt"
    path.write_text("one\n")
    _, first = head(f"{server.url}/changing.txt")
    tmp = base / "root" / ".changing.tmp"
    tmp.write_text("two!\n")
    os.replace(tmp, path)  # how the renderer replaces files
    status, second = head(f"{server.url}/changing.txt", "-H", f"If-None-Match: {first['etag']}")
    assert status == 200 and second["etag"] != first["etag"]
    assert curl(f"{server.url}/changing.txt").stdout == b"two!\n"


def test_http_1_0_gets_the_file_and_a_closed_connection(served, tmp_path):
    server, data, _ = served
    out = tmp_path / "old"
    status, headers = headers_of(curl("--http1.0", "-D", "-", "-o", str(out),
                                      f"{server.url}/images/disk.img"))
    assert status == 200 and headers["connection"] == "close" and out.read_bytes() == data


def test_pipelined_requests_are_answered_in_order(served):
    server, data, _ = served
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /boot.ipxe HTTP/1.1\r\nHost: boot\r\n\r\n"
                     b"GET /images/disk.img HTTP/1.1\r\nHost: boot\r\nRange: bytes=0-3\r\n\r\n"
                     b"HEAD /nope HTTP/1.1\r\nHost: boot\r\nConnection: close\r\n\r\n")
        stream = b""
        while chunk := sock.recv(65536):
            stream += chunk
    answers = []  # (status, body): each body as long as its Content-Length (none for HEAD)
    for method in ("GET", "GET", "HEAD"):
        head, _, stream = stream.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        length = int(re.search(rb"Content-Length: (\d+)", head)[1]) if method == "GET" else 0
        answers.append((status, stream[:length]))
        stream = stream[length:]
    assert answers == [(200, b"#!ipxe\necho hi\n"), (206, data[:4]), (404, b"")]
    assert stream == b""


def start_curls(urls_and_outputs, *args) -> list[subprocess.Popen]:
    return [subprocess.Popen([require("curl"), "--noproxy", "*", "-sS", "-f", *args,
                              "-o", str(out), url], stderr=subprocess.PIPE)
            for url, out in urls_and_outputs]


def finish(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err


def from_own_addresses(url: str, jobs) -> list[subprocess.Popen]:
    """One curl per (output, curl arguments), each from its own loopback address
    (127.0.1.n), as separate machines: from one address, more than ``per_client`` (16)
    connections at once are over the cap, and the server makes room by closing that
    address's longest-idle one, which can be one accepted a moment ago whose request
    it has not read yet (curl: empty reply). How many overlap depends on the load."""
    return [start_curls([(url, out)], "--interface", f"127.0.1.{n + 1}", *args)[0]
            for n, (out, args) in enumerate(jobs)]


def test_fifty_concurrent_downloads_arrive_intact(served, tmp_path):
    """Fifty curl processes at once, as machines of a rack booting together."""
    server, data, _ = served
    digest = hashlib.sha256(data).hexdigest()
    outs = [tmp_path / f"disk{n}" for n in range(50)]
    finish(from_own_addresses(f"{server.url}/images/disk.img", [(out, ()) for out in outs]))
    assert [hashlib.sha256(out.read_bytes()).hexdigest() for out in outs] == [digest] * 50


def test_concurrent_ranges_put_the_file_back_together(served, tmp_path):
    server, data, _ = served
    cuts = [n * SIZE // 24 for n in range(25)]
    parts = [(tmp_path / f"part{n}", f"{first}-{last - 1}")
             for n, (first, last) in enumerate(zip(cuts, cuts[1:]))]
    finish(from_own_addresses(f"{server.url}/images/disk.img",
                              [(out, ("-r", span)) for out, span in parts]))
    assert b"".join(out.read_bytes() for out, _ in parts) == data


def test_two_hundred_idle_connections_hold_no_thread_and_block_nobody(served, tmp_path):
    """Idle keep-alive connections cost a socket each: 200 of them stay open (under the
    caps), the process has the same threads, and downloads go on."""
    _, data, base = served
    server = BootHttpServer(base / "root", "127.0.0.1", 0,
                            HttpLimits(connections=512, per_client=256, idle_timeout=300.0))
    server.start()
    idle: list[socket.socket] = []
    try:
        threads = Counter(t.name for t in threading.enumerate())
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                for _ in range(200)]
        wait_until(lambda: server.open_connections() == 200)
        outs = [tmp_path / f"disk{n}" for n in range(5)]
        finish(start_curls([(f"{server.url}/images/disk.img", out) for out in outs]))
        assert all(out.read_bytes() == data for out in outs)
        wait_until(lambda: server.open_connections() == 200)  # the curls are gone
        # No thread was added (one the test process had may have ended meanwhile: a
        # daemon thread of an earlier test winding down is not the server's).
        added = Counter(t.name for t in threading.enumerate()) - threads
        assert not added, added
        idle[0].sendall(b"HEAD /boot.ipxe HTTP/1.1\r\nHost: boot\r\n\r\n")  # still served
        assert idle[0].recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        for sock in idle:
            sock.close()
        server.stop()
