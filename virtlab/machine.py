"""One simulated machine: a MAC, a disk image file, a BMC, and what it is running.

The machine watches its BMC's state file (virtlab.state, written by virtlab.bmc
when the conductor sends IPMI commands) and behaves like hardware:

* every new boot (power on, reset: the BMC's ``boots`` counter moved) cuts
  whatever ran before and runs the firmware (virtlab.firmware) in a worker
  thread: PXE into the agent, or the OS on the disk;
* a network boot ends by starting the real ``metalcast-agent`` process against
  the disk image file, with the kernel command line the boot config gave;
* power off or reset from the BMC kills the agent's process group with SIGKILL
  (a power cut, e.g. mid-write);
* the agent powering off or rebooting by itself (``standby.power_off``/``reboot``
  with ``--power-action exit``: it writes its state file and exits) updates the
  BMC's state file, as a real BMC notices its host powering off.

Its status is written atomically to ``<status_dir>/<name>.json`` on every change::

    {"name", "mac", "disk", "bmc_port",
     "power": "on"|"off", "boots": n,            # from the BMC state file
     "boot_device": what the last boot used, "boot_override": {device, persistent, uefi},
     "phase": "off" | "pxe" | "booting" (disk first) | "agent" | "booted-disk"
              | "no-boot" | "agent-exited" (agent ended without powering off) | "lab-stopped",
     "booted_os": {"partition", "offset", "fs_label", "pretty_name", "version_id", "id",
                   "cmdline" (an A/B disk: "mount.usr=PARTUUID=<the slot gptprio chose>"),
                   "os_release"} | null,
     "agent": {"pid", "cmdline", "command", "log", "started", "kernel", "initrds"} | null,
     "last_agent": {"pid", "exit_code", "power_event": "power_off"|"reboot"|"power-cut"|null,
                    "ended"} | null,
     "events": [{"time", "source", "event"}, ...]  (last 200), "updated": time}

``<status_dir>/<name>/`` holds the agent's ``cmdline`` file and ``agent.log``.

An INSTALLED HOST (issue 16 item 6): a machine whose spec names an ``update_conf``
and that boots a slot of an A/B disk runs, as that OS would, the real
``metalcast-agent update mark-good`` and then ``update daemon`` (one process group,
``agent.role`` "update-host", killed on power off/reset like the ramdisk agent; its
log is ``<status_dir>/<name>/update.log``). The machine owns the per-boot settings
(``HOST_SETTINGS``): the disk, the boot's command line (``mount.usr=PARTUUID=`` of the
slot the firmware chose: the engine learns the active slot from it), the slot's
os-release (the running version), a fresh boot id per boot, the machine id and the
engine's state dir (kept across boots in ``<status_dir>/<name>/host/``), and
REBOOT_COMMAND = ``python -m virtlab.host_tools reset <BMC state file>``: the BMC's
power reset, so the firmware picks the slot again from the GPT bits. When mark-good
fails the host resets itself (a watchdog's job, as virtlab/ab_init.sh does), so a
broken slot falls back on the next boot.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import Executor, Future
from pathlib import Path

from virtlab import firmware
from virtlab.state import BootOverride, MachineState, StateFile

LOG = logging.getLogger(__name__)

MAX_EVENTS = 200
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
DEFAULT_DISK_MIB = 128


@dataclasses.dataclass
class MachineSpec:
    """One machine of the lab configuration."""

    name: str
    mac: str
    disk: str
    bmc_port: int | None = None
    disk_size_mib: int = DEFAULT_DISK_MIB
    #: update.conf of an installed host (SERVER, GROUP, strategy, key...): booted from
    #: an A/B disk, the machine runs the host update engine with it
    update_conf: str | None = None

    def __post_init__(self):
        self.disk = str(self.disk)
        self.mac = str(self.mac).lower()
        if not _MAC_RE.fullmatch(self.mac):
            raise ValueError(f"machine {self.name}: {self.mac!r} is not a MAC address")


def agent_command(program: list[str] | None = None) -> list[str]:
    """``program`` (default: the ``metalcast-agent`` console script next to this
    Python, else ``-m ramdisk_agent.cli``) behind ``setpriv --pdeathsig KILL``
    (util-linux) when available: should the lab itself be SIGKILLed, the kernel
    kills its agents too instead of leaking them. The lab starts agents from its
    main thread, which lives as long as the lab.
    """
    script = Path(sys.executable).parent / "metalcast-agent"
    default = [str(script)] if script.exists() else [sys.executable, "-m", "ramdisk_agent.cli"]
    return die_with_parent() + list(program or default)


def die_with_parent() -> list[str]:
    """``setpriv --pdeathsig KILL`` (util-linux), or nothing where it is missing."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


