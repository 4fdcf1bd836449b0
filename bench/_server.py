"""A ``metalcast serve`` subprocess for benchmarks: started on a free loopback port,
measured through /proc, and always stopped by PID."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """Context manager: ``with ServeProcess(data_dir) as server: server.url``. ``ready``
    is the text of the line that says it serves (``--role conductor`` has no API: its
    line is "metalcast conductor NAME running")."""

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None,
                 ready: str = "listening on"):
        self.data_dir = Path(data_dir)
        self.ready = ready
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def start(self, timeout: float = 60) -> None:
        metalcast = str(Path(sys.executable).with_name("metalcast"))
        self.proc = subprocess.Popen(
            [metalcast, "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir), *self.extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
            # no TFTP/HTTP boot servers or patching listener on fixed ports unless the
            # caller asks for them
            env={"METALCAST_PXE_ENABLED": "false", "METALCAST_PATCHING_LISTEN_PORT": "0",
                 **os.environ})
        ready = threading.Event()
        threading.Thread(target=self._drain, args=(ready,), daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("metalcast serve did not start:\n" + "".join(self.output))

    def _drain(self, ready: threading.Event) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            del self.output[:-200]  # the server logs every node event: keep the tail
            if self.ready in line:
                ready.set()
        ready.set()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mib(self) -> dict:
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
