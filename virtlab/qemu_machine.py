"""A virtual lab machine that is a real QEMU VM, powered by a virtual IPMI BMC.

The BMC (``python -m virtlab.bmc``, run inside the NetLab so that ``metalcast
serve`` in the namespace reaches it) keeps power and boot flags in its state file
(virtlab.state). ``QemuMachine`` watches that file from a thread and is the
machine's hardware:

* a new boot (power on or reset moved the BMC's ``boots`` counter) kills any running
  QEMU and starts one on the lab's tap with ``-boot n`` when the boot used the
  ``pxe`` override, else ``-boot c`` (the virtual disk, a raw file);
* power off from the BMC kills QEMU by its process group;
* QEMU ending by itself (the guest's ``poweroff -f`` with ``-no-reboot``, or a
  panic with ``panic=-1``) writes power off into the BMC's state, as a real BMC sees
  its host go down.

Every boot keeps its own stamped serial console (``Boot.console``). TCG only, and
``timeout`` bounds every QEMU (test-lab.md section 1).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path

from virtlab.netlab import NetLab, TimedLog
from virtlab.state import MachineState, StateFile

LOG = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
VM_TIMEOUT = 240      # seconds per boot; a PXE boot into the agent takes ~20 s under TCG
POLL = 0.1
#: BMC boot device -> QEMU's -boot order (network first, or the first hard disk).
BOOT_ORDER = {"pxe": "n", "disk": "c"}


@dataclasses.dataclass
class Boot:
    """One power-on of the VM: what it booted and what its console said."""

    number: int                     # the BMC's boots counter for this boot
    device: str                     # "pxe" or "disk"
    process: subprocess.Popen
    console: TimedLog
    started: float                  # time.monotonic() before QEMU started
    ended: float | None = None
    exit_code: int | None = None
    stopped_by: str | None = None   # "bmc" (power off/reset), "guest" (exited), "lab"

    def since_start(self, pattern: str) -> float | None:
        found = self.console.first(pattern)
        return None if found is None else found[0] - self.started


class QemuMachine:
    """``with QemuMachine(lab, state_file, disk, mac) as machine:``; needs root (tap)."""

    def __init__(self, lab: NetLab, state_file: Path, disk: Path, mac: str,
                 memory_mib: int = 512, vm_timeout: int = VM_TIMEOUT):
        if shutil.which(QEMU) is None:
            raise RuntimeError(f"{QEMU} not found: install the Debian packages "
                               "qemu-system-x86 and ipxe-qemu")
        self.lab, self.disk, self.mac = lab, Path(disk), mac
        self.memory_mib, self.vm_timeout = memory_mib, vm_timeout
        self.store = StateFile(state_file)
        self.boots: list[Boot] = []
        self._state = self.store.load()
        self._seen = self._state.boots if self._state.power == "off" else -1
        self._current: Boot | None = None
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="qemu-machine", daemon=True)

    def __enter__(self) -> QemuMachine:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop watching and cut the power of a running VM (by PID)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        if self._current is not None:
            self._end(self._current, "lab")

    def command(self, device: str) -> list[str]:
        """The QEMU command line for one boot from ``device`` (wrapped in ``timeout``)."""
        return ["timeout", "--kill-after=5", str(self.vm_timeout), QEMU, "-accel", "tcg",
                "-m", str(self.memory_mib), "-nographic", "-no-reboot",
                "-boot", BOOT_ORDER.get(device, "c"),
                "-netdev", f"tap,id=n0,ifname={self.lab.tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}",
                "-drive", f"file={self.disk},format=raw,if=virtio,cache=unsafe"]

    def wait_for_boot(self, number: int, timeout: float) -> Boot | None:
        """The ``number``-th boot (1 = first since this machine started), once started."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.boots) < number and time.monotonic() < deadline:
                self._changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            return self.boots[number - 1] if len(self.boots) >= number else None

    def wait_for_end(self, boot: Boot, timeout: float) -> bool:
        """True once the supervisor has recorded ``boot`` as ended (power is off)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while boot.ended is None and time.monotonic() < deadline:
                self._changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))
        return boot.ended is not None

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            try:
                self._tick()
            except Exception:  # the hardware must keep running
                LOG.exception("QEMU machine %s: supervisor step failed", self.mac)

    def _tick(self) -> None:
        state = self._state = self.store.refresh(self._state)
        current = self._current
        if state.power == "on" and state.boots != self._seen:
            if current is not None:
                self._end(current, "bmc")
            self._seen = state.boots
            self._start(state)
        elif state.power == "off" and current is not None:
            self._end(current, "bmc")
        elif current is not None and current.process.poll() is not None:
            self._end(current, "guest")
            self._power_off_from_guest(current.number)

    def _start(self, state: MachineState) -> None:
        device = state.last_boot_device or "disk"
        started = time.monotonic()
        process = self.lab.start(self.command(device))
        boot = Boot(state.boots, device, process, TimedLog(process.stdout), started)
        LOG.info("QEMU machine %s: boot %d from %s (pid %d)", self.mac, state.boots,
                 device, process.pid)
        with self._changed:
            self.boots.append(boot)
            self._current = boot
            self._changed.notify_all()

    def _end(self, boot: Boot, by: str) -> None:
        boot.exit_code = self.lab.stop(boot.process) if by != "guest" else boot.process.wait()
        boot.ended, boot.stopped_by = time.monotonic(), by
        LOG.info("QEMU machine %s: boot %d ended (%s, exit %s)", self.mac, boot.number, by,
                 boot.exit_code)
        with self._changed:
            if self._current is boot:
                self._current = None
            self._changed.notify_all()

    def _power_off_from_guest(self, number: int) -> None:
        """The guest went down by itself: the BMC reports power off from now on,
        unless a new boot was requested meanwhile."""
        def apply(state: MachineState) -> None:
            if state.boots == number and state.power == "on":
                state.power = "off"
                state.last_power_event = "guest"
        self._state = self.store.update(apply)
