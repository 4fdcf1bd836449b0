"""Read-only TFTP server for network boot (RFC 1350, options RFC 2347/2348/2349).

One thread reads every request on the listening socket, refuses what it must
(``tftp_request``: decoding, confinement, options; ``limits.TftpLimits``), opens
the file and the transfer's own connected, ephemeral socket (RFC 1350 TIDs: the
kernel drops datagrams from any other client port), and hands both file
descriptors to one of a small fixed pool of worker processes (``tftp_worker``;
one per core, at most ``MAX_WORKERS``). Each worker is one event loop: an epoll
over its transfers' sockets, the retransmission and lifetime timers in a heap,
non-blocking sends, and per block one ``recv_into`` of the ACK, one ``readinto``
a preallocated buffer and one ``send`` (``tftp_session.Transfer``). A DATA block
is resent only when its ACK does not come in time, never because of a duplicate
ACK (no Sorcerer's Apprentice); block numbers wrap from 65535 to 0.

Why processes, measured with ``bench/tftp.py --storm`` (100 curl clients, each
fetching 1 MiB at once, on the same 2 cores as the server; the machine was shared
with other jobs, so the figures moved by 20 % between runs). Ratio of in.tftpd's
aggregate wall time to ours, best (median) of 3-5 rounds, same run:

    blksize                            1468                512
    a thread per transfer (before)     0.96 (0.97)         0.51 (0.65)
    one event-loop thread              0.85 (0.91)         0.81 (0.65)
    two worker processes (this)        1.03-1.21           1.00-1.37
                                       (0.98-1.26)         (1.06-1.22)

(one run at load average 85, other jobs storming too: 0.73 (0.93) at 1468.) No
client failed or timed out in any run.

A thread per transfer made a storm a fight for the interpreter lock. One event
loop needs less CPU per block than in.tftpd (about 11 vs 14 us, most of it the
kernel waking the client), but one thread is one task for the scheduler against
100 busy clients: it waited on the run queue as long as it ran. Two loop threads
did no better (one interpreter lock); two loop processes did, and four no better
than two. Single transfers run at 0.94-0.97x in.tftpd (512-8192 byte blocks, best
of 3; the old blocking loop saved the epoll call per block). The workers never
open a file by name and need no lock: the
server thread alone admits, counts and logs transfers (a worker reports each end),
so the limits hold across the pool. A worker that dies is replaced and its
transfers released; one that takes no hand-over for ``HANDOFF_TIMEOUT`` is killed
and replaced.

tftpy decodes the initial request and encodes OACKs (``tftp_request``), because
that happens once per transfer. Requests for names listed by ``resolver``
(per-MAC boot configs) are answered from memory (handed over as a memfd); the
resolver runs on the server thread, so it must answer from memory. Everything
else comes from files confined to ``root``.

What one client can hold is bounded (``limits.TftpLimits``, ``[pxe] tftp_*``):
a few live transfers per client address and a total, a client-chosen RFC 2349
``timeout`` honoured only up to a few seconds (a larger one is left out of the
OACK and the server's own applies), so a silent client is dropped after
``timeout x (retries + 1)`` seconds, and every transfer ends after ``lifetime``
seconds however its client paces the ACKs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conductor.errors import ServiceUnavailable, TftpRefusal
from conductor.netboot import tftp_request as req
from conductor.netboot.limits import TftpLimits
from conductor.netboot.tftp_session import SENT
from conductor.netboot.tftp_worker import READY, Done, Handoff, WorkerProcess

LOG = logging.getLogger(__name__)

Resolver = Callable[[str, tuple], "bytes | None"]
#: Told of each transfer's end: (protocol, whole file sent, bytes sent): the metrics.
TransferRecorder = Callable[[str, bool, int], None]

#: Linux value of IP_PKTINFO (the socket module does not export it everywhere).
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
#: Requests taken from the listening socket per loop turn, so a request flood
#: cannot keep the server from reading what its workers report.
ACCEPT_BATCH = 32
#: Worker processes at most (the default is one per core, up to this).
MAX_WORKERS = 4


@dataclass
class _Live:
    """What the server remembers of a handed-over transfer, to count and log it."""

    client: tuple
    name: str
    blksize: int


class TftpServer:
    """Serve files under ``root`` (and ``resolver`` answers) read-only over TFTP.

    One thread reads the requests and admits them; ``workers`` processes (default:
    one per core, at most ``MAX_WORKERS``) send the files.
    """

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 69,
                 resolver: Resolver | None = None, timeout: float = 1.0,
                 retries: int = 5, limits: TftpLimits | None = None,
                 workers: int | None = None, on_transfer: TransferRecorder | None = None):
        self.root, self.host, self.port = Path(root), host, port
        #: Told of each transfer's end (the workers report it to the server thread).
        self.on_transfer = on_transfer
        self.resolver, self.timeout, self.retries = resolver, timeout, retries
        self.limits = limits or TftpLimits()
        self.workers = workers or min(len(os.sched_getaffinity(0)), MAX_WORKERS)
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._wildcard = host in ("", "0.0.0.0")
        self._stopping = False
        # Only the server thread changes the counts; the lock is for session_count.
        self._lock = threading.Lock()
        self._per_client: Counter[str] = Counter()  # live transfers per client address
        self._total = 0
        self._ids = 0
        self._sock: socket.socket | None = None
        self._pool: list[WorkerProcess] = []
        self._wake = -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the well-known port, start the workers and serve from a thread."""
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._wildcard:  # learn each request's destination address
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.bind((self.host, self.port))
            sock.setblocking(False)
            self._start_workers()
        except BaseException:
            sock.close()
            self._stop_workers()
            raise
        self._sock, self.port = sock, sock.getsockname()[1]
        self._stopping = False
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name=f"tftp-{self.port}",
                                        daemon=True)
        self._thread.start()
        LOG.info("TFTP serving %s on %s:%s (%d worker processes)", self.root, self.host,
                 self.port, self.workers)

    def stop(self) -> None:
        """Stop listening, end every transfer, stop the workers."""
        if self._thread is None:
            return
        self._stopping = True
        os.eventfd_write(self._wake, 1)
        self._thread.join()
        self._thread = None
        self._stop_workers()
        os.close(self._wake)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with self._lock:
            self._per_client.clear()
            self._total = 0

    def session_count(self, client: str | None = None) -> int:
        """Live transfers, in total or of one client address."""
        with self._lock:
            return self._total if client is None else self._per_client.get(client, 0)

    def _start_workers(self) -> None:
        """Start the pool and wait until every worker serves; a clear error if not
        (not an OSError, which the caller reads as a port it could not bind)."""
        try:
            for _ in range(self.workers):  # one by one: a failure stops those started
                self._pool.append(WorkerProcess())
            for worker in self._pool:
                worker.wait_ready()
        except (OSError, RuntimeError) as exc:
            raise ServiceUnavailable(f"TFTP worker processes could not start: {exc}") \
                from exc

    def _stop_workers(self) -> None:
        for worker in self._pool:
            worker.stop()
        self._pool = []

    def _run(self) -> None:
        assert self._sock is not None  # start() bound it
        epoll = select.epoll()
        listener = self._sock.fileno()
        epoll.register(listener, select.EPOLLIN)
        epoll.register(self._wake, select.EPOLLIN)
        controls = {}
        for worker in self._pool:
            controls[worker.control.fileno()] = worker
            epoll.register(worker.control.fileno(), select.EPOLLIN)
        try:
            while not self._stopping:
                for fd, _ in epoll.poll():
                    if fd == listener:
                        self._read_requests()
                    elif fd in controls and not self._from_worker(controls[fd]):
                        epoll.unregister(fd)  # it died: a new one takes its place
                        replacement = self._replace(controls.pop(fd))
                        if replacement is not None:
                            controls[replacement.control.fileno()] = replacement
                            epoll.register(replacement.control.fileno(), select.EPOLLIN)
        finally:
            epoll.close()

    def _read_requests(self) -> None:
        sock = self._sock
        assert sock is not None
        for _ in range(ACCEPT_BATCH):
            try:
                datagram, ancillary, _, client = sock.recvmsg(65536, 64)
            except BlockingIOError:
                return
            except OSError as exc:
                LOG.warning("TFTP listener receive failed: %s", exc)
                return
            local = self.host
            for level, kind, data in ancillary:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
                    local = socket.inet_ntoa(data[8:12])  # ipi_addr: where it was sent
            try:
                self._accept(datagram, client, local)
            except Exception:  # the server must outlive any request
                LOG.exception("TFTP request from %s failed", client)

    def _accept(self, datagram: bytes, client: tuple, local: str) -> None:
        """Validate one request and hand it to a worker, or answer with an error."""
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.bind((local, 0))
            sock.connect(client)
            sock.setblocking(False)  # a flag of the open file: the worker's copy too
            self._hand_over(self._open(datagram, client), sock)
        except TftpRefusal as refusal:
            LOG.info("TFTP refused request from %s:%s: %s", client[0], client[1],
                     refusal)
            _send_error(sock, refusal)
        except Exception:  # e.g. a resolver bug: answer, log, keep serving
            LOG.exception("TFTP request from %s:%s failed", client[0], client[1])
            _send_error(sock, TftpRefusal(req.NOT_DEFINED, "Internal error"))
        finally:
            sock.close()  # the worker has its own copy

    def _open(self, datagram: bytes, client: tuple) -> _Request:
        request = req.parse_request(datagram)
        if request.opcode == req.OPCODE_WRQ:
            raise TftpRefusal(req.ACCESS_VIOLATION, "Access violation")
        if request.mode not in req.MODES:
            raise TftpRefusal(req.ILLEGAL_OPERATION, f"Unsupported mode {request.mode}")
        # Only this thread admits transfers: the counts cannot change under us.
        if self._total >= self.limits.sessions:
            raise TftpRefusal(req.NOT_DEFINED, "Server busy")
        if self._per_client[client[0]] >= self.limits.per_client:
            raise TftpRefusal(req.NOT_DEFINED, "Too many transfers from this client")
        name = req.relative_name(request.filename)
        fd, size = self._source(name, client, request.mode)
        options = req.negotiate(request.options, size, self.limits.max_timeout)
        return _Request(client, name, fd, options)

    def _hand_over(self, request: _Request, sock: socket.socket) -> None:
        """Give the transfer to the worker with the fewest; count it."""
        options = request.options
        oack = req.oack_packet(options.oack) if options.oack else b""
        self._ids += 1
        handoff = Handoff(self._ids, options.blksize, oack.decode("latin-1"),
                          options.timeout or self.timeout, self.retries,
                          time.monotonic() + self.limits.lifetime)
        try:
            if not self._pool:
                raise TftpRefusal(req.NOT_DEFINED, "Server busy")
            worker = min(self._pool, key=lambda w: len(w.live))
            try:
                worker.hand_over(handoff, _Live(request.client, request.name,
                                                options.blksize),
                                 [sock.fileno(), request.fd])
            except OSError as exc:
                # Hung (it took nothing for HANDOFF_TIMEOUT) or dead: killed, and
                # replaced when its control socket reports the EOF.
                LOG.error("TFTP worker %s did not take a transfer (%s): killing it",
                          worker.process.pid, exc)
                worker.process.kill()
                raise TftpRefusal(req.NOT_DEFINED, "Server busy") from None
        finally:
            os.close(request.fd)
        with self._lock:
            self._per_client[request.client[0]] += 1
            self._total += 1

    def _source(self, name: str, client: tuple, mode: str) -> tuple[int, int]:
        """(fd, size) of the confined file, or of a memfd holding the resolver's
        bytes or the netascii copy: a worker reads every transfer from an fd."""
        data = self.resolver(name, client) if self.resolver is not None else None
        if data is None:
            fd, size = req.confine(self.root, name)
            if mode == "octet":
                return fd, size
            try:
                if size > req.MAX_NETASCII_SIZE:
                    raise TftpRefusal(req.NOT_DEFINED, "File too large for netascii")
                data = os.read(fd, size + 1)
            finally:
                os.close(fd)
        if mode == "netascii":
            data = req.to_netascii(data)
        fd = os.memfd_create("tftp", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.lseek(fd, 0, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd, len(data)

    def _from_worker(self, worker: WorkerProcess) -> bool:
        """Count and log the transfers ``worker`` finished; False if it died."""
        messages, alive = worker.messages()
        for message in messages:
            if message != READY:
                self._done(worker, Done.decode(message))
        return alive

    def _replace(self, worker: WorkerProcess) -> WorkerProcess | None:
        """Release a dead worker's transfers; start and return its replacement
        (None if none could start: the pool is one smaller)."""
        LOG.error("TFTP worker %s died (exit code %s); %d transfers lost, restarting it",
                  worker.process.pid, worker.process.poll(), len(worker.live))
        for ident in list(worker.live):
            self._done(worker, Done(ident, "worker died", 0, 0.0))
        worker.stop()
        index = self._pool.index(worker)
        try:
            self._pool[index] = WorkerProcess()
        except OSError as exc:  # e.g. out of processes: serve on with the others
            LOG.error("TFTP worker could not be restarted: %s", exc)
            del self._pool[index]
            return None
        return self._pool[index]

    def _done(self, worker: WorkerProcess, done: Done) -> None:
        live = worker.live.pop(done.id, None)
        if live is None:
            return
        client = live.client
        with self._lock:
            self._total -= 1
            self._per_client[client[0]] -= 1
            if not self._per_client[client[0]]:
                del self._per_client[client[0]]
        if self.on_transfer is not None:
            self.on_transfer("tftp", done.outcome == SENT, done.sent)
        if done.outcome == SENT:
            LOG.info("TFTP sent %s to %s:%s: %d bytes in %.3fs (blksize %d)", live.name,
                     client[0], client[1], done.sent, done.elapsed, live.blksize)
        else:
            LOG.info("TFTP transfer of %s to %s:%s aborted after %.3fs: %s", live.name,
                     client[0], client[1], done.elapsed, done.outcome)


@dataclass
class _Request:
    """An admitted request: who, what, the open source and the negotiated options."""

    client: tuple
    name: str
    fd: int
    options: req.Negotiated


def _send_error(sock: socket.socket, refusal: TftpRefusal) -> None:
    try:
        sock.send(req.error_packet(refusal.tftp_code, str(refusal)))
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Run a server in the foreground (used by bench/tftp.py); prints a ready line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=69)
    parser.add_argument("--workers", type=int, default=None,
                        help=f"worker processes (default: one per core, <= {MAX_WORKERS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    server = TftpServer(args.root, args.host, args.port, workers=args.workers)
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print("TFTP_READY " + json.dumps({"port": server.port}), flush=True)
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
