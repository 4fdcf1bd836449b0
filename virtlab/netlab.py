"""The PXE lab's private network: one network namespace with a bridge and a tap.

Topology (test-lab.md section 2), built fresh for every lab and deleted after it::

    netns mcpxe-<random>:  br0 10.77.0.1/24 + fd77::1/64  <-  tap0  <-  QEMU's NIC

The namespace has no route out, so DHCP, TFTP and HTTP never leave it; its name is
random so parallel runs never collide (interface names are per namespace). The
IPv6 address is there for dnsmasq's router advertisements: without one, iPXE waits
~13 s for IPv6 autoconfiguration on every boot.

Processes run inside with ``ip netns exec`` (which execs, so the PID is the
program's own), each in its own session, and are stopped by that PID's process
group; ``with NetLab() as lab:`` stops them all and deletes the namespace even when
the body raises. Needs root.
"""
from __future__ import annotations

import codecs
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

STOP_TIMEOUT = 10.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB0-2]|\x1bc")


class LabError(RuntimeError):
    """The lab could not be built (not root, no iproute2, a command failed)."""


class TimedLog:
    """Reads a process's output as it arrives and stamps it with time.monotonic().

    Each line keeps the arrival time of each piece of it, and ``first`` reports
    when the *matched text* arrived, not when its line ended: firmware does not
    always end its lines (iPXE's "URL... ok" for the last download is followed
    by the kernel's silence, and the UART reset may even eat the "k", so the next
    text the console shows is the initramfs's, seconds later, on the same line).
    ANSI escapes (SeaBIOS/iPXE draw on the console) are stripped.
    """

    def __init__(self, stream, echo=None):
        self.lines: list[tuple[float, str]] = []  # (time the line ended, text)
        self._marks: list[list[tuple[int, float]]] = []  # per line: (end offset, time)
        self._changed = threading.Condition()
        self._echo = echo
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd, text, marks, pending = stream.fileno(), "", list[tuple[int, float]](), ""
        while chunk := os.read(fd, 65536):
            now = time.monotonic()
            data, pending = _hold_partial_escape(pending + decoder.decode(chunk))
            for piece in re.split(r"([\r\n])", ANSI.sub("", data)):
                if piece in ("\r", "\n"):
                    self._add(text, marks)
                    text, marks = "", []
                elif piece:
                    text += piece
                    marks.append((len(text), now))
        self._add(text, marks)
        with self._changed:
            self._changed.notify_all()

    def _add(self, text: str, marks: list[tuple[int, float]]) -> None:
        if not text.strip():
            return
        with self._changed:
            self.lines.append((marks[-1][1], text.strip()))
            self._marks.append(marks)
            self._changed.notify_all()
        if self._echo is not None:
            self._echo(text.strip())

    def matches(self, pattern: str | re.Pattern) -> list[tuple[float, re.Match]]:
        """(time the matched text arrived, match) for every line matching ``pattern``."""
        regex = re.compile(pattern)
        with self._changed:
            lines = [(text, marks) for (_, text), marks in zip(self.lines, self._marks)]
        found = []
        for text, marks in lines:
            match = regex.search(text)
            if match:
                offset = len(text) - len(text.lstrip()) + match.end()
                found.append((next(t for end, t in marks if end >= offset), match))
        return found

    def first(self, pattern: str | re.Pattern) -> tuple[float, re.Match] | None:
        """The first of ``matches(pattern)``, or None."""
        found = self.matches(pattern)
        return found[0] if found else None

    def wait_for(self, pattern: str, timeout: float) -> tuple[float, re.Match] | None:
        """Block until a line matches ``pattern``, the stream ends, or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self.first(pattern)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0 or not self._thread.is_alive():
                    return found or self.first(pattern)
                self._changed.wait(min(remaining, 0.5))

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _hold_partial_escape(data: str) -> tuple[str, str]:
    """(text to use now, an unfinished escape sequence at its end to prepend to the
    next chunk): QEMU writes the console a few bytes at a time, and an escape cut in
    two would otherwise survive the stripping."""
    cut = data.rfind("\x1b")
    if cut == -1 or len(data) - cut > 16 or ANSI.match(data, cut):
        return data, ""
    return data[:cut], data[cut:]


class NetLab:
    """A network namespace with br0 (+ tap0 for one VM); a context manager."""

    bridge, tap = "br0", "tap0"
    address, ipv6 = "10.77.0.1", "fd77::1"

    def __init__(self, prefix: str = "mcpxe"):
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self._processes: list[subprocess.Popen] = []
        self._created = False

    def __enter__(self) -> NetLab:
        self.create()
        return self

    def __exit__(self, *exc) -> None:
        self.delete()

    def create(self) -> None:
        """Build the namespace, bridge and tap (deleting it again if a step fails)."""
        if os.geteuid() != 0:
            raise LabError("the PXE lab needs root (network namespaces, bridge, tap)")
        if shutil.which("ip") is None:
            raise LabError("ip not found: install the Debian package iproute2")
        _ip("netns", "add", self.name)
        self._created = True
        try:
            for args in (("link", "set", "lo", "up"),
                         ("link", "add", self.bridge, "type", "bridge"),
                         ("addr", "add", f"{self.address}/24", "dev", self.bridge),
                         ("addr", "add", f"{self.ipv6}/64", "dev", self.bridge, "nodad"),
                         ("link", "set", self.bridge, "up"),
                         ("tuntap", "add", "dev", self.tap, "mode", "tap"),
                         ("link", "set", self.tap, "master", self.bridge),
                         ("link", "set", self.tap, "up")):
                _ip("-n", self.name, *args)
        except LabError:
            self.delete()
            raise

    def command(self, cmd: list[str]) -> list[str]:
        """``cmd`` prefixed so that it runs inside the namespace."""
        return ["ip", "netns", "exec", self.name, *map(str, cmd)]

    def run(self, cmd: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the namespace to completion (output captured as text)."""
        return subprocess.run(self.command(cmd), capture_output=True, text=True,
                              timeout=timeout, **kwargs)

    def start(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        """Start ``cmd`` inside the namespace in its own session; stdout+stderr piped."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process = subprocess.Popen(self.command(cmd), start_new_session=True, **kwargs)
        self._processes.append(process)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the process group ``process`` leads, SIGKILL it after ``timeout``."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if process.poll() is not None:
                break
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
        if process in self._processes:
            self._processes.remove(process)
        return process.poll()

    def delete(self) -> None:
        """Stop every process started here (newest first) and any child they left in
        the namespace, then delete the namespace."""
        for process in reversed(list(self._processes)):
            self.stop(process)
        if self._created:
            self._stop_leftovers()
            _ip("netns", "delete", self.name)
            self._created = False

    def _stop_leftovers(self, timeout: float = STOP_TIMEOUT) -> None:
        """Children our processes started in their own session (metalcast's dnsmasq)
        outlive a SIGKILLed parent and would keep the namespace alive. The namespace
        is ours alone, so whatever still runs in it was started by this lab."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while pids and time.monotonic() < deadline:
                time.sleep(0.05)
                pids = self.pids()
            if not pids:
                return

    def pids(self) -> list[int]:
        """PIDs of the processes running in the namespace."""
        listing = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                                 text=True, timeout=30)
        return [int(pid) for pid in listing.stdout.split()]

    def exists(self) -> bool:
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        return any(line.split()[0] == self.name for line in listing.stdout.splitlines()
                   if line.strip())


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def read_text(path: Path) -> str:
    """A file's text, or "" when it does not exist (for logs a process may not have written)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
