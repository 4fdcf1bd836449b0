"""Real IPMI peers for the functional tests, all on 127.0.0.1 and stopped by PID.

* ``ipmitool(port, ...)``: the real ipmitool client (lanplus), for checking what a
  BMC answers independently of our driver.
* ``IpmiSim``: OpenIPMI's ``ipmi_sim`` configured as test-lab.md section 4 says: the
  emu file starts with ``mc_setbmc 0x20`` (else it segfaults), a ``serial 15 ...
  codec VM`` line makes chassis control work, and ``startcmd`` is the "machine":
  power on spawns it, power off kills it.
* ``make_store``: a migrated SQLite store, for driving interfaces through a Task.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.queries import Store
from tests.functional.tools import require  # re-exported
from tests.waiting import wait_until

USERNAME, PASSWORD = "admin", "password"


def ipmitool(port: int, *args: str, username: str = USERNAME, password: str = PASSWORD,
             cipher: int | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real ipmitool against 127.0.0.1:port (lanplus)."""
    cmd = [require("ipmitool"), "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port),
           "-U", username, "-P", password]
    if cipher is not None:
        cmd += ["-C", str(cipher)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout)


def ipmitool_ok(port: int, *args: str, **kwargs) -> str:
    result = ipmitool(port, *args, **kwargs)
    assert result.returncode == 0, f"ipmitool {' '.join(args)}: {result.stderr}"
    return result.stdout


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port the kernel just handed out on 127.0.0.1 (UDP by default)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_store(path: Path) -> Store:
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    return Store(engine)


LAN_CONF = """\
name "metalcast-sim"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_admin none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_callback none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 {serial_port} codec VM
  startcmd "{machine}"
  startnow false
  poweroff_wait 1
  kill_wait 1
  user 2 true "{username}" "{password}" admin 10 none md2 md5 straight
"""
# mc_add alone leaves the LAN down; mc_enable brings it up.
SIM_EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""
# The simulated machine: alive while "powered on"; it records its PID so the
# fixture can stop it, and it ends by itself once ipmi_sim is gone.
MACHINE = """\
#!/bin/sh
echo $$ > "{pidfile}"
parent=$PPID
while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done
"""


class IpmiSim:
    """One ipmi_sim process on 127.0.0.1 with a fresh state directory."""

    def __init__(self, workdir: Path):
        require("ipmi_sim")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.machine_pidfile = workdir / "machine.pid"
        machine = workdir / "machine.sh"
        machine.write_text(MACHINE.format(pidfile=self.machine_pidfile))
        machine.chmod(0o755)
        (workdir / "lan.conf").write_text(LAN_CONF.format(
            port=self.port, serial_port=free_port(socket.SOCK_STREAM), machine=machine,
            username=USERNAME, password=PASSWORD))
        (workdir / "sim.emu").write_text(SIM_EMU)
        (workdir / "state").mkdir(exist_ok=True)
        self.log = open(workdir / "ipmi_sim.log", "w")
        self.process = subprocess.Popen(
            ["ipmi_sim", "-c", "lan.conf", "-f", "sim.emu", "-s", "state", "-n"],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        try:
            if wait_until(lambda: "exited" if self.process.poll() is not None
                          else ipmitool(self.port, "mc", "info", cipher=3,
                                        timeout=10).returncode == 0,
                          timeout, 0.2, "ipmi_sim to answer") != "exited":
                return
        except AssertionError:
            pass
        self.stop()
        pytest.fail(f"ipmi_sim did not answer on 127.0.0.1:{self.port} (exit code "
                    f"{self.process.poll()}); log:\n{(self.workdir / 'ipmi_sim.log').read_text()}")

    def machine_running(self) -> bool:
        """Whether the simulated machine process (ipmi_sim's "power on") is alive."""
        try:
            pid = int(self.machine_pidfile.read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return False
        return Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        try:
            os.kill(int(self.machine_pidfile.read_text()), signal.SIGTERM)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass
        self.log.close()


def _proc_state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line
    except FileNotFoundError:
        pass
    return "Z"
