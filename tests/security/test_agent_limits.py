"""Memory and connection attacks on the ramdisk agent's HTTPS command API, replayed.

The attack: anyone who can reach a deploying machine could POST to
``/v1/commands/`` with any token; the agent read the whole body (up to 64 MiB)
before it checked the token, so three 60 MiB POSTs with a wrong token took it from
36 to 261 MiB, in a ramdisk where memory is the disk. Connections had no bound:
each held a thread (and a TLS handshake could idle for 300 s). Now the route, the
method and the token are checked from the request line, a refusal comes before a
byte of body is read, and connections are bounded per address and in total, the
longest-idle one making room for a newcomer.

The agent's server runs in its own process (tests/security/agent_api_process.py),
so its peak memory (VmHWM) and threads are its own; openssl s_client and curl are
the peers.
"""
from __future__ import annotations

import json
import select
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ramdisk_agent.server import MAX_BODY, MAX_CONNECTIONS, MAX_PER_CLIENT
from tests.functional.tools import require
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
TOKEN = f"agent-token-{uuid.uuid4().hex}"
WRONG = "agent_token=not-the-token"
BODY = 60 << 20
#: Peak memory the three wrong-token POSTs may add (they added ~225 MiB before).
GROWTH = 16 << 20
START_TIMEOUT = 60


def status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


class Agent:
    def __init__(self, process: subprocess.Popen, port: int, cert: str):
        self.process, self.port, self.cert = process, port, cert

    def peak_rss(self) -> int:
        return status(self.process.pid, "VmHWM") * 1024

    def threads(self) -> int:
        return status(self.process.pid, "Threads")

    def tls(self, source: str = "127.0.0.1") -> ssl.SSLSocket:
        context = ssl.create_default_context(cafile=self.cert)
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10,
                                       source_address=(source, 0))
        return context.wrap_socket(raw, server_hostname="127.0.0.1")

    def curl(self, path: str) -> subprocess.CompletedProcess:
        return subprocess.run([require("curl"), "-sS", "--noproxy", "*", "--max-time", "20",
                               "--cacert", self.cert, "-w", "\n%{http_code}",
                               f"https://127.0.0.1:{self.port}{path}"],
                              capture_output=True, text=True, timeout=30)


@pytest.fixture
def agent(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "tests.security.agent_api_process",
                                TOKEN, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                               text=True)
    try:
        ready = select.select([process.stdout], [], [], START_TIMEOUT)[0]
        line = process.stdout.readline() if ready else ""
        assert line.startswith("AGENT_READY "), f"agent did not start: {line!r}"
        _, port, cert = line.split()
        yield Agent(process, int(port), cert)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(20)


