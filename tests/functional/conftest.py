"""Functional fixtures: a real ``metalcast serve`` process on a loopback port.

Each server gets its own data directory and INI file and listens on port 0, so
the kernel picks a free port and the URL is read from the ready line. Servers
are session-scoped (starting one costs ~1 s); tests share them and therefore
use unique node names and never assume an empty node list.
"""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import bcrypt
import pytest

from tests.functional.ipmi_peers import require
from virtlab.launcher import start_bmcs, stop_bmcs

BIN_DIR = Path(sys.executable).parent
READY_RE = re.compile(r"metalcast API listening on (http://\S+)")
START_TIMEOUT = 30
STOP_TIMEOUT = 10


@dataclasses.dataclass
class RunningServer:
    """One ``metalcast serve`` child process and how to reach it."""

    url: str
    data_dir: Path
    process: subprocess.Popen
    log: list[str]
    username: str | None = None
    password: str | None = None

    def output(self) -> str:
        return "".join(self.log)


def _write_config(data_dir: Path, sections: dict[str, dict[str, object]]) -> Path:
    path = data_dir / "test.conf"
    lines = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in options.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def _clean_env() -> dict[str, str]:
    """The caller's environment minus anything that would redirect the server."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("METALCAST_", "OS_"))}


def _pump(stream, log: list[str], ready: threading.Event, found: list[str]) -> None:
    """Collect the server's output (so the pipe never fills) and spot the ready line."""
    for line in stream:
        log.append(line)
        match = READY_RE.search(line)
        if match and not found:
            found.append(match.group(1))
            ready.set()
    ready.set()  # EOF: the process died, wake the waiter


def start_server(data_dir: Path, sections: dict | None = None,
                 host: str = "127.0.0.1", prefix: tuple[str, ...] = (),
                 port: int = 0) -> RunningServer:
    """Start ``metalcast serve`` and return once it prints its ready line. A ``host``
    other than loopback (a test machine's link) needs [api] auth_strategy set;
    ``prefix`` runs it through a command (nsenter into a network namespace); ``port``
    0 lets the kernel pick (a restarted server takes its old port again)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sections = dict(sections or {})
    # Boot servers (TFTP 69, HTTP 8080) only where a test asks for [pxe]: servers run in parallel.
    sections.setdefault("pxe", {"enabled": "false"})
    # Likewise the patching listener (127.0.0.1:5487): only where a test asks for it.
    sections["patching"] = {"listen_port": 0, **sections.get("patching", {})}
    config = _write_config(data_dir, sections)
    cmd = [*prefix, str(BIN_DIR / "metalcast"), "serve", "--host", host, "--port", str(port),
           "--data-dir", str(data_dir), "--config-file", str(config)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=_clean_env())
    log: list[str] = []
    ready, found = threading.Event(), []
    threading.Thread(target=_pump, args=(process.stdout, log, ready, found),
                     daemon=True).start()
    ready.wait(START_TIMEOUT)
    if not found:
        try:  # its output ended: it is exiting, or it hung before the ready line
            why = f"exited with code {process.wait(2)}"
        except subprocess.TimeoutExpired:
            why = f"did not print its ready line within {START_TIMEOUT}s"
        stop_server(process)
        pytest.fail(f"metalcast serve {why}; output:\n{''.join(log)}")
    return RunningServer(url=found[0], data_dir=data_dir, process=process, log=log)


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM the one process we started, then SIGKILL if it does not exit."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


def _serve(data_dir: Path, sections: dict | None = None, **credentials):
    server = start_server(data_dir, sections)
    for key, value in credentials.items():
        setattr(server, key, value)
    try:
        yield server
    finally:
        stop_server(server.process)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A server with ``auth_strategy = none``."""
    yield from _serve(tmp_path_factory.mktemp("metalcast"))


@pytest.fixture(scope="session")
def basic_server(tmp_path_factory):
    """A server with ``auth_strategy = http_basic`` and a bcrypt htpasswd entry."""
    data_dir = tmp_path_factory.mktemp("metalcast-basic")
    username, password = "operator", f"pw-{uuid.uuid4().hex[:12]}"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert hashed.startswith("$2b$")
    (data_dir / "htpasswd").write_text(f"{username}:{hashed}\n")
    yield from _serve(data_dir, {"api": {"auth_strategy": "http_basic",
                                         "htpasswd_file": data_dir / "htpasswd"}},
                      username=username, password=password)


@pytest.fixture(scope="session")
def tight_server(tmp_path_factory):
    """Small page size and one concurrent cleaning: forces ``next`` links and 503s."""
    yield from _serve(tmp_path_factory.mktemp("metalcast-tight"),
                      {"api": {"max_limit": 2}, "conductor": {"max_concurrent_clean": 1}})


@pytest.fixture
def bmc(tmp_path):
    """One virtual IPMI BMC (virtlab.bmc) on a loopback port, stopped by PID."""
    require("ipmitool")
    process = start_bmcs(tmp_path / "bmc", count=1)
    yield process
    stop_bmcs(process)
