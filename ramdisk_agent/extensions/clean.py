"""``clean``: get_clean_steps and execute_clean_step.

Steps (interface ``deploy``, as IPA's GenericHardwareManager):

* ``erase_devices_metadata`` (priority 99, automated cleaning): zero the first and
  last MiB of every disk, which removes the MBR, both GPT copies and the filesystem
  / RAID signatures that live there (ext4, xfs, vfat, ISO9660, LVM, md 1.x).
* ``erase_devices`` (priority 0: manual cleaning only, because zeroing a big disk
  takes hours): zero every byte with O_DIRECT writes.
"""
from __future__ import annotations

import logging
import mmap
from collections.abc import Callable
from dataclasses import dataclass

from ramdisk_agent import validate
from ramdisk_agent.commands import Extension, async_command, sync_command
from ramdisk_agent.errors import InvalidContent
from ramdisk_agent.ramdisk.pipeline import CHUNK, DiskTarget

LOG = logging.getLogger(__name__)

HARDWARE_MANAGER = "GenericHardwareManager"
MANAGER_VERSION = {"generic_hardware_manager": "1.2"}
METADATA_BYTES = 1 << 20


def step_entry(step: str, priority: int, abortable: bool = True) -> dict:
    return {"step": step, "priority": priority, "interface": "deploy",
            "reboot_requested": False, "abortable": abortable}


def erase_metadata(path: str) -> None:
    """Zero the first and last MiB of ``path``."""
    target = DiskTarget(path)
    try:
        capacity = int(target.capacity)     # a device: its size, never the growable inf
        zeros = memoryview(mmap.mmap(-1, METADATA_BYTES))
        length = min(METADATA_BYTES, capacity)
        target.write(0, zeros[:length])
        tail = max(length, capacity - METADATA_BYTES)
        target.write(tail, zeros[:capacity - tail])
    finally:
        target.close()


def erase_all(path: str) -> None:
    """Zero the whole of ``path``."""
    target = DiskTarget(path)
    try:
        zeros = memoryview(mmap.mmap(-1, CHUNK))
        offset, capacity = 0, int(target.capacity)
        while offset < capacity:
            length = min(CHUNK, capacity - offset)
            target.write(offset, zeros[:length])
            offset += length
    finally:
        target.close()


@dataclass(frozen=True)
class Step:
    """One entry of a step table: what runs (in the command's thread) and the check
    of its ``args`` (in the request, ``check(args, params)``; None: args unused)."""
    run: Callable
    check: Callable[[dict, dict], None] | None = None


def check_step(params: dict, table: dict, kind: str) -> None:
    """Validator of ``execute_<kind>_step``: ``step`` is an object naming a step of
    ``table`` with object ``args``, which that step's own check accepts."""
    validate.node_and_ports(params)
    step = validate.field(params, "step", "an object", required=True)
    if not isinstance(step.get("step"), str) or step["step"] not in table:
        raise InvalidContent(f'"step.step" must name a {kind} step '
                             f"({', '.join(sorted(table))}), not {validate.show(step.get('step'))}")
    args = validate.field(step, "args", "an object", "step.") or {}
    if table[step["step"]].check is not None:
        table[step["step"]].check(args, params)


def run_step(extension, step: dict, table: dict, kind: str, **kwargs) -> dict:
    """Run ``step`` (already checked by check_step) from ``table``; shape the result."""
    LOG.info("Node %s: %s step %s starting", extension.agent.node_uuid, kind, step["step"])
    value = table[step["step"]].run(extension, step.get("args") or {}, **kwargs)
    return {f"{kind}_result": value, f"{kind}_step": step}


def erase_devices_metadata(extension, args, **_ignored):
    for disk in extension.agent.disks():
        LOG.info("Node %s: erasing metadata of %s", extension.agent.node_uuid, disk.name)
        erase_metadata(disk.name)
    return None


def erase_devices(extension, args, **_ignored):
    for disk in extension.agent.disks():
        LOG.info("Node %s: zeroing %s (%s bytes)", extension.agent.node_uuid, disk.name,
                 disk.size)
        erase_all(disk.name)
    return None


CLEAN_STEPS = {"erase_devices_metadata": Step(erase_devices_metadata),
               "erase_devices": Step(erase_devices)}


class CleanExtension(Extension):
    name = "clean"

    @sync_command(validate=validate.node_and_ports)
    def get_clean_steps(self, node=None, ports=None, **_ignored):
        return {"clean_steps": {HARDWARE_MANAGER: [step_entry("erase_devices_metadata", 99),
                                                   step_entry("erase_devices", 0)]},
                "hardware_manager_version": MANAGER_VERSION}

    @async_command(validate=lambda params: check_step(params, CLEAN_STEPS, "clean"))
    def execute_clean_step(self, step, node=None, ports=None, clean_version=None, **_ignored):
        return run_step(self, step, CLEAN_STEPS, "clean")
