"""The conductor's connections to agents (conductor/drivers/deploy/connections.py):
one kept TLS connection per agent, a TLS context per pinned certificate, and peers
that close (an agent restarted, an HTTP/1.0 server such as a plain
BaseHTTPRequestHandler) reached again on a new connection. The real agent command
API (ramdisk_agent/server.py) runs in a thread on 127.0.0.1:0; the attacks on the
client are in tests/security/test_agent_client_limits.py."""
from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.fernet import Fernet

from conductor import config, errors
from conductor.db.records import Node
from conductor.drivers import internal_info
from conductor.drivers.deploy.client import AgentClient
from conductor.drivers.deploy.connections import AgentConnections
from conductor.secrets import Cipher
from ramdisk_agent.commands import CommandRunner, Extension, sync_command
from ramdisk_agent.server import MAX_PER_CLIENT, HttpsServer, create_app, make_certificate
from tests.waiting import wait_until

TOKEN = "agent-token-of-the-connection-tests"
CIPHER = Cipher(Fernet.generate_key())
SETTINGS = config.from_options({"agent.command_timeout": 10, "agent.max_command_attempts": 1})
PINNED = "pinned to the certificate of its heartbeats"


class Echo(Extension):
    name = "echo"

    @sync_command
    def say(self, text):
        return {"text": text}


def agent_node(url: str, pem: str | None, token: str = TOKEN) -> Node:
    """A node whose agent looked up (token issued) and heartbeat from ``url``."""
    info = internal_info.with_token({}, token, CIPHER)
    info = internal_info.with_heartbeat(info, url, "1.0", "now", pem)
    return Node(uuid="6f1a3b52-1c1d-4a53-9a57-0d2f1d2f4a11", driver_internal_info=info)


class CountingServer(HttpsServer):
    """The agent's HTTPS server, counting the TCP connections it accepted."""

    def __init__(self, *args):
        self.accepted = 0
        super().__init__(*args)

    def verify_request(self, request, client_address) -> bool:
        admitted = super().verify_request(request, client_address)
        self.accepted += 1
        return admitted


class Agent:
    """The agent command API in a thread."""

    def __init__(self, tmp_path):
        cert, key, self.pem = make_certificate("127.0.0.1", str(tmp_path))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = CountingServer("127.0.0.1", 0,
                                     create_app(CommandRunner([Echo(None)]), lambda: TOKEN),
                                     context)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_port}"

    def connections(self) -> int:
        return self.server.accepted

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def agent(tmp_path):
    running = Agent(tmp_path)
    yield running
    running.stop()


def test_requests_to_one_agent_share_one_connection_and_one_context(agent, caplog):
    caplog.set_level(logging.INFO, logger="conductor.drivers.deploy.connections")
    connections = AgentConnections()
    node = agent_node(agent.url, agent.pem)
    for text in ("one", "two", "three"):
        client = AgentClient(node, SETTINGS, connections, CIPHER)  # one per heartbeat
        assert client.command("echo.say", {"text": text}, wait=True).result == {"text": text}
    assert [c.result for c in AgentClient(node, SETTINGS, connections, CIPHER).commands()] \
        == [{"text": "one"}, {"text": "two"}, {"text": "three"}]
    assert agent.connections() == 1 and connections.kept == 1
    pinned = [r for r in caplog.records if PINNED in r.getMessage()]
    assert len(pinned) == 1 and node.uuid in pinned[0].getMessage()


def test_an_agent_that_closed_its_connection_is_reached_on_a_new_one(agent):
    connections = AgentConnections()
    client = AgentClient(agent_node(agent.url, agent.pem), SETTINGS, connections, CIPHER)
    assert client.command("echo.say", {"text": "before"}, wait=True).status == "SUCCEEDED"
    # The agent makes room for newcomers from the same address by closing its
    # longest-idle connection (ramdisk_agent/connections.py): the conductor's kept one.
    others = [socket.create_connection(("127.0.0.1", agent.server.server_port), timeout=10)
              for _ in range(MAX_PER_CLIENT)]
    try:
        wait_until(lambda: agent.connections() == 1 + MAX_PER_CLIENT,
                   message="the agent did not accept the other connections")
        assert client.command("echo.say", {"text": "after"}, wait=True).result == \
            {"text": "after"}
        assert agent.connections() == 2 + MAX_PER_CLIENT  # a new one, no error
    finally:
        for sock in others:
            sock.close()


def test_a_peer_that_closes_after_each_answer_is_not_kept(tmp_path):
    """HTTP/1.0 with Content-Length (http.server's default, as the test peers of
    tests/functional/agent_peer.py): the socket closes once the answer is read."""
    cert, key, pem = make_certificate("127.0.0.1", str(tmp_path))
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            seen.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            data = json.dumps({"command_status": "SUCCEEDED", "command_name": "say"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        connections = AgentConnections()
        client = AgentClient(agent_node(f"https://127.0.0.1:{httpd.server_address[1]}", pem),
                             SETTINGS, connections, CIPHER)
        for text in ("a", "b", "c"):
            assert client.command("echo.say", {"text": text}).status == "SUCCEEDED"
        assert [json.loads(body)["params"] for body in seen] == \
            [{"text": "a"}, {"text": "b"}, {"text": "c"}]
        assert connections.kept == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_idle_connections_are_bounded(tmp_path):
    for index in range(3):
        (tmp_path / str(index)).mkdir()
    agents = [Agent(tmp_path / str(index)) for index in range(3)]
    try:
        connections = AgentConnections(max_idle=2)
        for agent in agents:
            AgentClient(agent_node(agent.url, agent.pem), SETTINGS, connections,
                        CIPHER).commands()
        assert connections.kept == 2
        connections.close()
        assert connections.kept == 0
    finally:
        for agent in agents:
            agent.stop()


def test_a_url_that_can_never_work_fails_at_once_and_clearly():
    client = AgentClient(agent_node("https://127.0.0.1:99999", None), SETTINGS,
                         AgentConnections(), CIPHER)
    with pytest.raises(errors.AgentConnectionFailed, match="not an http"):
        client.commands()
