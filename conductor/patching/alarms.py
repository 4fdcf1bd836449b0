"""The patching alarms of specs/starlingx-patching.md §7, from the controller's state.

* 900.001 patching operation in progress (minor): some patch is Partial-Apply/-Remove.
* 900.002 patch host install failure (major): the reason lists the failed hosts.
* 900.003 obsolete patch in system (warning): a patch has status OBS (or "Obsolete").
* 500.101 developer certificate enabled (critical): an ENABLE_DEV_CERTIFICATE patch
  exists, or a ``dev`` key is in the trust store.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from conductor.alarms import Alarm

ENTITY = "host=controller"
IDS = ("900.001", "900.002", "900.003", "500.101")


def evaluate(controller) -> list[Alarm]:
    """The patching alarms that should be active now."""
    wanted = []
    states = {pid: controller.patch_state(pid) for pid in controller.patches}
    if any(state.startswith("Partial-") for state in states.values()):
        wanted.append(Alarm("900.001", ENTITY, "minor", "Patching operation in progress"))
    failed = sorted(controller.hosts.failed)
    if failed:
        wanted.append(Alarm("900.002", ENTITY, "major",
                            f"Patch installation failed on the following hosts: "
                            f"{', '.join(failed)}"))
    if any(p.meta.status in ("OBS", "Obsolete") for p in controller.patches.values()):
        wanted.append(Alarm("900.003", ENTITY, "warning", "Obsolete patch in system"))
    dev_patch = any("ENABLE_DEV_CERTIFICATE" in pid for pid in controller.patches)
    dev_key = _dev_key_trusted(controller.trusted_dir)
    if dev_patch or dev_key:
        wanted.append(Alarm("500.101", ENTITY, "critical", "Developer patch certificate "
                            "enabled"))
    return wanted


def _dev_key_trusted(directory: Path) -> bool:
    try:
        return _dev_key_in(str(directory), os.stat(directory).st_mtime_ns)
    except FileNotFoundError:
        return False


@functools.lru_cache(maxsize=8)
def _dev_key_in(directory: str, mtime_ns: int) -> bool:
    """Cached per directory mtime: host reports re-evaluate alarms many times a second."""
    return any(path.name.startswith("dev") for path in Path(directory).glob("*.pem"))
