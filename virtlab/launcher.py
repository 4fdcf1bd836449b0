"""Start virtual BMCs in a child process and stop them by PID (tests, benchmarks, demo)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from virtlab import process as vproc
from virtlab.bmc import READY_PREFIX
from virtlab.state import MachineState, read_state

START_TIMEOUT = 30.0
STOP_TIMEOUT = vproc.STOP_TIMEOUT


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


def start_bmcs(state_dir: Path, count: int = 1, address: str = "127.0.0.1",
               base_port: int = 0, ports: list[int] | None = None,
               username: str = "admin", password: str = "password",
               timeout: float = START_TIMEOUT, prefix: list[str] | None = None) -> BmcProcess:
    """Start ``count`` BMCs (kernel-chosen ports unless given) in one child process.

    ``prefix`` goes before the command (virtlab.lab: ``setpriv --pdeathsig KILL``)."""
    # "--opt=value": a credential starting with "-" would otherwise be read as an option
    cmd = list(prefix or []) + [sys.executable, "-m", "virtlab.bmc", "--address", address,
           "--state-dir", str(state_dir), f"--username={username}", f"--password={password}"]
    if ports:
        cmd += ["--ports", ",".join(str(p) for p in ports)]
    else:
        cmd += ["--count", str(count), "--base-port", str(base_port)]
    process, info, log = vproc.start_ready(cmd, READY_PREFIX, timeout, "virtlab.bmc")
    return BmcProcess(pid=process.pid, address=info["address"], ports=info["ports"],
                      state_dir=Path(state_dir), process=process, log=log)


def stop_bmcs(pid: int | BmcProcess, process: subprocess.Popen | None = None,
              timeout: float = STOP_TIMEOUT) -> None:
    """Stop the BMC process by PID (see virtlab.process.stop)."""
    if isinstance(pid, BmcProcess):
        process, pid = pid.process, pid.pid
    vproc.stop(pid, process, timeout)
