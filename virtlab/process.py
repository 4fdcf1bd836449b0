"""Child processes of the virtual lab: start until a JSON ready line, stop by PID."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

STOP_TIMEOUT = 10.0


def start_ready(cmd: list[str], ready_prefix: str, timeout: float,
                what: str) -> tuple[subprocess.Popen, dict, list[str]]:
    """Run ``cmd`` until it prints ``ready_prefix`` + JSON; (process, that JSON, log)."""
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    log: list[str] = []
    ready, found = threading.Event(), list[dict]()

    def pump():
        for line in process.stdout:
            log.append(line)
            if line.startswith(ready_prefix) and not found:
                found.append(json.loads(line[len(ready_prefix):]))
                ready.set()
        ready.set()  # EOF: the child exited

    threading.Thread(target=pump, daemon=True).start()
    ready.wait(timeout)
    if not found:
        stop(process.pid, process)
        raise RuntimeError(f"{what} did not become ready within {timeout}s; "
                           f"output:\n{''.join(log)}")
    return process, found[0], log


def stop(pid: int, process: subprocess.Popen | None = None,
         timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM ``pid`` (SIGCONT first, in case a test stopped it), then SIGKILL if it
    has not exited within ``timeout``."""
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
