"""The state of one simulated machine as its BMC sees it, kept in a JSON file.

Every change is written atomically (temporary file + fsync + rename), so a BMC
process killed at any moment leaves either the old or the new state behind,
and a restarted BMC answers exactly as before.
"""
from __future__ import annotations

import dataclasses
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
    def from_dict(cls, raw: dict) -> "MachineState":
        raw = dict(raw)
        boot = BootOverride(**raw.pop("boot", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(boot=boot, **{k: v for k, v in raw.items() if k in known})


class StateFile:
    """Loads and atomically saves one machine's state."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> MachineState:
        """The saved state, or a fresh powered-off machine when there is none."""
        try:
            return MachineState.from_dict(json.loads(self.path.read_text()))
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
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def read_state(path: Path) -> MachineState:
    """The state a BMC last saved at ``path`` (for tests and the demo)."""
    return MachineState.from_dict(json.loads(Path(path).read_text()))
