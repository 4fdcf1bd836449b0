"""The agent's HTTPS request handler answers broken requests with a clear JSON 4xx and
runs nothing: a real ``serve_https`` on 127.0.0.1:0 in a thread, raw requests over TLS,
for what only the handler sees (the declared body length, chunked bodies, methods it
has no handler for, broken request lines). The router's refusals are unit-tested in
tests/unit/ramdisk_agent/test_server_bad_input.py."""
from __future__ import annotations

import json
import socket
import ssl
import threading

import pytest

from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.server import MAX_BODY, create_app, make_certificate, serve_https
from tests.unit.ramdisk_agent.test_server_bad_input import COMMANDS, TOKEN, Probe, nothing_ran


# -- the HTTPS request handler --------------------------------------------------------
@pytest.fixture()
def https(tmp_path):
    """(port, TLS context trusting the agent's certificate, probe, runner)."""
    cert, key, _ = make_certificate("127.0.0.1", str(tmp_path))
    probe = Probe()
    runner = CommandRunner([probe])
    httpd = serve_https(create_app(runner, lambda: TOKEN), "127.0.0.1", 0, cert, key)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd.server_port, ssl.create_default_context(cafile=cert), probe, runner
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def raw_request(https, request: bytes) -> tuple[int, dict, bytes]:
    """Send ``request`` as is over TLS; (status, headers, body) of the answer."""
    port, context = https[0], https[1]
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                             server_hostname="127.0.0.1") as tls:
        tls.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        length = int(headers.get("Content-Length", 0))
        while len(body) < length:
            chunk = tls.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body


def request(method: str, path: str = COMMANDS, headers: str = "", body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n").encode() + body


@pytest.mark.parametrize("raw, status", [
    (request("POST", headers=f"Content-Length: {MAX_BODY + 1}\r\n"), 413),
    (request("POST", headers=f"Content-Length: {10 ** 30}\r\n"), 413),
    (request("POST", headers="Content-Length: -5\r\n"), 400),
    (request("POST", headers="Content-Length: twelve\r\n"), 400),
    (request("POST", headers="Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"), 411),
    (request("PATCH", headers="Content-Length: 2\r\n", body=b"{}"), 405),
    (request("OPTIONS"), 405), (request("FOO"), 405), (request("HEAD", "/v1/status"), 405),
    (request("GET", "/" + "x" * 70_000), 414),
    (b"GARBAGE\r\n\r\n", 400), (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505),
    (request("GET", headers="X-Long: " + "h" * 70_000 + "\r\n"), 431),
    (request("GET", headers="".join(f"X-{i}: v\r\n" for i in range(200))), 431),
], ids=["too long", "absurd length", "negative length", "length not a number", "chunked",
        "PATCH", "OPTIONS", "unknown method", "HEAD", "URI too long", "no request line",
        "HTTP/9.9", "header too long", "too many headers"])
def test_the_https_handler_refuses_broken_requests_in_json(https, raw, status):
    got, headers, body = raw_request(https, raw)
    assert got == status, (got, body[:200])
    if status >= 500:  # 505: the client speaks an HTTP version nobody does
        return
    if raw.startswith(b"HEAD "):
        assert body == b"" and headers.get("Content-Type") == "application/json"
        return
    assert headers.get("Content-Type") == "application/json", headers
    document = json.loads(body)
    assert document["faultcode"] == "Client" and document["faultstring"], document
    nothing_ran(https[2], https[3])


def test_the_https_handler_still_serves_after_a_refusal(https):
    """A refused request closes its connection; the next one is answered normally."""
    status, headers, _ = raw_request(https, request(
        "POST", headers=f"Content-Length: {MAX_BODY + 1}\r\n"))
    assert status == 413 and headers.get("Connection") == "close"
    body = json.dumps({"name": "probe.echo", "params": {"text": "hi"}}).encode()
    status, _, answer = raw_request(https, request(
        "POST", headers=f"Content-Type: application/json\r\nContent-Length: {len(body)}"
        "\r\n", body=body))
    assert status == 200 and json.loads(answer)["command_result"] == {"text": "hi"}