def post_head(query: str, length: int) -> bytes:
    return (f"POST /v1/commands/?{query} HTTP/1.1\r\nHost: agent\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def test_three_60_mib_posts_with_a_wrong_token_leave_the_agent_small(agent, tmp_path):
    """The replay with openssl s_client: three at once, each streaming its whole body."""
    openssl = require("openssl")
    assert agent.curl("/v1/status").stdout.endswith("200")  # warm: the baseline is real
    before = agent.peak_rss()
    attack = tmp_path / "attack.http"
    with open(attack, "wb") as out:
        out.write(post_head(WRONG, BODY))
        out.truncate(out.tell() + BODY)  # 60 MiB of NUL bytes after the headers
    clients = []
    for _ in range(3):
        with open(attack, "rb") as stdin:
            clients.append(subprocess.Popen(
                [openssl, "s_client", "-connect", f"127.0.0.1:{agent.port}", "-quiet",
                 "-verify_return_error", "-CAfile", agent.cert],
                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    answers = [client.communicate(timeout=120)[0] for client in clients]
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
            "faultcode": "Client", "faultstring": "Token invalid."}
    grown = agent.peak_rss() - before
    assert grown < GROWTH, f"the agent's peak memory grew by {grown >> 20} MiB"
    done = agent.curl(f"/v1/commands/?agent_token={TOKEN}")
    assert done.stdout.endswith("200") and '"commands": []' in done.stdout, done


def test_a_wrong_token_is_refused_before_the_body_is_sent(agent):
    """The 401 (and Connection: close) comes right after the headers: no body is read,
    so none needs to be sent. Before, the agent waited for the 60 MiB."""
    with agent.tls("127.0.0.2") as tls:
        tls.sendall(post_head(WRONG, BODY))
        answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401 ") and b"Connection: close" in answer, answer


def test_curl_with_expect_100_continue_is_refused_before_it_uploads(agent, tmp_path):
    """curl sends ``Expect: 100-continue`` before a large body: the agent answers 401
    instead of "100 Continue", so not a byte of the 60 MiB leaves the client; with the
    right token it gets its 100 and the body is read."""
    big = tmp_path / "big.json"
    with open(big, "wb") as out:
        out.write(b'{"name": "standby.get_partition_uuids", "params": {}}')
        out.truncate(BODY)  # NUL padding: not JSON, a 400 once read
    url = f"https://127.0.0.1:{agent.port}/v1/commands/"
    common = [require("curl"), "-sS", "--noproxy", "*", "--max-time", "60", "--cacert",
              agent.cert, "-H", "Content-Type: application/json", "--data-binary", f"@{big}",
              "-w", "\n%{http_code} %{size_upload}"]
    refused = subprocess.run([*common, f"{url}?{WRONG}"], capture_output=True, text=True,
                             timeout=90)
    assert refused.stdout.rsplit("\n", 1)[1] == "401 0", refused
    accepted = subprocess.run([*common, f"{url}?agent_token={TOKEN}"], capture_output=True,
                              text=True, timeout=90)
    assert accepted.stdout.rsplit("\n", 1)[1] == f"400 {BODY}", accepted.stdout[-300:]


def test_a_right_token_gets_a_413_over_the_cap_and_is_served_under_it(agent):
    with agent.tls() as tls:
        tls.sendall(post_head(f"agent_token={TOKEN}", MAX_BODY + 1))
        assert tls.recv(4096).startswith(b"HTTP/1.1 413 ")
    body = json.dumps({"name": "standby.get_partition_uuids", "params": {}}).encode()
    with agent.tls() as tls:
        tls.sendall(post_head(f"agent_token={TOKEN}", len(body)) + body)
        answer = tls.recv(65536)
    assert not answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 413")), answer[:200]


def test_connection_floods_hold_a_few_threads_and_the_conductor_gets_through(agent):
    base = agent.threads()
    raw = [socket.create_connection(("127.0.0.1", agent.port), timeout=10,
                                    source_address=("127.0.0.2", 0)) for _ in range(20)]
    handshaken = []
    try:
        # One address, no TLS at all: at most MAX_PER_CLIENT threads.
        wait_until(lambda: agent.threads() <= base + MAX_PER_CLIENT, message=lambda: (
            f"at most {MAX_PER_CLIENT} connection threads, not {agent.threads() - base}"))
        # Three more addresses, TLS done and then idle: at most MAX_CONNECTIONS in all.
        for n in (3, 4, 5):
            for _ in range(MAX_PER_CLIENT):
                try:
                    handshaken.append(agent.tls(f"127.0.0.{n}"))
                except (ssl.SSLError, OSError):
                    pass  # closed to make room for the next: what the cap does
        wait_until(lambda: agent.threads() <= base + MAX_CONNECTIONS, message=lambda: (
            f"at most {MAX_CONNECTIONS} connection threads, not {agent.threads() - base}"))
        done = agent.curl(f"/v1/commands/?agent_token={TOKEN}")  # the conductor
        assert done.stdout.endswith("200"), done
        assert agent.threads() <= base + MAX_CONNECTIONS + 1
    finally:
        for sock in raw + handshaken:
            sock.close()


def test_the_flood_does_not_outlive_its_sockets(agent):
    base = agent.threads()
    socks = [socket.create_connection(("127.0.0.1", agent.port), timeout=10,
                                      source_address=("127.0.0.2", 0)) for _ in range(8)]
    for sock in socks:
        sock.close()
    wait_until(lambda: agent.threads() <= base, message=lambda: (
        f"the flood's threads to end ({agent.threads() - base} left)"))
