"""One HTTP boot connection on the event loop (``http.py`` owns the loop): read request
heads under the idle and header timeouts, answer them, send files with ``sendfile(2)``.

Every wait is a coroutine suspended on the loop, never a blocked thread; every answer
follows the pure rules of ``http_messages.py``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

from conductor.netboot.http_messages import (
    HEAD_END,
    MAX_TARGET,
    BadRequest,
    Request,
    error_body,
    etag,
    file_fields,
    not_modified,
    parse_head,
    response_head,
    target_path,
    wanted_range,
)
from conductor.netboot.limits import ConnectionTable, HttpLimits

#: Told of each file response's end: (protocol, whole body sent, bytes sent).
TransferRecorder = Callable[[str, bool, int], None]

LOG = logging.getLogger(__name__)

#: Bytes asked of one recv() while reading request heads.
RECV_SIZE = 16384
#: After answering with "Connection: close", read and drop what the client still sends
#: for at most this long and this much, so the close is a FIN, not a reset that could
#: destroy the answer in flight (nginx's lingering close).
LINGER_SECONDS, LINGER_BYTES = 2.0, 1 << 20


def resolve(root_real: Path, target: str) -> Path | None:
    """The regular file a request target names inside ``root_real``, or None."""
    path = target_path(target)
    if path is None:
        return None
    parts = [p for p in path.split("/") if p]
    if "\x00" in path or any(p in (".", "..") for p in parts) or not parts:
        return None
    try:  # a name too long for the file system (ENAMETOOLONG) is no file either
        real = Path(os.path.realpath(root_real.joinpath(*parts)))
        if root_real not in real.parents or not real.is_file():
            return None
    except (OSError, ValueError):
        return None
    return real


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class FileSender:
    """One body out with ``sendfile(2)``, called back by the loop whenever the socket
    takes more (no coroutine wake-up per chunk). Fails with TimeoutError once the
    client has taken nothing for ``stall`` s: a reader that stops must not hold its
    connection for ever.

    The socket never blocks; the file read inside sendfile does, for pages not yet in
    the page cache (as nginx's sendfile without aio threads): the files a storm fetches
    are the same few kernels and ramdisks, read from disk once and then cached.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock_fd: int, file_fd: int,
                 offset: int, count: int, stall: float):
        self.loop, self.sock_fd, self.file_fd = loop, sock_fd, file_fd
        self.offset, self.count, self.stall = offset, count, stall
        self.done: asyncio.Future[None] = loop.create_future()
        self._last = loop.time()
        self._timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        self._pump()
        if not self.done.done():
            self.loop.add_writer(self.sock_fd, self._pump)
            self._timer = self.loop.call_at(self._last + self.stall, self._check)
        try:
            await self.done
        finally:
            self.loop.remove_writer(self.sock_fd)
            if self._timer is not None:
                self._timer.cancel()

    def _pump(self) -> None:
        if self.done.done():
            return
        try:
            sent = os.sendfile(self.sock_fd, self.file_fd, self.offset, self.count)
        except BlockingIOError:
            return  # the socket buffer is full: called again when it drains
        except OSError as exc:  # the client went away (curl -C resumes later)
            self.done.set_exception(exc)
            return
        if sent == 0:  # the file ends before the length announced: shrunk meanwhile
            self.done.set_exception(ConnectionAbortedError("file shrank while sent"))
            return
        self.offset += sent
        self.count -= sent
        self._last = self.loop.time()
        if not self.count:
            self.done.set_result(None)

    def _check(self) -> None:
        if self.done.done():
            return
        due = self._last + self.stall
        if self.loop.time() >= due:
            self.done.set_exception(TimeoutError(f"client took nothing for {self.stall:g} s"))
        else:
            self._timer = self.loop.call_at(due, self._check)


