"""What an installed lab host runs besides the update engine (``python -m virtlab.host_tools``).

* ``reset STATE_FILE``: the host reboots itself as hardware would - its REBOOT_COMMAND.
  The BMC's own power reset (virtlab.bmc) is applied to the BMC's state file under its
  lock (power on, one more boot, a one-time boot override consumed); the lab machine
  watching that file sees the new boot, cuts whatever ran (this command included) and
  runs its firmware again, which picks the slot from the GPT bits.
* ``health OS_RELEASE``: the lab OS's health check. A real image's services fail when
  it is broken; a lab image says so in its os-release (``METALCAST_LAB_HEALTH=broken``,
  see :data:`BROKEN`), so this exits 1 for it and 0 otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from virtlab.state import BootOverride, MachineState, StateFile

#: The os-release line that makes a lab image fail its health check.
BROKEN = "METALCAST_LAB_HEALTH=broken"


def reset(state_file: Path) -> bool:
    """The BMC's power reset; False when the machine is off (IPMI refuses that too)."""
    done = {"reset": False}

    def apply(state: MachineState) -> None:
        if state.power != "on":
            return
        boot = state.boot
        state.boots += 1
        state.last_boot_device = boot.device if boot.device != "none" else "disk"
        state.last_power_event = "host-reboot"
        if boot.device != "none" and not boot.persistent:
            state.boot = BootOverride()
        done["reset"] = True
    StateFile(state_file).update(apply)
    return done["reset"]


def healthy(os_release: Path) -> bool:
    lines = {line.strip().replace('"', "") for line in os_release.read_text().splitlines()}
    return BROKEN not in lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virtlab.host_tools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("reset", "health"))
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.action == "reset":
            if not reset(args.path):
                print(f"{args.path}: the machine is off, nothing to reset", file=sys.stderr)
                return 1
            return 0
        if not healthy(args.path):
            print(f"{args.path}: this image is marked broken ({BROKEN})", file=sys.stderr)
            return 1
        return 0
    except OSError as exc:
        print(f"virtlab.host_tools {args.action}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
