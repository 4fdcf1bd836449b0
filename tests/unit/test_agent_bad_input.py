"""The ramdisk agent's command API answers bad input with a clear 4xx and runs nothing.

Two layers: the router (``CommandApi.dispatch``) through the WSGI test client, as
tests/unit/test_agent_api.py drives it, for bodies, command names, parameters, tokens,
paths and methods; and the HTTPS request handler itself (a real ``serve_https`` on
127.0.0.1:0 in a thread, raw requests over TLS) for what only it sees: the declared
body length, chunked bodies, methods it has no handler for, broken request lines.
Every refusal must be a JSON ``{faultcode: "Client", faultstring}`` with a 4xx, and no
command may have been recorded or run.
"""
from __future__ import annotations

import json
import socket
import ssl
import threading

import pytest

from ramdisk_agent.commands import CommandRunner, Extension, async_command, sync_command
from ramdisk_agent.server import MAX_BODY, create_app, make_certificate, serve_https

TOKEN = "t0ken-for-bad-input"
COMMANDS = f"/v1/commands/?agent_token={TOKEN}"
MALFORMED = {
    "not json": b"this is not json", "truncated": b'{"name": "probe.echo", "par',
    "invalid utf-8": b'{"name": "probe.\xff"}', "NUL byte": b'{"name": "probe\x00.echo"}',
    "deep nesting": b"[" * 100_000, "NaN": b'{"name": "probe.echo", "params": {"text": NaN}}',
    "empty": b"", "spaces": b"   ", "list": b'[{"name": "probe.echo"}]',
    "string": b'"probe.echo"', "number": b"42", "null": b"null", "true": b"true",
    "no name": b'{"params": {"text": "x"}}',
}
BAD_COMMANDS = {
    "unknown": {"name": "probe.nope"}, "unknown extension": {"name": "nope.echo"},
    "no dot": {"name": "echo"}, "empty name": {"name": ""}, "name number": {"name": 5},
    "name list": {"name": ["probe.echo"]}, "name null": {"name": None},
    "name NUL": {"name": "probe.echo\x00"}, "name long": {"name": "p" * 10_000},
    "private method": {"name": "probe.commands"}, "dunder": {"name": "probe.__init__"},
    "params list": {"name": "probe.echo", "params": ["x"]},
    "params string": {"name": "probe.echo", "params": "text=x"},
    "params number": {"name": "probe.echo", "params": 5},
    "unknown param": {"name": "probe.echo", "params": {"text": "x", "bogus": 1}},
    "missing param": {"name": "probe.echo", "params": {}},
    "self param": {"name": "probe.echo", "params": {"self": 1, "text": "x"}},
    "async unknown param": {"name": "probe.slow", "params": {"bogus": 1}},
}
BAD_TOKENS = {"missing": "", "wrong": "agent_token=wrong", "empty": "agent_token=",
              "prefix": f"agent_token={TOKEN[:-1]}", "longer": f"agent_token={TOKEN}x",
              "case": f"agent_token={TOKEN.upper()}", "NUL": f"agent_token={TOKEN}%00",
              "unicode": "agent_token=%E2%98%83", "bad percent": "agent_token=%ZZ",
              "other name": f"token={TOKEN}"}


class Probe(Extension):
    """Test extension that records every call, so 'nothing ran' can be checked."""
    name = "probe"

    def __init__(self, agent=None):
        super().__init__(agent)
        self.calls: list = []

    @sync_command
    def echo(self, text):
        self.calls.append(("echo", text))
        return {"text": text}

    @async_command
    def slow(self):
        self.calls.append(("slow",))


@pytest.fixture()
def agent():
    """(WSGI client, probe extension, runner) with a token already issued."""
    probe = Probe()
    runner = CommandRunner([probe])
    return create_app(runner, lambda: TOKEN).test_client(), probe, runner


def refused(response, status: int | set) -> str:
    """The faultstring of a refusal, after checking its status and shape."""
    allowed = {status} if isinstance(status, int) else status
    assert response.status_code in allowed, (response.status_code, response.get_data())
    body = json.loads(response.get_data())
    assert body["faultcode"] == "Client" and body["faultstring"], body
    return body["faultstring"]


