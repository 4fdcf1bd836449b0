"""Bad input through the real stack: curl against ``metalcast serve`` (waitress + Flask).

The unit tests (tests/integration/api/test_bad_input.py) walk every route with Flask's test
client; this checks that the refusals survive the real WSGI server and a real client:
curl's default form Content-Type, a declared body above MAX_CONTENT_LENGTH, chunked
bodies, NUL in the URL, deep nesting. Each answer must be Ironic's ``error_message``
body with a 4xx, and the node the requests aim at must be unchanged.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.functional.helpers import api_call, unique
from tests.functional.tools import require

VERSION = "X-OpenStack-Ironic-API-Version: latest"


def curl(url: str, *args: str, data: bytes | None = None) -> tuple[int, dict, str]:
    """(status, headers, body) of one curl request; ``data`` goes to stdin."""
    done = subprocess.run([require("curl"), "-sS", "--noproxy", "*", "--max-time", "60",
                           "-D", "-", "-H", VERSION, *args, url], input=data,
                          capture_output=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    head, _, body = done.stdout.decode(errors="replace").partition("\r\n\r\n")
    while head.startswith("HTTP/1.1 100"):  # "Expect: 100-continue" before a big body
        head, _, body = body.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def fault(body: str) -> str:
    """The faultstring of Ironic's error body (JSON inside a JSON string)."""
    return json.loads(json.loads(body)["error_message"])["faultstring"]


@pytest.fixture(scope="module")
def node(server):
    created = api_call(server.url, "POST", "/v1/nodes",
                       {"driver": "fake-hardware", "name": unique("bad-input")}, ok=(201,))
    yield created["uuid"]
    api_call(server.url, "DELETE", f"/v1/nodes/{created['uuid']}", ok=(204,))


@pytest.mark.parametrize("method, path, args, data, status, words", [
    ("POST", "/v1/nodes", ["-d", '{"driver": "fake-hardware"}'], None, 415,
     "application/json"),                                     # curl -d: a form body
    ("PATCH", "/v1/nodes/{node}", ["-d", '[{"op": "add", "path": "/extra/x", "value": 1}]'],
     None, 415, "application/json"),
    ("POST", "/v1/nodes", ["-H", "Content-Type: application/json", "--data-binary", "@-"],
     b"[" * 100_000, 400, "nested too deeply"),
    ("PUT", "/v1/nodes/{node}/states/power", ["-H", "Content-Type: application/json",
                                              "--data-binary", "@-"],
     b'{"target": "power on", "timeout": NaN}', 400, "NaN"),
    ("PUT", "/v1/nodes/{node}/maintenance", ["-H", "Content-Type: application/json",
                                             "--data-binary", "@-"],
     b'{"reason": "half', 400, "Malformed JSON"),
    ("PUT", "/v1/nodes/{node}/states/provision",
     ["-H", "Content-Type: application/json", "-H", "Transfer-Encoding: chunked",
      "--data-binary", "@-"], b'"manage"', 400, "JSON object"),
    ("GET", "/v1/nodes/a%00b", [], None, 400, "NUL"),
    ("GET", "/v1/nodes?marker=%00", [], None, 400, "NUL"),
    ("DELETE", "/v1/nodes", [], None, 405, "not allowed"),
    ("GET", "/v1/nodes", ["-H", "X-OpenStack-Ironic-API-Version: " + "9" * 5000 + ".1"],
     None, 400, "Invalid value"),
])
def test_refusals_through_waitress(server, node, method, path, args, data, status, words):
    before = api_call(server.url, "GET", f"/v1/nodes/{node}")
    count = len(api_call(server.url, "GET", "/v1/nodes")["nodes"])
    got, headers, body = curl(server.url + path.format(node=node), "-X", method, *args,
                              data=data)
    assert got == status, body
    assert headers.get("content-type") == "application/json"
    assert words in fault(body)
    assert api_call(server.url, "GET", f"/v1/nodes/{node}") == before
    assert len(api_call(server.url, "GET", "/v1/nodes")["nodes"]) == count


def test_a_body_above_the_limit_is_a_413_and_nothing_is_read_into_json(server, node):
    """128 MiB + 1 byte (MAX_CONTENT_LENGTH in api/__init__.py), streamed by curl."""
    before = api_call(server.url, "GET", f"/v1/nodes/{node}")
    size = 128 * 1024 * 1024 + 1
    got, _, body = curl(f"{server.url}/v1/nodes/{node}/maintenance", "-X", "PUT",
                        "-H", "Content-Type: application/json", "--data-binary", "@-",
                        data=b'{"reason": "' + b"x" * (size - 14) + b'"}')
    assert got == 413, body[:300]
    assert "exceeds the capacity limit" in fault(body) or "too large" in fault(body).lower()
    assert api_call(server.url, "GET", f"/v1/nodes/{node}") == before

