"""Raw HTTP for the attack replays: requests a well-behaved client never sends (a
declared length with no body, bodies streamed until the server hangs up, headers
never finished), from a chosen loopback source address (127.0.0.0/8 is all ours)."""
from __future__ import annotations

import base64
import contextlib
import http.client
import json
import select
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import bcrypt

from tests.functional.conftest import RunningServer, start_server

#: Read timeout of every reply: generous, a refusal comes at once.
REPLY_TIMEOUT = 10.0
LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}


def thread_idents() -> set[int]:
    """The threads of this process now (their idents), for a later ``new_threads``."""
    return {t.ident for t in threading.enumerate() if t.ident is not None}


def new_threads(before: set[int]) -> list[str]:
    """Names of the threads started since ``before`` and still running. Only new ones
    count: a server of an earlier test in this process may still be winding its own
    threads down, and those leaving is no thread the server under test started."""
    return sorted(t.name for t in threading.enumerate() if t.ident not in before)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def connect(url: str, source: str = "127.0.0.1",
            timeout: float = REPLY_TIMEOUT) -> socket.socket:
    return socket.create_connection(address(url), timeout=timeout,
                                    source_address=(source, 0))


def pending(sock: socket.socket, size: int = 4096) -> bytes | None:
    """A look at what the server left to read, without waiting: None when nothing
    yet, b"" when it closed the connection (EOF or a reset), else the bytes."""
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        return sock.recv(size, socket.MSG_PEEK)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return b""
    finally:
        sock.settimeout(timeout)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: metalcast"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.contextmanager
def response_of(sock: socket.socket) -> Iterator[http.client.HTTPResponse]:
    reply = http.client.HTTPResponse(sock)
    try:
        reply.begin()
        yield reply
    finally:
        reply.close()


def reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response waiting on ``sock``."""
    with response_of(sock) as answer:
        return answer.status, dict(answer.getheaders()), answer.read()


def declared_only(url: str, method: str, path: str, length: int,
                  headers: dict[str, str] | None = None, source: str = "127.0.0.1",
                  timeout: float = REPLY_TIMEOUT) -> tuple[int, dict[str, str], bytes]:
    """Send headers declaring a ``length``-byte body and no body: a server that reads
    bodies before deciding would wait for it (and time out this read)."""
    with connect(url, source, timeout) as sock:
        sock.sendall(head(method, path, {"Content-Type": "application/json",
                                         "Content-Length": str(length), **LATEST,
                                         **(headers or {})}))
        return reply(sock)


def json_array(total: int, chunk: int = 1 << 16) -> Iterator[bytes]:
    """``[1,1,...,1]`` of exactly ``total`` bytes, in pieces of about ``chunk``: what a
    server that reads a body before judging its size parses into a huge list."""
    pad = b" " if total % 2 == 0 else b""
    ones = (total - 3 - len(pad)) // 2  # "[" pad "1," * ones "1]"
    yield b"[" + pad
    while ones:
        count = min(chunk // 2, ones)
        yield b"1," * count
        ones -= count
    yield b"1]"


def stream_body(url: str, method: str, path: str, total: int, chunked: bool = False,
                headers: dict[str, str] | None = None,
                source: str = "127.0.0.1") -> tuple[int | None, int]:
    """Stream a ``total``-byte JSON body (:func:`json_array`) until the server answers
    or hangs up; (status or None, bytes of body sent)."""
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(total)}
    sent = 0
    with connect(url, source) as sock:
        sock.sendall(head(method, path, {"Content-Type": "application/json", **LATEST,
                                         **framing, **(headers or {})}))
        try:
            for piece in json_array(total):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered (or hung up) before the end
            else:
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return reply(sock)[0], sent
        except (ConnectionResetError, http.client.RemoteDisconnected):
            return None, sent


def fault(body: bytes) -> str:
    """The ``faultstring`` of Ironic's error body (``error_message`` holds JSON text)."""
    return json.loads(json.loads(body)["error_message"])["faultstring"]


def peak_rss(pid: int) -> int:
    """The most resident memory process ``pid`` has held so far, in bytes (/proc
    VmHWM): a body parsed and freed between two looks still shows."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def basic_auth_server(data_dir: Path, cost: int = 4, sections: dict | None = None,
                      ) -> RunningServer:
    """``metalcast serve`` with http_basic and one user whose bcrypt hash has ``cost``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    username, password = "operator", f"pw-{uuid.uuid4().hex[:12]}"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()
    (data_dir / "htpasswd").write_text(f"{username}:{hashed}\n")
    sections = dict(sections or {})
    sections["api"] = {"auth_strategy": "http_basic", "htpasswd_file": data_dir / "htpasswd",
                       **sections.get("api", {})}
    server = start_server(data_dir, sections)
    server.username, server.password = username, password
    return server
