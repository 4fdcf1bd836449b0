"""``deploy.install_patches``: bring the freshly written root up to the Applied patches.

The conductor calls it after ``write_image`` when patches are Applied (or
Committed) for the node's release (conductor/drivers/deploy/patches.py), so the host's
first boot is already patch-current: no extra install, no extra reboot
(specs/starlingx-patching.md §4.6, done in the ramdisk instead of at init).

Params (async command)::

    {"base_repo_url": "<http_url>/feed/rel-<ver>",
     "updates_repo_url": "<http_url>/updates/rel-<ver>",
     "sw_version": "<ver>", "nodetype": "controller",
     "subfunctions": ["controller", ...],      # optional, default [nodetype]
     "partition": 2}                            # optional GPT partition number

The root partition is, unless given: the GPT partition typed "Linux root
(x86-64)" (sgdisk 8304), else the largest partition that is not an ESP, BIOS
boot or swap partition. The host kernel may not parse partitions (test-lab.md
§7), so it is mounted by byte range (``mount -o loop,offset=,sizelimit=``) of
the disk the image went to, ``dnf --installroot`` runs on it
(``PatchEngine.install_into_root``: upgrades and group installs only, no
restart scripts, no flags) and it is unmounted (and synced) whatever happens.
The ramdisk image therefore needs ``rpm``, ``dnf``, ``mount`` and a loop driver.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from ramdisk_agent import gpt
from ramdisk_agent.commands import Extension, async_command
from ramdisk_agent.errors import AgentError, InvalidContent, PatchEngineError

LOG = logging.getLogger(__name__)
ROOT_TYPES = ("4f68bce3-e8cd-4db1-96e7-fbcaf984b709",)     # Linux root (x86-64)
NOT_ROOT = frozenset({gpt.ESP_TYPE,
                      "21686148-6449-6e6f-744e-656564454649",   # BIOS boot
                      "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"})  # Linux swap
MOUNT_TIMEOUT = 120
URL_SCHEMES = ("http://", "https://", "file://")


def root_partition(disk: str, number: int | None = None) -> gpt.Partition:
    """The partition of ``disk`` holding the root file system (see module doc)."""
    table = gpt.read_table(disk)
    if table.kind != "gpt" or not table.partitions:
        raise AgentError(f"{disk} has no GPT partition table: cannot find the root "
                         "file system to install patches into")
    if number is not None:
        found = [p for p in table.partitions if p.number == number]
        if not found:
            raise AgentError(f"{disk} has no partition {number}")
        return found[0]
    typed = [p for p in table.partitions if p.type_guid in ROOT_TYPES]
    others = [p for p in table.partitions if p.type_guid not in NOT_ROOT]
    if not (typed or others):
        raise AgentError(f"{disk} has no partition that can hold a root file system")
    return max(typed or others, key=lambda p: p.last_lba - p.first_lba)


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=MOUNT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgentError(f"{what} failed: {exc}") from None
    if done.returncode:
        raise AgentError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-300:]}")


@contextlib.contextmanager
def mounted(disk: str, part: gpt.Partition, scratch: str | None):
    """Mount ``part`` of ``disk`` by byte range on a temporary directory."""
    offset = part.first_lba * gpt.SECTOR
    size = (part.last_lba - part.first_lba + 1) * gpt.SECTOR
    mountpoint = Path(tempfile.mkdtemp(prefix="metalcast-root-", dir=scratch))
    try:
        _run(["mount", "-o", f"loop,offset={offset},sizelimit={size}", disk,
              str(mountpoint)], f"mounting partition {part.number} of {disk}")
        try:
            yield mountpoint
        finally:
            _run(["umount", str(mountpoint)], f"unmounting {mountpoint}")
    finally:
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


def check_install_patches(params: dict) -> None:
    """The command's validator (run in the request): repos, release, node type."""
    for key in ("base_repo_url", "sw_version", "nodetype"):
        if not isinstance(params.get(key), str) or not params[key]:
            raise InvalidContent(f'"{key}" must be a non-empty string')
    for key in ("base_repo_url", "updates_repo_url"):
        value = params.get(key)
        if value is not None and not (isinstance(value, str) and
                                      value.startswith(URL_SCHEMES)):
            raise InvalidContent(f'"{key}" must be an http, https or file URL')
    subs = params.get("subfunctions")
    if subs is not None and not (isinstance(subs, list) and subs and
                                 all(isinstance(s, str) and s for s in subs)):
        raise InvalidContent('"subfunctions" must be a list of non-empty strings')
    number = params.get("partition")
    if number is not None and (not isinstance(number, int) or isinstance(number, bool)
                               or number < 1):
        raise InvalidContent('"partition" must be a positive integer')


class PatchesExtension(Extension):
    """Registered under the ``deploy`` prefix next to DeployExtension."""

    name = "deploy"

    @async_command(validate=check_install_patches)
    def install_patches(self, base_repo_url=None, updates_repo_url=None, sw_version=None,
                        nodetype=None, subfunctions=None, partition=None, **_ignored):
        agent = self.agent
        disk = agent.root_disk
        if not disk:
            raise AgentError("No image has been written by this agent yet")
        part = root_partition(disk, partition)
        # Imported here, not at the top: the RPM engine is not needed for a plain
        # deploy and would add to every agent's start-up.
        from ramdisk_agent.host import PatchEngine
        LOG.info("Node %s: installing release %s patches into partition %s of %s",
                 agent.node_uuid, sw_version, part.number, disk)
        work = Path(tempfile.mkdtemp(prefix="metalcast-patches-",
                                     dir=agent.config.scratch_dir))
        try:
            engine = PatchEngine(work, base_repo_url=base_repo_url,
                                 updates_repo_url=updates_repo_url, sw_version=sw_version,
                                 nodetype=nodetype, subfunctions=subfunctions,
                                 cache_dir=work / "cache", hostname=agent.node_uuid)
            with mounted(disk, part, agent.config.scratch_dir) as root:
                try:
                    result = engine.install_into_root(root)
                except PatchEngineError as exc:
                    raise AgentError(str(exc).replace(str(root), "the new root")) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        LOG.info("Node %s: patches installed into the new root: %s", agent.node_uuid,
                 {k: result.get(k) for k in ("upgrade", "install")})
        return {"disk": disk, "partition": part.number, **result}
