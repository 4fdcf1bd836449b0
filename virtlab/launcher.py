"""Start virtual BMCs in a child process and stop them by PID (tests, benchmarks, demo)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from virtlab.bmc import READY_PREFIX
from virtlab.state import MachineState, read_state

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclasses.dataclass
class BmcProcess:
    """One ``python -m virtlab.bmc`` child serving ``ports`` on ``address``."""

    pid: int
    address: str
    ports: list[int]
    state_dir: Path
    process: subprocess.Popen
    log: list[str]

    def state_path(self, port: int) -> Path:
        return self.state_dir / f"bmc-{port}.json"

    def state(self, port: int) -> MachineState:
        """What the BMC on ``port`` last saved (power, boot override, boots)."""
        return read_state(self.state_path(port))

    def output(self) -> str:
        return "".join(self.log)


def _pump(stream, log: list[str], ready: threading.Event, found: list[dict]) -> None:
    for line in stream:
        log.append(line)
        if line.startswith(READY_PREFIX) and not found:
            found.append(json.loads(line[len(READY_PREFIX):]))
            ready.set()
    ready.set()  # EOF: the child exited


def start_bmcs(state_dir: Path, count: int = 1, address: str = "127.0.0.1",
               base_port: int = 0, ports: list[int] | None = None,
               username: str = "admin", password: str = "password",
               timeout: float = START_TIMEOUT) -> BmcProcess:
    """Start ``count`` BMCs (kernel-chosen ports unless given) in one child process."""
    cmd = [sys.executable, "-m", "virtlab.bmc", "--address", address,
           "--state-dir", str(state_dir), "--username", username, "--password", password]
    if ports:
        cmd += ["--ports", ",".join(str(p) for p in ports)]
    else:
        cmd += ["--count", str(count), "--base-port", str(base_port)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    log: list[str] = []
    ready, found = threading.Event(), []
    threading.Thread(target=_pump, args=(process.stdout, log, ready, found),
                     daemon=True).start()
    ready.wait(timeout)
    if not found:
        stop_bmcs(process.pid, process)
        raise RuntimeError(f"virtlab.bmc did not become ready within {timeout}s; "
                           f"output:\n{''.join(log)}")
    info = found[0]
    return BmcProcess(pid=process.pid, address=info["address"], ports=info["ports"],
                      state_dir=Path(state_dir), process=process, log=log)


def stop_bmcs(pid: int | BmcProcess, process: subprocess.Popen | None = None,
              timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the BMC process ``pid`` (SIGCONT first, in case a test stopped it),
    then SIGKILL if it has not exited within ``timeout``."""
    if isinstance(pid, BmcProcess):
        pid, process = pid.pid, pid.process
    for signum in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            break
    if _wait(pid, process, timeout):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait(pid, process, timeout)


def _wait(pid: int, process: subprocess.Popen | None, timeout: float) -> bool:
    """True once ``pid`` has exited (reaped when it is our child)."""
    if process is not None:
        try:
            process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # our child: reap it (a zombie still answers kill(pid, 0))
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