def write_json_atomic(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(tmp, path)


class Machine:
    """Supervises one machine; ``tick()`` is called by the lab's main loop."""

    def __init__(self, spec: MachineSpec, bmc_state: Path, status_dir: Path,
                 pxe: firmware.PxeConfig | None, executor: Executor,
                 agent_program: list[str] | None = None):
        self.spec, self.pxe, self.executor = spec, pxe, executor
        self.agent_program = agent_program
        self.store = StateFile(bmc_state)
        self.bmc = self.store.load()
        self.workdir = Path(status_dir) / spec.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.status_path = Path(status_dir) / f"{spec.name}.json"
        self.phase = "off"
        self.booted_os: dict | None = None
        self.events: list[dict] = []
        self.boots_seen = self.bmc.boots if self.bmc.power == "off" else -1
        self.boot_pending: tuple[int, Future] | None = None   # (generation, firmware run)
        self.boot_generation = 0
        self.agent: subprocess.Popen | None = None
        self.agent_role = "ramdisk"
        self.agent_info: dict | None = None
        self._written: tuple | None = None
        self.last_agent: dict | None = None
        self._ensure_disk()
        self._event("lab", f"machine {spec.name} ({spec.mac}) disk {spec.disk}")
        self.write_status()

    def _ensure_disk(self) -> None:
        """A missing disk image becomes an empty sparse file (a blank new disk)."""
        path = Path(self.spec.disk)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.truncate(self.spec.disk_size_mib << 20)

    # -- the supervision loop ------------------------------------------------
    def tick(self) -> None:
        self.bmc = self.store.refresh(self.bmc)
        if self.bmc.power != "on":
            if self.phase != "off":
                self._power_cut("powered off by the BMC")
                self._set_phase("off")
            self.boots_seen = self.bmc.boots
            return
        if self.bmc.boots != self.boots_seen:
            self.boots_seen = self.bmc.boots
            self._start_boot(self.bmc.last_boot_device or "disk")
        if self.boot_pending is not None and self.boot_pending[1].done():
            self._finish_boot()
        if self.agent is not None and self.agent.poll() is not None:
            self._agent_exited()
        if self._written != (self.bmc.power, self.bmc.boots, self.phase):
            self.write_status()

    def _start_boot(self, device: str) -> None:
        if self.phase != "off":
            self._power_cut("reset by the BMC")
        self.boot_generation += 1
        self.booted_os = None
        self._set_phase("pxe" if device == "pxe" else "booting", f"power on, boot from {device}")
        self.boot_pending = (self.boot_generation, self.executor.submit(
            firmware.boot, device, self.spec.mac, self.spec.disk, self.pxe))

    def _finish_boot(self) -> None:
        assert self.boot_pending is not None
        (generation, future), self.boot_pending = self.boot_pending, None
        if generation != self.boot_generation:
            return                      # a power cut or reset overtook this boot
        try:
            outcome = future.result()
        except Exception as exc:  # a firmware bug must not stop the lab
            LOG.exception("Machine %s: firmware failed", self.spec.name)
            outcome = firmware.Outcome("no-boot", f"firmware error: {exc}")
        for source, detail in outcome.events:
            self._event(source, detail)
        HANDLERS[outcome.kind](self, outcome)

    def _booted_disk(self, outcome: firmware.Outcome) -> None:
        assert outcome.os is not None  # set for kind "disk"
        self.booted_os = dict(outcome.os.to_dict(), cmdline=outcome.cmdline)
        self._set_phase("booted-disk", outcome.detail)
        if self.spec.update_conf and outcome.cmdline:
            if os.path.isfile(self.spec.update_conf):
                self._start_update_host(outcome)
            else:
                self._event("host", f"no update engine: {self.spec.update_conf} is missing")

    def _no_boot(self, outcome: firmware.Outcome) -> None:
        self._set_phase("no-boot", outcome.detail)

    def _ipxe_poweroff(self, outcome: firmware.Outcome) -> None:
        self._bmc_power_off(outcome.detail)

    # -- the agent -------------------------------------------------------------
    def _start_agent(self, outcome: firmware.Outcome) -> None:
        assert outcome.kernel is not None  # set for kind "agent"
        cmdline = self.workdir / "cmdline"
        cmdline.write_text(outcome.cmdline + "\n")
        power_file = self.workdir / "agent-power.json"
        power_file.unlink(missing_ok=True)
        cmd = agent_command(self.agent_program) + [
            "--cmdline-file", str(cmdline), "--disk", self.spec.disk,
            "--listen", "127.0.0.1:0", "--advertise-host", "127.0.0.1",
            "--power-action", "exit", "--state-file", str(power_file)]
        log_path = self.workdir / "agent.log"
        with open(log_path, "ab") as log:
            log.write(f"--- boot {self.boots_seen}: {' '.join(cmd)}\n".encode())
            log.flush()
            # Its own process group: a power cut takes its children (qemu-img...) too.
            self.agent = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        self.agent_role = "ramdisk"
        self.agent_info = {"pid": self.agent.pid, "role": "ramdisk", "cmdline": outcome.cmdline,
                           "command": cmd, "log": str(log_path), "started": time.time(),
                           "kernel": dataclasses.asdict(outcome.kernel),
                           "initrds": [dataclasses.asdict(i) for i in outcome.initrds]}
        self._set_phase("agent", f"started metalcast-agent pid {self.agent.pid} "
                                 f"with kernel command line: {outcome.cmdline}")

    def _start_update_host(self, outcome: firmware.Outcome) -> None:
        """The installed OS's update engine: mark-good (else reset), then the daemon."""
        assert outcome.os is not None
        host = self.workdir / "host"
        host.mkdir(exist_ok=True)
        (host / "cmdline").write_text(outcome.cmdline + "\n")
        (host / "os-release").write_text("".join(
            f"{key}={shlex.quote(value)}\n" for key, value in outcome.os.os_release.items()))
        (host / "boot-id").write_text(f"{uuid.uuid4()}\n")
        machine_id = host / "machine-id"
        if not machine_id.exists():
            machine_id.write_text(uuid.uuid4().hex + "\n")
        settings = self.host_settings(host)
        agent = agent_command(self.agent_program) + [
            "update", "--config", str(self.spec.update_conf),
            *(f"--set={key}={value}" for key, value in settings.items())]
        words = " ".join(shlex.quote(w) for w in agent)
        # mark-good: 0 marked, 1 not marked (reset: the watchdog's job), 2 bad settings
        # (no reset: a reboot loop would not fix update.conf; the engine just ends).
        script = (f"{words} mark-good; code=$?\n"
                  f"[ $code -eq 1 ] && exec {settings['REBOOT_COMMAND']}\n"
                  f"[ $code -eq 0 ] || exit $code\n"
                  f"exec {words} daemon\n")
        cmd = die_with_parent() + ["sh", "-c", script]
        log_path = self.workdir / "update.log"
        with open(log_path, "ab") as log:
            log.write(f"--- boot {self.boots_seen}: {outcome.cmdline}\n".encode())
            log.flush()
            self.agent = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        self.agent_role = "update-host"
        self.agent_info = {"pid": self.agent.pid, "role": "update-host",
                           "cmdline": outcome.cmdline, "command": cmd, "log": str(log_path),
                           "started": time.time(),
                           "machine_id": machine_id.read_text().strip()}
        self._event("host", f"started the update engine pid {self.agent.pid} "
                            f"(mark-good, then daemon) with {outcome.cmdline}")
        self.write_status()

    def host_settings(self, host: Path) -> dict[str, str]:
        """What the machine tells its update engine on top of ``update_conf``."""
        reset = [sys.executable, "-m", "virtlab.host_tools", "reset", str(self.store.path)]
        return {"DISK": self.spec.disk, "CMDLINE_FILE": str(host / "cmdline"),
                "OS_RELEASE_FILE": str(host / "os-release"),
                "BOOT_ID_FILE": str(host / "boot-id"),
                "MACHINE_ID_FILE": str(host / "machine-id"),
                "STATE_DIR": str(host / "update-state"),
                "REBOOT_REQUIRED_FILE": str(host / "reboot-required"),
                "REBOOT_COMMAND": " ".join(shlex.quote(w) for w in reset)}

    def _agent_exited(self) -> None:
        assert self.agent is not None and self.agent_info is not None
        if self.agent_role == "update-host":
            self._update_host_exited()
            return
        code, self.agent = self.agent.returncode, None
        event = self._read_power_event()
        self.last_agent = {"pid": self.agent_info["pid"], "exit_code": code,
                           "power_event": event, "ended": time.time()}
        self.agent_info = None
        if event == "power_off":
            self._bmc_power_off(f"agent powered the machine off (exit code {code})")
        elif event == "reboot":
            self._event("agent", f"agent rebooted the machine (exit code {code})")
            self._bmc_reboot()
        else:
            self._set_phase("agent-exited", f"agent exited with code {code} without a "
                                            "power action: the machine hangs")

    def _update_host_exited(self) -> None:
        """The update engine ended on its own: the OS stays up (phase booted-disk)."""
        assert self.agent is not None and self.agent_info is not None
        code, pid = self.agent.returncode, self.agent_info["pid"]
        self.agent, self.agent_info, self.agent_role = None, None, "ramdisk"
        self.last_agent = {"pid": pid, "exit_code": code, "power_event": None,
                           "ended": time.time()}
        self._event("host", f"the update engine pid {pid} exited with code {code}")
        self.write_status()

    def _read_power_event(self) -> str | None:
        try:
            return json.loads((self.workdir / "agent-power.json").read_text()).get("event")
        except (FileNotFoundError, ValueError):
            return None

    def _power_cut(self, why: str) -> None:
        """Kill the running agent (SIGKILL to its process group) and drop a pending boot."""
        self.boot_generation += 1
        self.boot_pending = None
        if self.agent is None:
            return
        pid = self.agent.pid
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.agent.wait()
        self.last_agent = {"pid": pid, "exit_code": self.agent.returncode,
                           "power_event": "power-cut", "ended": time.time()}
        self.agent, self.agent_info, self.agent_role = None, None, "ramdisk"
        self._event("power", f"{why}: killed metalcast-agent pid {pid}")

    def shutdown(self) -> None:
        """The lab stops: cut the power of whatever runs (agents die by PID)."""
        self._power_cut("lab stopping")
        self._set_phase("lab-stopped")

    # -- BMC state written by the machine itself -------------------------------
    def _bmc_power_off(self, why: str) -> None:
        def off(state: MachineState) -> None:
            state.power = "off"
        self.bmc = self.store.update(off)
        self.boots_seen = self.bmc.boots
        self._set_phase("off", why)

    def _bmc_reboot(self) -> None:
        """The same as the BMC's own reset: boot again, consuming a one-time override."""
        def reboot(state: MachineState) -> None:
            device = state.boot.device if state.boot.device != "none" else "disk"
            state.power, state.boots, state.last_boot_device = "on", state.boots + 1, device
            if state.boot.device != "none" and not state.boot.persistent:
                state.boot = BootOverride()
        self.bmc = self.store.update(reboot)
        # The next tick sees the new boot count and boots.

    # -- status ----------------------------------------------------------------
    def _event(self, source: str, detail: str) -> None:
        LOG.info("Machine %s: %s: %s", self.spec.name, source, detail)
        self.events.append({"time": time.time(), "source": source, "event": detail})
        del self.events[:-MAX_EVENTS]

    def _set_phase(self, phase: str, detail: str | None = None) -> None:
        self.phase = phase
        self._event("phase", f"{phase}: {detail}" if detail else phase)
        self.write_status()

    def status(self) -> dict:
        return {"name": self.spec.name, "mac": self.spec.mac, "disk": self.spec.disk,
                "bmc_port": self.spec.bmc_port, "power": self.bmc.power,
                "boot_device": self.bmc.last_boot_device, "boots": self.bmc.boots,
                "boot_override": dataclasses.asdict(self.bmc.boot),
                "phase": self.phase, "booted_os": self.booted_os, "agent": self.agent_info,
                "last_agent": self.last_agent, "events": self.events, "updated": time.time()}

    def write_status(self) -> None:
        self._written = (self.bmc.power, self.bmc.boots, self.phase)
        write_json_atomic(self.status_path, self.status())


#: Outcome.kind -> what the machine does next.
HANDLERS = {"agent": Machine._start_agent, "disk": Machine._booted_disk,
            "no-boot": Machine._no_boot, "poweroff": Machine._ipxe_poweroff}
