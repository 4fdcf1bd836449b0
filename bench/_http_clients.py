"""Many HTTP download clients in one Python process (``bench/http_boot.py --storm
--client python``): no process start-up inside the measured window, which 100 curl
processes put there on a loaded 2-core machine.

    python bench/_http_clients.py URL CLIENTS VERIFY_EVERY

Prints "ready", waits for a line on stdin, then opens CLIENTS connections at once
(client n from source address 127.0.x.y, like curl --interface), each a GET of URL
with ``Connection: close``, reads every body into one reused buffer (SHA-256 of every
VERIFY_EVERY'th), and prints one JSON document: the wall time from the go to the last
byte, and per client its status, bytes, seconds and digest.
"""
from __future__ import annotations

import hashlib
import json
import selectors
import socket
import sys
import time
from urllib.parse import urlsplit

BUFFER = 1 << 20
TIMEOUT = 110.0


def source(index: int) -> str:
    return f"127.0.{1 + index // 250}.{2 + index % 250}"


class Client:
    def __init__(self, index: int, address: tuple[str, int], request: bytes, verify: bool):
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.bind((source(index), 0))
        self.sock.connect_ex(address)
        self.request, self.start = request, time.perf_counter()
        self.head = b""
        self.status, self.length, self.received = 0, -1, 0
        self.digest = hashlib.sha256() if verify else None
        self.seconds = 0.0

    def body(self, data: memoryview) -> None:
        self.received += len(data)
        if self.digest is not None:
            self.digest.update(data)

    def readable(self, view: memoryview) -> bool:
        """Read what is there; whether this client is done (EOF or whole body)."""
        n = self.sock.recv_into(view)
        if n == 0:
            return True
        if self.length < 0:  # still in the head
            self.head += bytes(view[:n])
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = self.head[:end].decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            fields = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            self.length = int(fields.get("content-length", "0"))
            self.body(memoryview(self.head)[end + 4:])
        else:
            self.body(view[:n])
        return self.received >= self.length

    def result(self) -> dict:
        return {"status": self.status, "bytes": self.received, "seconds": self.seconds,
                "sha256": self.digest.hexdigest() if self.digest else None}


def main() -> int:
    url, clients, verify_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    request = (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               "Connection: close\r\n\r\n").encode()
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    selector = selectors.DefaultSelector()
    everyone = []
    for n in range(clients):
        client = Client(n, address, request, n % verify_every == 0)
        everyone.append(client)
        selector.register(client.sock, selectors.EVENT_WRITE, client)
    buffer = memoryview(bytearray(BUFFER))
    left = clients
    while left and time.perf_counter() - start < TIMEOUT:
        for key, events in selector.select(1.0):
            client = key.data
            try:
                if events & selectors.EVENT_WRITE:  # connected: one small request
                    client.sock.send(client.request)
                    selector.modify(client.sock, selectors.EVENT_READ, client)
                    continue
                done = client.readable(buffer)
            except OSError as exc:  # refused, reset: a failed client
                client.status, done = -exc.errno if exc.errno else -1, True
            if done:
                client.seconds = time.perf_counter() - client.start
                selector.unregister(client.sock)
                client.sock.close()
                left -= 1
    wall = time.perf_counter() - start
    json.dump({"wall": wall, "clients": [c.result() for c in everyone]}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