class Connection:
    """One client connection: read a request head, answer it, again while kept alive."""

    def __init__(self, sock: socket.socket, client: str, root_real: Path,
                 limits: HttpLimits, table: ConnectionTable, loop: asyncio.AbstractEventLoop,
                 on_transfer: TransferRecorder | None = None):
        self.sock, self.client, self.root_real = sock, client, root_real
        self.on_transfer = on_transfer
        self.limits, self.table, self.loop = limits, table, loop
        self.buffer = bytearray()
        self.head_sent = False

    async def run(self) -> None:
        linger = False
        try:
            while True:
                keep, linger = await self._one()
                if not keep:
                    break
                # Let every other connection have its turn: with requests pipelined
                # back to back, recv and send never wait, so without this one client
                # would keep the loop (and every booting machine) to itself.
                await asyncio.sleep(0)
            if linger:
                await self._linger()
        except (OSError, TimeoutError) as exc:  # reset, broken pipe, stalled download
            LOG.debug("boot http %s: connection ended: %s", self.client, exc)
        finally:
            self.table.release(self.sock)
            self.sock.close()

    async def _one(self) -> tuple[bool, bool]:
        """Serve one request: (keep the connection, linger before closing it)."""
        try:
            head = await self._read_head()
        except BadRequest as exc:  # a head larger than any boot client sends
            await self._error(None, exc.status, exc.detail)
            return False, True
        if head is None:
            return False, False
        table = self.table
        table.busy(self.sock)  # a whole request: never closed to make room
        self.head_sent = False
        try:
            request = parse_head(head)
            keep = await self._serve(request)
            return keep, not keep
        except BadRequest as exc:
            await self._error(None, exc.status, exc.detail, line=head.split(b"\n")[0])
            return False, True
        except (OSError, TimeoutError):
            raise
        except Exception:  # one request fails, the server serves on
            LOG.exception("Boot HTTP request %r from %s failed", head.split(b"\n")[0][:200],
                          self.client)
            if not self.head_sent:
                await self._error(None, HTTPStatus.INTERNAL_SERVER_ERROR)
            return False, True
        finally:
            table.idle(self.sock)

    async def _read_head(self) -> bytes | None:
        """The next request head, or None when the client closed, stayed silent for the
        idle timeout, or had not sent its whole head within the header timeout of its
        first byte (dropped unanswered: a dribbling client gets no more of our time)."""
        try:
            async with asyncio.timeout(self.limits.idle_timeout):
                while not self._skip_blank_lines():
                    if not await self._receive():
                        return None
        except TimeoutError:
            return None
        try:
            async with asyncio.timeout(self.limits.header_timeout):
                while (end := HEAD_END.search(self.buffer)) is None:
                    self._check_head_size(len(self.buffer))
                    if not await self._receive():
                        return None
        except TimeoutError:
            LOG.info("Boot HTTP: dropped a connection from %s: no whole request head "
                     "within %g s", self.client, self.limits.header_timeout)
            return None
        self._check_head_size(end.start())
        head = bytes(self.buffer[:end.start()])
        del self.buffer[:end.end()]
        return head

    def _skip_blank_lines(self) -> bool:
        """Drop empty lines before a request line (RFC 9112 2.2); whether any byte is left."""
        blank = len(self.buffer) - len(self.buffer.lstrip(b"\r\n"))
        del self.buffer[:blank]
        return bool(self.buffer)

    def _check_head_size(self, size: int) -> None:
        if size > self.limits.header_bytes:
            if b"\n" not in self.buffer[:self.limits.header_bytes]:
                raise BadRequest(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
            raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                             f"request head over {self.limits.header_bytes} bytes")

    async def _receive(self) -> bool:
        data = await self.loop.sock_recv(self.sock, RECV_SIZE)
        self.buffer += data
        return bool(data)

    async def _serve(self, request: Request) -> bool:
        """Answer one well-formed request; whether the connection stays open.

        No "100 Continue" is ever sent, whatever ``Expect`` says: this server reads no
        body, and a request announcing one has its connection closed after the answer,
        so the body cannot be taken for a next request.
        """
        close = request.announces_body or not request.keep_alive
        if len(request.target) > MAX_TARGET:
            return await self._error(request, HTTPStatus.REQUEST_URI_TOO_LONG)
        path = resolve(self.root_real, request.target)
        if path is None:
            return await self._error(request, HTTPStatus.NOT_FOUND, close=close)
        try:
            handle = open(path, "rb")
        except OSError:
            return await self._error(request, HTTPStatus.NOT_FOUND, close=close)
        with handle:
            await self._send_file(request, handle.fileno(), path.suffix, close)
        return not close

    async def _send_file(self, request: Request, fd: int, suffix: str, close: bool) -> None:
        """304, 416, or the head and the (partial) body of an open file."""
        st = os.fstat(fd)
        tag = etag(st)
        if not_modified(request, tag, st.st_mtime):
            await self._head(request, HTTPStatus.NOT_MODIFIED, file_fields(st, tag, None),
                             close)
            return
        span = wanted_range(request, st, tag)
        if span == "416":
            await self._head(request, HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                             file_fields(st, tag, 0)
                             + [("Content-Range", f"bytes */{st.st_size}")], close)
            return
        first, last = span if isinstance(span, tuple) else (0, st.st_size - 1)
        length = last - first + 1
        fields = file_fields(st, tag, length, suffix)
        if span:
            fields.append(("Content-Range", f"bytes {first}-{last}/{st.st_size}"))
        body = request.method == "GET" and length > 0
        await self._head(request, HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK,
                         fields, close, more=body)
        if not body:
            return
        sender = FileSender(self.loop, self.sock.fileno(), fd, first, length,
                            self.limits.idle_timeout)
        try:
            await sender.run()
        finally:
            if self.on_transfer is not None:
                self.on_transfer("http", sender.count == 0, sender.offset - first)

    async def _head(self, request: Request, status: HTTPStatus,
                    fields: list[tuple[str, str]], close: bool, more: bool = False) -> None:
        """Send a response head; ``more``: a body follows (MSG_MORE: one segment)."""
        LOG.debug('boot http %s: "%s" %s', self.client, request.line[:200], status.value)
        self.head_sent = True
        await self._send(response_head(status, fields, close,
                                       keep_alive_1_0=request.version < (1, 1)), more)

    async def _error(self, request: Request | None, status: HTTPStatus, detail: str = "",
                     close: bool = True, line: bytes = b"") -> bool:
        """An error answer (the body only for GET); whether the connection stays open."""
        body = error_body(status, detail)
        head = response_head(status, [("Content-Type", "text/plain; charset=utf-8"),
                                      ("Content-Length", str(len(body)))], close,
                             keep_alive_1_0=request is not None and request.version < (1, 1))
        what = request.line[:200] if request is not None else line.decode("latin-1")
        LOG.debug('boot http %s: "%s" %s %s', self.client, what, status.value, detail)
        self.head_sent = True
        send_body = request is None or request.method != "HEAD"
        await self._send(head + body if send_body else head)
        return not close

    async def _send(self, data: bytes, more: bool = False) -> None:
        view = memoryview(data)
        flags = socket.MSG_MORE if more else 0
        while view:
            try:
                view = view[self.sock.send(view, flags):]
            except BlockingIOError:
                await self._writable()

    async def _writable(self) -> None:
        """Until the socket takes more; TimeoutError after the idle timeout."""
        ready = self.loop.create_future()
        self.loop.add_writer(self.sock.fileno(), _wake, ready)
        try:
            async with asyncio.timeout(self.limits.idle_timeout):
                await ready
        finally:
            self.loop.remove_writer(self.sock.fileno())

    async def _linger(self) -> None:
        """Half-close, then drop what the client still sends for a bounded while."""
        self.sock.shutdown(socket.SHUT_WR)
        dropped = len(self.buffer)
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                while dropped < LINGER_BYTES:
                    data = await self.loop.sock_recv(self.sock, RECV_SIZE)
                    if not data:
                        return
                    dropped += len(data)
        except TimeoutError:
            pass
