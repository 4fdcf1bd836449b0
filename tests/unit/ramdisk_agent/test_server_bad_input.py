"""The ramdisk agent's command API answers bad input with a clear 4xx and runs nothing.

The router (``CommandApi.dispatch``) through the WSGI test client, as
tests/unit/ramdisk_agent/test_server.py drives it, for bodies, command names, parameters,
tokens, paths and methods; the HTTPS request handler itself is driven over TLS in
tests/integration/ramdisk_agent/test_server_https.py. Every refusal must be a JSON
``{faultcode: "Client", faultstring}`` with a 4xx, and no command may have been recorded
or run.
"""
from __future__ import annotations

import json

import pytest
from werkzeug.test import Client

from ramdisk_agent.commands import CommandRunner, Extension, async_command, sync_command
from ramdisk_agent.ramdisk.configdrive import MAX_CONFIGDRIVE
from ramdisk_agent.server import MAX_BODY, create_app

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
    return Client(create_app(runner, lambda: TOKEN)), probe, runner


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
    client = Client(create_app(runner, lambda: None))
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




# -- nothing is read before the route, the method and the token are checked ---------------

class UnreadableBody:
    """A request body that fails the test if the API reads a byte of it."""

    def read(self, *args):
        raise AssertionError("the body was read")


def call(app, method: str, path: str, query: str, length: int) -> tuple[str, dict]:
    answer = {}
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_LENGTH": str(length), "wsgi.input": UnreadableBody(),
               "wsgi.url_scheme": "https", "SERVER_NAME": "agent"}
    body = b"".join(app(environ, lambda status, headers: answer.update(status=status)))
    return answer["status"], json.loads(body)


@pytest.mark.parametrize("method, path, query, status", [
    ("POST", "/v1/commands/", "agent_token=wrong", "401"),
    ("POST", "/v1/commands/", "", "401"),
    ("POST", "/v1/status", "", "405"),
    ("POST", "/v1/nowhere", f"agent_token={TOKEN}", "404"),
    ("POST", "/v1/commands/", f"agent_token={TOKEN}", "413"),   # over MAX_BODY
])
def test_refusals_come_before_the_body_is_read(agent, method, path, query, status):
    """Three 60 MiB POSTs with a wrong token took the agent from 36 to 261 MiB: the
    whole body was read, then the token checked (replayed in tests/security/)."""
    client, probe, runner = agent
    app = create_app(runner, lambda: TOKEN)
    length = MAX_BODY + 1 if status == "413" else 60 << 20
    got, document = call(app, method, path, query, length)
    assert got.startswith(status) and document["faultcode"] == "Client", (got, document)
    nothing_ran(probe, runner)


@pytest.mark.parametrize("path", ["/v1/status", "/", "/v1/"])
def test_routes_without_a_body_read_none_of_one_sent(agent, path):
    client, probe, runner = agent
    got, document = call(create_app(runner, lambda: TOKEN), "GET", path, "", 60 << 20)
    assert got.startswith("200") and document


def test_the_body_limit_fits_the_largest_config_drive_the_agent_accepts():
    """An incompressible 64 MiB ISO (configdrive.MAX_CONFIGDRIVE, Ironic's limit),
    gzipped (zlib's compressBound: + ~0.03 %, + 18 bytes of gzip framing), in base64,
    inside write_image's params, fits; a Nova or metalsmith config drive is ~10-100 KiB."""
    iso = MAX_CONFIGDRIVE
    gzipped = iso + (iso >> 12) + (iso >> 14) + (iso >> 25) + 13 + 18
    encoded = 4 * -(-gzipped // 3)
    params = len(json.dumps({"name": "deploy.write_image", "params": {
        "image_info": {"id": "x" * 64, "urls": ["https://" + "h" * 2000],
                       "os_hash_algo": "sha512", "os_hash_value": "f" * 128,
                       "disk_format": "raw"}, "configdrive": ""}}))
    assert encoded + params <= MAX_BODY <= 96 << 20
