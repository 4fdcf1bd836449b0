"""A TFTP worker process: one event loop sending the transfers the server hands it.

``TftpServer`` (``tftp.py``) reads every request, applies the limits and the
confinement, opens the file and the transfer's socket, and passes both file
descriptors here over a UNIX ``SOCK_SEQPACKET`` pair (``SCM_RIGHTS``) with a
``Handoff``. The worker never opens a file by name. Its loop is an epoll over
that control socket and every transfer's socket, with the retransmission and
lifetime timers in a heap; when a transfer ends it reports a ``Done`` back, so
the server can count and log it. EOF on the control socket (the server stopped
or died) ends every transfer and the process.

Run as ``python -m conductor.netboot.tftp_worker FD``; the server starts it.
"""
from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from conductor.netboot.tftp_session import RUNNING, Pacing, Transfer

LOG = logging.getLogger(__name__)

#: The first message a worker sends: it imported everything and is serving.
READY = b"ready"
#: Largest control message (a Handoff is well under 1 KiB; names are <= 1024).
MESSAGE_MAX = 8192
#: s a worker may take to start (import) and to take one hand-over.
WORKER_START_TIMEOUT, HANDOFF_TIMEOUT = 30.0, 2.0
#: s a worker may take to exit after its control socket closed, before SIGKILL.
WORKER_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Handoff:
    """A transfer for a worker: its id, block size, OACK and pacing (the socket and
    the file travel beside it as file descriptors)."""

    id: int
    blksize: int
    oack: str              # the OACK packet, latin-1 (empty: no OACK)
    timeout: float
    retries: int
    deadline: float        # time.monotonic() value: the clock is system-wide

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Handoff:
        return cls(**json.loads(data))


@dataclass(frozen=True)
class Done:
    """How a transfer ended: ``outcome`` is ``tftp_session.SENT`` or why it stopped."""

    id: int
    outcome: str
    sent: int
    elapsed: float

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Done:
        return cls(**json.loads(data))


