"""Attacks on the conductor through its client of the agents' command API, replayed.

The conductor calls back whatever answers at a deploying machine's callback URL,
and that machine runs code the operator does not control until the deploy ends. So:

* an impostor at the agent's address (another host took the IP, or a process took
  the port after the agent exited) must fail TLS against the certificate pinned
  from the heartbeats, before a request, and so the agent token, is sent;
* an agent that answers without end must not fill the conductor's memory (it read
  every answer whole before: a stream of gigabytes was read to the end);
* an agent that trickles its answer (or its TLS handshake) must not hold a
  conductor worker: the command timeout was per socket read, so one byte every few
  seconds held a worker (and the node's lock) forever; it is now one deadline for
  the whole exchange, handshake included.

Each peer is a TLS server in a thread on 127.0.0.1, bounded in time and bytes.
"""
from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from conductor import config, errors
from conductor.drivers.deploy.client import AgentClient
from conductor.drivers.deploy.connections import MAX_ANSWER, AgentConnections
from ramdisk_agent.server import make_certificate
from tests.integration.conductor.drivers.test_agent_connections import CIPHER, agent_node

SETTINGS = config.from_options({"agent.command_timeout": 2, "agent.max_command_attempts": 1})
#: What the endless peer sends at most before it gives up (the conductor must stop
#: reading long before).
ENDLESS_LIMIT = 256 << 20
ENDLESS_CHUNK = 1 << 20
#: Seconds between two bytes of the trickling peer, and how many it sends at most.
TRICKLE_PAUSE, TRICKLE_MAX = 0.2, 600


class Peer:
    """A TLS server in a thread: ``behave(tls)`` runs on each connection after the
    handshake; ``received`` holds every byte a client sent after a handshake."""

    def __init__(self, tmp_path, behave, host: str = "127.0.0.1"):
        cert, key, self.pem = make_certificate(host, str(tmp_path))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.behave, self.received, self.handshakes = behave, bytearray(), 0
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(10)
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    self.handshakes += 1
                    self.behave(self, tls)
            except (OSError, ssl.SSLError):
                pass   # the client gave up or refused us: what the tests want

    def read_request(self, tls) -> None:
        while b"\r\n\r\n" not in self.received:
            chunk = tls.recv(65536)
            if not chunk:
                return
            self.received += chunk

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def peers(tmp_path):
    made: list[Peer] = []

    def make(behave, host: str = "127.0.0.1") -> Peer:
        directory = tmp_path / str(len(made))
        directory.mkdir()
        made.append(Peer(directory, behave, host))
        return made[-1]
    yield make
    for peer in made:
        peer.close()


def answer_ok(peer: Peer, tls) -> None:
    peer.read_request(tls)
    tls.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}')


def test_an_impostor_with_another_certificate_never_sees_the_token(peers):
    agent = peers(answer_ok)      # the agent whose certificate the heartbeats pinned
    impostor = peers(answer_ok)   # another TLS server now at the agent's address
    node = agent_node(impostor.url, agent.pem)
    with pytest.raises(errors.AgentConnectionFailed, match="certificate"):
        AgentClient(node, SETTINGS, AgentConnections(), CIPHER).commands()
    assert impostor.handshakes == 0 and bytes(impostor.received) == b""


def test_a_certificate_for_another_address_is_refused(peers):
    elsewhere = peers(answer_ok, host="127.0.0.2")   # pinned, but not for this address
    with pytest.raises(errors.AgentConnectionFailed, match="certificate"):
        AgentClient(agent_node(elsewhere.url, elsewhere.pem), SETTINGS, AgentConnections(),
                    CIPHER).commands()
    assert bytes(elsewhere.received) == b""


def test_an_endless_answer_is_cut_at_the_limit(peers):
    def endless(peer: Peer, tls) -> None:
        peer.read_request(tls)
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 40))
        chunk = b"[" * ENDLESS_CHUNK
        # Count the chunks the TLS layer took whole. A blocking TLS send writes all of a
        # chunk or raises, so the chunk the closing client cut off (it reads one byte past
        # the limit before it stops) is not counted: every chunk before it is, and the
        # limit is a whole number of chunks, so at least MAX_ANSWER is counted.
        while peer.sent < ENDLESS_LIMIT:
            peer.sent += tls.send(chunk)

    agent = peers(endless)
    with pytest.raises(errors.AgentCommandError, match="sent too much"):
        AgentClient(agent_node(agent.url, agent.pem), SETTINGS, AgentConnections(),
                    CIPHER).commands()
    # The conductor stopped reading at the limit: the peer could not push much more
    # than that (and the socket buffers) before the connection closed.
    assert MAX_ANSWER % ENDLESS_CHUNK == 0
    assert MAX_ANSWER <= agent.sent < ENDLESS_LIMIT


class SlowRelay:
    """In front of ``upstream``: what the client sends goes through at once, what
    ``upstream`` answers (its TLS handshake first) one byte per TRICKLE_PAUSE."""

    def __init__(self, upstream: Peer):
        self.upstream, self.sent = upstream, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._relay, daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.upstream.port), timeout=10)
        threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
        try:
            while self.sent < TRICKLE_MAX:
                byte = server.recv(1)
                if not byte:
                    return
                client.sendall(byte)
                self.sent += 1
                time.sleep(TRICKLE_PAUSE)   # the attack's pace (the peer's, not a wait)
        except OSError:
            pass   # the conductor gave up
        finally:
            client.close()
            server.close()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.thread.join(TRICKLE_MAX * TRICKLE_PAUSE + 10)
        self.listener.close()


def test_a_trickling_handshake_does_not_hold_a_worker(peers):
    agent = peers(answer_ok)
    relay = SlowRelay(agent)
    try:
        with pytest.raises(errors.AgentConnectionFailed, match="did not answer within 2"):
            AgentClient(agent_node(relay.url, agent.pem), SETTINGS, AgentConnections(),
                        CIPHER).commands()
        assert relay.sent < TRICKLE_MAX and bytes(agent.received) == b""
    finally:
        relay.close()


def test_a_trickling_answer_does_not_hold_a_worker(peers):
    def trickle(peer: Peer, tls) -> None:
        peer.read_request(tls)
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        for _ in range(TRICKLE_MAX):   # one byte at a time: each read gets something
            tls.sendall(b" ")
            peer.sent += 1
            time.sleep(TRICKLE_PAUSE)   # the attack's pace (the peer's, not a wait)

    agent = peers(trickle)
    with pytest.raises(errors.AgentConnectionFailed, match="did not answer within 2"):
        AgentClient(agent_node(agent.url, agent.pem), SETTINGS, AgentConnections(),
                    CIPHER).commands()
    assert agent.sent < TRICKLE_MAX    # given up long before the peer ran out
