"""The state of one simulated machine as its BMC sees it, kept in a JSON file.

Every change is written atomically (temporary file + rename), so a BMC
process killed at any moment leaves either the old or the new state behind,
and a restarted BMC answers exactly as before. There is no fsync: the file is a
channel between lab processes on one running kernel, whose page cache survives
any process dying; an fsync inside the BMCs' one packet loop waited behind the
lab's disk writes for seconds (50 machines writing images at once), long enough
for every BMC in the process to miss the conductor's 10 s IPMI budget.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
import uuid as uuidlib
from pathlib import Path

#: Boot devices the BMC can be asked to boot from next ("none" = no override).
BOOT_DEVICES = ("none", "pxe", "disk", "safe", "cdrom", "bios", "floppy")


@dataclasses.dataclass
class BootOverride:
    """The boot-flags parameter (IPMI parameter 5) as last set by a client."""

    device: str = "none"
    persistent: bool = False
    uefi: bool = False


@dataclasses.dataclass
class MachineState:
    """Power and boot state of one simulated machine."""

    uuid: str = dataclasses.field(default_factory=lambda: str(uuidlib.uuid4()))
    power: str = "off"                       #: "on" or "off"
    boot: BootOverride = dataclasses.field(default_factory=BootOverride)
    boots: int = 0                           #: how many times the machine booted
    last_boot_device: str | None = None      #: what the last boot used
    last_boot_uefi: bool | None = None
    last_power_event: str = "none"           #: "ipmi" once a client powered it on

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> MachineState:
        raw = dict(raw)
        boot = BootOverride(**raw.pop("boot", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(boot=boot, **{k: v for k, v in raw.items() if k in known})


class StateFile:
    """Loads and atomically saves one machine's state.

    Two processes write it: the BMC (IPMI commands) and the virtual lab's firmware
    (a machine that powers itself off or reboots). ``update`` serialises their
    read-modify-write cycles with ``flock`` on ``<file>.lock``; ``refresh`` lets a
    long-lived reader notice the other writer's changes.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._seen: tuple[int, int] | None = None   # (inode, mtime_ns) last loaded/saved

    def _identity(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def refresh(self, current: MachineState) -> MachineState:
        """``current``, or the file's content when another process replaced it."""
        identity = self._identity()
        if identity is None or identity == self._seen:
            return current
        return self.load()

    def update(self, change) -> MachineState:
        """Apply ``change(state)`` to the saved state under the lock; the new state."""
        with self._locked():
            state = self.load()
            change(state)
            self.save(state)
        return state

    def load(self) -> MachineState:
        """The saved state, or a fresh powered-off machine when there is none."""
        try:
            identity = self._identity()
            state = MachineState.from_dict(json.loads(self.path.read_text()))
            self._seen = identity
            return state
        except FileNotFoundError:
            state = MachineState()
            self.save(state)
            return state

    def save(self, state: MachineState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(state.to_dict(), handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
            self._seen = self._identity()
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def read_state(path: Path) -> MachineState:
    """The state a BMC last saved at ``path`` (for tests and the demo)."""
    return MachineState.from_dict(json.loads(Path(path).read_text()))
