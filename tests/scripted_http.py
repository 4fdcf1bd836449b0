"""A scripted HTTP/1.1 server for the agent's download tests (loopback).

Each accepted connection gets the next scripted answer, on its own thread (so one
answer may stall while the next connection is served): a function given the socket
and the request, which sends what the test wants, the way it wants it (body bytes in
odd-sized pieces, a connection cut mid-body, a body longer than announced, a stall
until the test says go). ``requests`` records each request's line and headers.
Bounded: every socket has a timeout, the server stops after its script or on
``close()``, which joins every thread.
"""
from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

TIMEOUT = 10.0


@dataclass
class Request:
    line: str
    headers: dict[str, str] = field(default_factory=dict)    # lower-case names


Answer = Callable[[socket.socket, Request], None]


def head(status: str, headers: dict[str, str | int]) -> bytes:
    """A response head: ``head("200 OK", {"Content-Length": 5})``."""
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def send_pieces(conn: socket.socket, data: bytes, sizes: Iterable[int]) -> None:
    """Send ``data`` in pieces of the given sizes, cycled (Nagle off: one send each)."""
    view, at = memoryview(data), 0
    for size in itertools.cycle(sizes):
        if at >= len(view):
            return
        conn.sendall(view[at:at + size])
        at += size


class ScriptedServer:
    """Serve ``answers`` in order, one per connection, on 127.0.0.1."""

    def __init__(self, answers: list[Answer]):
        self.answers = answers
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(TIMEOUT)
        self._stopped = False
        self._answering: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, name="scripted-http",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._stopped = True
        try:   # wake accept()
            socket.create_connection(self._listener.getsockname()[:2], TIMEOUT).close()
        except OSError:
            pass
        self._thread.join(TIMEOUT)
        for thread in self._answering:
            thread.join(TIMEOUT)
        self._listener.close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _serve(self) -> None:
        for answer in self.answers:
            try:
                conn, _ = self._listener.accept()
            except OSError as exc:
                self.errors.append(exc)
                return
            if self._stopped:
                conn.close()
                return
            thread = threading.Thread(target=self._answer, args=(conn, answer),
                                      name="scripted-http-answer", daemon=True)
            self._answering.append(thread)
            thread.start()

    def _answer(self, conn: socket.socket, answer: Answer) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                answer(conn, self._read_request(conn))
            except OSError as exc:   # the client went away: the test says if it should
                self.errors.append(exc)

    def _read_request(self, conn: socket.socket) -> Request:
        data = b""
        while b"\r\n\r\n" not in data:
            got = conn.recv(4096)
            if not got:
                raise ConnectionError("the client closed before sending a request")
            data += got
        line, *rest = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        headers = dict((k.strip().lower(), v.strip())
                       for k, _, v in (h.partition(":") for h in rest))
        request = Request(line, headers)
        self.requests.append(request)
        return request