def nothing_ran(probe, runner) -> None:
    assert probe.calls == [] and runner.list() == []


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_bodies_that_are_not_a_command_are_a_400(agent, kind):
    client, probe, runner = agent
    response = client.post(COMMANDS, data=MALFORMED[kind],
                           headers={"Content-Type": "application/json"})
    assert "Body must be" in refused(response, 400)
    nothing_ran(probe, runner)


@pytest.mark.parametrize("kind", sorted(BAD_COMMANDS))
def test_unknown_commands_and_wrong_params_are_a_400(agent, kind):
    client, probe, runner = agent
    response = client.post(COMMANDS, json=BAD_COMMANDS[kind])
    message = refused(response, 400)
    assert "Unknown command" in message or "params" in message.lower() \
        or "parameters" in message, message
    nothing_ran(probe, runner)


def test_unknown_command_lists_what_exists(agent):
    client, _, _ = agent
    message = refused(client.post(COMMANDS, json={"name": "probe.nope"}), 400)
    assert "probe.echo" in message and "probe.slow" in message


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/commands/", {"name": "probe.echo", "params": {"text": "x"}}),
    ("POST", "/commands", {"name": "probe.echo", "params": {"text": "x"}}),
    ("POST", "/v1/commands/", None),                       # bad body, bad token: 401
    ("GET", "/v1/commands/", None), ("GET", "/v1/commands/some-id", None)])
def test_a_missing_or_wrong_token_is_a_401(agent, kind, method, path, body):
    client, probe, runner = agent
    response = client.open(f"{path}?{BAD_TOKENS[kind]}", method=method, json=body)
    assert refused(response, 401) == "Token invalid."
    nothing_ran(probe, runner)


def test_no_token_issued_yet_refuses_every_token():
    probe = Probe()
    runner = CommandRunner([probe])
    client = create_app(runner, lambda: None).test_client()
    for query in ("", "agent_token=", "agent_token=None", f"agent_token={TOKEN}"):
        response = client.post(f"/v1/commands/?{query}", json={"name": "probe.echo",
                                                               "params": {"text": "x"}})
        assert refused(response, 401) == "Token invalid."
    nothing_ran(probe, runner)


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v2/", 404), ("GET", "/v1/nothing", 404), ("GET", "/v1/commands/a/b", 404),
    ("GET", "/v1/status/x", 404), ("GET", "/..%2F..%2Fetc%2Fpasswd", 404),
    ("GET", "/v1/%00", 404), ("GET", "/" + "x" * 5000, 404),
    ("GET", f"/v1/commands/no-such-id?agent_token={TOKEN}", 404),
    ("GET", f"/v1/commands/%00?agent_token={TOKEN}&wait=true", 404),
    ("GET", f"/v1/commands/{'i' * 5000}?agent_token={TOKEN}", 404),
    ("POST", "/v1/status", 405), ("DELETE", COMMANDS, 405), ("PUT", COMMANDS, 405),
    ("PATCH", COMMANDS, 405), ("POST", "/", 405), ("DELETE", "/v1/", 405),
    ("POST", f"/v1/commands/some-id?agent_token={TOKEN}", 405),
    ("FOO", COMMANDS, 405)])
def test_unknown_paths_and_methods(agent, method, path, status):
    client, probe, runner = agent
    refused(client.open(path, method=method, json={"name": "probe.echo",
                                                   "params": {"text": "x"}}), status)
    nothing_ran(probe, runner)


def test_bad_query_values_change_nothing_but_the_wait(agent):
    """``wait`` is a flag (anything but true/1/yes is false), never an error."""
    client, probe, runner = agent
    for wait in ("maybe", "", "%00", "-1", "true&wait=false"):
        response = client.post(f"{COMMANDS}&wait={wait}", json={"name": "probe.echo",
                                                               "params": {"text": wait}})
        assert response.status_code == 200, response.get_data()
    assert [c[1] for c in probe.calls] == ["maybe", "", "%00", "-1", "true&wait=false"]


def test_a_good_request_still_works_after_the_bad_ones(agent):
    client, probe, runner = agent
    for data in MALFORMED.values():
        client.post(COMMANDS, data=data, headers={"Content-Type": "application/json"})
    response = client.post(f"{COMMANDS}&wait=true", json={"name": "probe.echo",
                                                         "params": {"text": "ok"}})
    assert response.status_code == 200 and response.get_json()["command_result"] == \
        {"text": "ok"}
    assert len(runner.list()) == 1


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