class Worker:
    """The loop: transfers by socket fd, one heap entry per transfer."""

    def __init__(self, control: socket.socket):
        self.control = control
        self.control.setblocking(False)
        self.sessions: dict[int, tuple[int, Transfer]] = {}  # socket fd -> (id, transfer)
        self.timers: list[tuple[float, int, int, Transfer]] = []
        self.order = itertools.count()      # heap tie-break: never compare transfers
        self.outbox: deque[bytes] = deque()  # Done messages the server has no room for yet
        self.epoll = select.epoll()
        self.epoll.register(control.fileno(), select.EPOLLIN)
        self.running = True

    def run(self) -> None:
        epoll, sessions, control = self.epoll, self.sessions, self.control.fileno()
        monotonic = time.monotonic
        self._post(READY)
        try:
            while self.running:
                timers = self.timers
                wait = max(timers[0][0] - monotonic(), 0.0) if timers else -1.0
                events = epoll.poll(wait)
                now = monotonic()
                for fd, mask in events:
                    entry = sessions.get(fd)
                    if entry is not None:
                        try:
                            alive = entry[1].on_readable(now)
                        except Exception as exc:  # a bug ends this transfer, not the loop
                            LOG.exception("TFTP transfer %s failed", entry[0])
                            alive = self._crashed(entry[1], exc)
                        if not alive:
                            self._finish(fd, now)
                    elif fd == control:
                        if mask & select.EPOLLOUT:
                            self._flush()
                        if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                            self._take(now)
                if timers and timers[0][0] <= now:
                    self._expire(now)
        finally:
            for fd in list(self.sessions):
                self._finish(fd, time.monotonic(), report=False)
            self.epoll.close()

    def _take(self, now: float) -> None:
        """Accept the handed-over transfers waiting on the control socket."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.control, MESSAGE_MAX, 2)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:  # the server closed its end: stop
                for fd in fds:
                    os.close(fd)
                self.running = False
                return
            self._start(Handoff.decode(data), fds, now)

    def _start(self, handoff: Handoff, fds: list[int], now: float) -> None:
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        pacing = Pacing(handoff.timeout, handoff.retries, handoff.deadline)
        try:
            transfer = Transfer(sock, fds[1], handoff.blksize,
                                handoff.oack.encode("latin-1"), pacing, now)
        except OSError as exc:  # reading the first block failed
            sock.close()
            os.close(fds[1])
            self._post(Done(handoff.id, f"reading the file failed: {exc}", 0, 0.0).encode())
            return
        self.sessions[sock.fileno()] = (handoff.id, transfer)
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        if transfer.begin():
            heapq.heappush(self.timers, (transfer.due(), next(self.order), handoff.id,
                                         transfer))
        else:
            self._finish(sock.fileno(), now)

    def _expire(self, now: float) -> None:
        """Run the due timers; a stale entry (the transfer moved on) is pushed again."""
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, ident, transfer = heapq.heappop(timers)
            if transfer.outcome != RUNNING:
                continue  # ended by a datagram since
            due = transfer.due()
            if due <= now:
                try:
                    alive = transfer.on_timer(now)
                except Exception as exc:  # a bug ends this transfer, not the loop
                    LOG.exception("TFTP transfer %s failed", ident)
                    alive = self._crashed(transfer, exc)
                if not alive:
                    self._finish(transfer.sock.fileno(), now)
                    continue
                due = transfer.due()
            heapq.heappush(timers, (due, next(self.order), ident, transfer))

    def _finish(self, fd: int, now: float, report: bool = True) -> None:
        ident, transfer = self.sessions.pop(fd)
        if transfer.outcome == RUNNING:
            transfer.outcome = "server stopping"
        self.epoll.unregister(fd)
        transfer.close()
        if report:
            self._post(Done(ident, transfer.outcome, transfer.sent,
                            now - transfer.started).encode())

    @staticmethod
    def _crashed(transfer: Transfer, exc: Exception) -> bool:
        transfer.outcome = f"internal error: {exc!r}"
        return False

    def _post(self, message: bytes) -> None:
        """Send to the server without blocking the loop; queue what does not fit."""
        if not self.outbox:
            try:
                self.control.send(message)
                return
            except BlockingIOError:
                pass
            except OSError:  # the server is gone: EOF on the next read stops us
                return
        self.outbox.append(message)
        self.epoll.modify(self.control.fileno(), select.EPOLLIN | select.EPOLLOUT)

    def _flush(self) -> None:
        while self.outbox:
            try:
                self.control.send(self.outbox[0])
            except BlockingIOError:
                return
            except OSError:
                self.outbox.clear()
                break
            self.outbox.popleft()
        self.epoll.modify(self.control.fileno(), select.EPOLLIN)


class WorkerProcess:
    """The server's handle on one worker: the process, the server's end of the
    control pair, and what the server keeps of each transfer it handed over."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "conductor.netboot.tftp_worker",
                 str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env=_worker_environment())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)  # reads never wait; a send waits HANDOFF_TIMEOUT at most
        self.control = ours
        self.live: dict[int, Any] = {}

    def wait_ready(self) -> None:
        """Wait for the worker's READY; RuntimeError if it does not come in time."""
        found: list[bytes] = []
        if _wait_for(self.control, select.POLLIN, WORKER_START_TIMEOUT):
            found, _ = self.messages()
        if found[:1] != [READY]:
            raise RuntimeError(f"TFTP worker {self.process.pid} did not start "
                               f"(exit code {self.process.poll()})")

    def hand_over(self, handoff: Handoff, live: Any, fds: list[int]) -> None:
        """Pass ``fds`` (the transfer's socket and file) with ``handoff``; OSError
        (TimeoutError if the worker takes nothing for HANDOFF_TIMEOUT) if it fails."""
        message = [handoff.encode()]
        try:
            socket.send_fds(self.control, message, fds)
        except BlockingIOError:  # its queue is full: give it a moment, no more
            if not _wait_for(self.control, select.POLLOUT, HANDOFF_TIMEOUT):
                raise TimeoutError("the worker takes no transfer") from None
            socket.send_fds(self.control, message, fds)
        self.live[handoff.id] = live

    def messages(self) -> tuple[list[bytes], bool]:
        """What the worker sent since (without waiting), and whether it is still there."""
        found: list[bytes] = []
        while True:
            try:
                data = self.control.recv(MESSAGE_MAX)
            except BlockingIOError:
                return found, True
            except OSError:
                data = b""
            if not data:  # EOF: the worker exited
                return found, False
            found.append(data)

    def stop(self) -> None:
        """Close the control pair (the worker ends its transfers and exits); reap it."""
        self.control.close()
        try:
            self.process.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _worker_environment() -> dict[str, str]:
    """The server's environment, with this source tree first on the path: the
    worker runs the same code as the server, installed or not."""
    env = dict(os.environ)
    tree = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    return env


def _wait_for(sock: socket.socket, event: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(sock, event)
    return bool(poller.poll(timeout * 1000))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # Ctrl-C in a terminal reaches the whole process group: the server stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING,
                        format="TFTP worker %(process)d: %(levelname)s %(message)s")
    Worker(socket.socket(fileno=int(args[0]))).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
