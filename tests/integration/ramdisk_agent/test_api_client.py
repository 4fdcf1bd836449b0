"""The agent's API client (ramdisk_agent/api_client.py) against a real HTTP/1.1
server written here: the start-up calls share one kept connection and a heartbeat
closes it; a kept connection the server closed meanwhile is replaced and the request
sent once on the new one; a request that fails on a new connection is not sent
twice; with a proxy in the environment, calls go through it as before."""
from __future__ import annotations

import http.server
import json
import threading

import pytest

from ramdisk_agent.api_client import ApiClient
from ramdisk_agent.errors import HeartbeatError

NODE = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"


class Api(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        #: (method, path, client port) of every request, in order.
        self.seen: list[tuple[str, str, int]] = []
        #: Paths after whose answer the server closes the connection without saying so.
        self.drop_after: set[str] = set()
        #: Paths whose requests get no answer at all (the connection is closed).
        self.no_answer: set[str] = set()
        #: The status of heartbeats.
        self.status = 202

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Api

    def log_message(self, *args):
        pass

    def _handle(self, status: int, body: dict | None) -> None:
        path = self.path.split("?")[0]
        self.server.seen.append((self.command, self.path, self.client_address[1]))
        if path in self.server.no_answer:
            self.close_connection = True
            return
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if path in self.server.drop_after:
            self.close_connection = True       # no "Connection: close": the client keeps it

    def do_GET(self):
        if self.path.startswith("/v1/lookup"):
            self._handle(200, {"node": {"uuid": NODE}, "config": {"agent_token": "t0k"}})
        else:
            self._handle(200, {"default_version": {"id": "v1", "version": "1.99"}})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._handle(self.server.status, None)


@pytest.fixture
def api_server():
    server = Api()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _start_up(client: ApiClient) -> None:
    client.discover_versions()
    client.lookup(["52:54:00:12:34:56"], None, timeout=5)
    client.heartbeat(NODE, "https://127.0.0.1:9999", "t0k")


def test_start_up_calls_share_a_connection_and_a_heartbeat_closes_it(api_server):
    client = ApiClient(api_server.url)
    _start_up(client)
    client.heartbeat(NODE, "https://127.0.0.1:9999", "t0k")
    ports = [port for _, _, port in api_server.seen]
    assert [path.split("?")[0] for _, path, _ in api_server.seen] == [
        "/", "/v1/lookup", f"/v1/heartbeat/{NODE}", f"/v1/heartbeat/{NODE}"]
    assert ports[0] == ports[1] == ports[2] != ports[3]
    assert client.lookup_version == (1, 62) and client.heartbeat_version == (1, 68)


def test_a_kept_connection_closed_by_the_server_is_replaced(api_server):
    api_server.drop_after.add("/")
    client = ApiClient(api_server.url)
    _start_up(client)
    methods = [(method, path.split("?")[0]) for method, path, _ in api_server.seen]
    assert methods == [("GET", "/"), ("GET", "/v1/lookup"), ("POST", f"/v1/heartbeat/{NODE}")]
    ports = [port for _, _, port in api_server.seen]
    assert ports[0] != ports[1] == ports[2]    # one new connection, each request sent once


def test_a_request_lost_on_a_new_connection_is_not_sent_again(api_server):
    api_server.no_answer.add(f"/v1/heartbeat/{NODE}")
    client = ApiClient(api_server.url)
    with pytest.raises(OSError):
        client.heartbeat(NODE, "https://127.0.0.1:9999", "t0k")
    assert len(api_server.seen) == 1


def test_the_api_url_path_prefixes_every_request(api_server):
    client = ApiClient(api_server.url + "/baremetal/")
    client.discover_versions()
    client.heartbeat(NODE, "https://127.0.0.1:9999", "t0k")
    assert [path for _, path, _ in api_server.seen] == [
        "/baremetal/", f"/baremetal/v1/heartbeat/{NODE}"]


def test_a_heartbeat_not_accepted_is_a_heartbeat_error(api_server):
    api_server.status = 409
    with pytest.raises(HeartbeatError) as exc:
        ApiClient(api_server.url).heartbeat(NODE, "https://127.0.0.1:9999", "t0k")
    assert exc.value.conflict


def test_a_proxy_in_the_environment_is_used(api_server, monkeypatch):
    monkeypatch.setenv("http_proxy", api_server.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    client = ApiClient("http://ironic.example:6385")
    client.discover_versions()
    assert api_server.seen[0][:2] == ("GET", "http://ironic.example:6385/")   # absolute form
