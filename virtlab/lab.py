"""The virtual lab runner: simulated machines behind virtual IPMI BMCs.

    python -m virtlab.lab --config lab.json

``lab.json``::

    {"status_dir": "/tmp/lab/status",            # <name>.json + <name>/ per machine
     "bmc": {"state_dir": "/tmp/lab/bmc",        # where the BMCs keep bmc-<port>.json
             "address": "127.0.0.1", "username": "admin", "password": "password"},
     "pxe": {"tftp": "127.0.0.1:6969",           # what DHCP would hand out; omit: no PXE
             "loader": "undionly.kpxe", "script": "boot.ipxe"},
     "machines": [{"name": "node1", "mac": "52:54:00:00:00:01",
                   "disk": "/tmp/lab/node1.img", "disk_size_mib": 128,
                   "bmc_port": 6230}],           # omit bmc_port: the lab starts a BMC
     "tick": 0.1,
     "agent_command": ["metalcast-agent"]}      # optional: what the PXE boot runs; it
                                                # gets the agent's flags (--cmdline-file,
                                                # --disk, --state-file, ...)

Machines without ``bmc_port`` get a BMC in one ``virtlab.bmc`` child process the
lab starts (and stops); machines with one use a BMC someone else runs on that
port with the same ``state_dir``. Once every machine is supervised the runner
prints ``VIRTLAB-LAB-READY {"pid", "bmc_pid", "machines": {name: {"mac",
"bmc_port", "disk", "status"}}}`` and runs until SIGTERM, which cuts every
machine's power (agents are killed by PID) and stops its BMC process.
``start_lab``/``stop_lab`` do this from Python (tests, demo).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from virtlab import firmware
from virtlab import process as vproc
from virtlab.launcher import BmcProcess, start_bmcs, stop_bmcs
from virtlab.machine import Machine, MachineSpec, die_with_parent

LOG = logging.getLogger(__name__)

READY_PREFIX = "VIRTLAB-LAB-READY "
START_TIMEOUT = 60.0
DEFAULT_TICK = 0.1


class ConfigError(ValueError):
    """lab.json is missing something or holds a wrong value."""


@dataclasses.dataclass
class LabConfig:
    status_dir: Path
    bmc: dict
    pxe: firmware.PxeConfig | None
    machines: list[MachineSpec]
    tick: float = DEFAULT_TICK
    agent_command: list[str] | None = None   #: instead of metalcast-agent (same flags)


def parse_config(raw: dict) -> LabConfig:
    """Validate lab.json; every mistake is named (ConfigError)."""
    if not isinstance(raw, dict) or "status_dir" not in raw:
        raise ConfigError("lab config needs a 'status_dir'")
    bmc = dict(raw.get("bmc") or {})
    if "state_dir" not in bmc:
        raise ConfigError("lab config needs 'bmc': {'state_dir': ...}")
    pxe = raw.get("pxe")
    try:
        pxe = firmware.PxeConfig(**pxe) if pxe else None
        machines = [MachineSpec(**m) for m in raw.get("machines") or []]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"lab config: {exc}") from None
    if not machines:
        raise ConfigError("lab config has no 'machines'")
    names = [m.name for m in machines]
    if len(set(names)) != len(names) or not all(n and "/" not in n for n in names):
        raise ConfigError(f"machine names must be unique and contain no '/': {names}")
    macs = [m.mac.lower() for m in machines]
    if len(set(macs)) != len(macs):
        raise ConfigError(f"machine MACs must be unique: {macs}")
    return LabConfig(Path(raw["status_dir"]), bmc, pxe, machines,
                     float(raw.get("tick", DEFAULT_TICK)), _command(raw.get("agent_command")))


def _command(value) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError("'agent_command' must be a non-empty list of strings")
    return value


class Lab:
    """The machines of one lab and their main loop (one thread: no locking)."""

    def __init__(self, config: LabConfig):
        self.config = config
        self.bmc_process: BmcProcess | None = None
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="firmware")
        self.machines: list[Machine] = []

    def start(self) -> None:
        config, bmc = self.config, self.config.bmc
        state_dir = Path(bmc["state_dir"])
        missing = [m for m in config.machines if not m.bmc_port]
        if missing:
            self.bmc_process = start_bmcs(
                state_dir, count=len(missing), address=bmc.get("address", "127.0.0.1"),
                username=bmc.get("username", "admin"), password=bmc.get("password", "password"),
                prefix=die_with_parent())     # a SIGKILLed lab takes its BMCs along
            for spec, port in zip(missing, self.bmc_process.ports):
                spec.bmc_port = port
        config.status_dir.mkdir(parents=True, exist_ok=True)
        for spec in config.machines:
            self.machines.append(Machine(spec, state_dir / f"bmc-{spec.bmc_port}.json",
                                         config.status_dir, config.pxe, self.executor,
                                         config.agent_command))

    def ready_info(self) -> dict:
        return {"pid": os.getpid(),
                "bmc_pid": self.bmc_process.pid if self.bmc_process else None,
                "machines": {m.spec.name: {"mac": m.spec.mac, "bmc_port": m.spec.bmc_port,
                                           "disk": m.spec.disk, "status": str(m.status_path)}
                             for m in self.machines}}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for machine in self.machines:
                try:
                    machine.tick()
                except Exception:  # one machine must not stop the lab
                    LOG.exception("Machine %s: supervision failed", machine.spec.name)
            stop.wait(self.config.tick)

    def shutdown(self) -> None:
        """Cut every machine's power, stop the BMCs; a firmware download still in
        flight ends on its own timeout (it starts nothing once its boot is stale)."""
        for machine in self.machines:
            machine.shutdown()
        if self.bmc_process is not None:
            stop_bmcs(self.bmc_process)
        self.executor.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virtlab.lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="lab.json")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = parse_config(json.loads(args.config.read_text()))
    except (OSError, ValueError) as exc:
        print(f"virtlab.lab: bad config {args.config}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    lab = Lab(config)
    try:
        lab.start()
        print(READY_PREFIX + json.dumps(lab.ready_info()), flush=True)
        lab.run(stop)
    finally:
        lab.shutdown()
    LOG.info("virtlab.lab %d stopped", os.getpid())
    return 0


# -- for tests and the demo -------------------------------------------------------
@dataclasses.dataclass
class LabProcess:
    """A running ``python -m virtlab.lab``: its PID, machines and output."""

    pid: int
    process: subprocess.Popen
    machines: dict[str, dict]
    log: list[str]
    bmc_pid: int | None = None        #: the BMC process the lab started (if any)

    def status(self, name: str) -> dict:
        return json.loads(Path(self.machines[name]["status"]).read_text())

    def wait(self, name: str, predicate, what: str, timeout: float = 60.0) -> dict:
        """Poll ``name``'s status until ``predicate(status)``; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if predicate(status):
                return status
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(
                    f"machine {name}: not {what} after {timeout}s; status:\n"
                    f"{json.dumps(status, indent=1)}\nlab output:\n{''.join(self.log)}")
            time.sleep(0.1)

    def output(self) -> str:
        return "".join(self.log)


def start_lab(config: dict, config_path: Path, timeout: float = START_TIMEOUT) -> LabProcess:
    """Write ``config`` to ``config_path`` and start the lab; returns once it is ready."""
    parse_config(config)                   # fail here, with the reason, not in the child
    Path(config_path).write_text(json.dumps(config, indent=1, default=str))
    cmd = [sys.executable, "-m", "virtlab.lab", "--config", str(config_path)]
    process, info, log = vproc.start_ready(cmd, READY_PREFIX, timeout, "virtlab.lab")
    return LabProcess(pid=process.pid, process=process, machines=info["machines"], log=log,
                      bmc_pid=info["bmc_pid"])


def stop_lab(lab: LabProcess, timeout: float = vproc.STOP_TIMEOUT) -> None:
    """SIGTERM the lab (it kills its agents and BMC process), SIGKILL if it hangs."""
    vproc.stop(lab.pid, lab.process, timeout)


if __name__ == "__main__":
    sys.exit(main())
