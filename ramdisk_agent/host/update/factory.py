"""Build an UpdateEngine from an UpdateConfig: the one place the engine is wired."""
from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from ramdisk_agent.errors import AgentError, UpdateEngineError
from ramdisk_agent.host.credentials import read_token
from ramdisk_agent.host.update.client import Identity, LeaseClient, OmahaClient
from ramdisk_agent.host.update.config import UpdateConfig
from ramdisk_agent.host.update.engine import UpdateEngine
from ramdisk_agent.host.update.health import HealthGate
from ramdisk_agent.host.update.install import Installer
from ramdisk_agent.host.update.reboot import Rebooter
from ramdisk_agent.host.update.slotdev import SlotLayout, booted_partuuid, disk_of_partuuid
from ramdisk_agent.host.update.state import StateStore
from ramdisk_agent.ramdisk.download import DownloadOptions
from ramdisk_agent.wire import delta_format
from ramdisk_agent.wire.errors import WireError

LOG = logging.getLogger(__name__)


def _read(path: str, what: str, fix: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UpdateEngineError(f"{what} cannot be read from {path} ({exc}): {fix}") from None


def running_version(config: UpdateConfig) -> str:
    """VERSION (else VERSION_ID) of os-release, unless update.conf sets VERSION."""
    if config.version:
        return config.version
    values = {}
    for line in _read(config.os_release_file, "the running version",
                      "set VERSION= in update.conf").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = " ".join(shlex.split(value)) if value.strip() else ""
    version = values.get("VERSION") or values.get("VERSION_ID")
    if not version:
        raise UpdateEngineError(f"{config.os_release_file} has no VERSION: set VERSION= in "
                                "update.conf")
    return version


def build(config: UpdateConfig) -> UpdateEngine:
    version = running_version(config)
    boot_id = _read(config.boot_id_file, "the boot id", "set BOOT_ID_FILE=").strip()
    cmdline = _read(config.cmdline_file, "the kernel command line", "set CMDLINE_FILE=")
    disk = config.disk
    if disk is None:
        partuuid = booted_partuuid(cmdline)
        if partuuid is None:
            raise UpdateEngineError("the kernel command line has no mount.usr=PARTUUID= or "
                                    "root=PARTUUID=: set DISK= and ACTIVE_SLOT= in update.conf")
        disk = disk_of_partuuid(partuuid)
    layout = SlotLayout(disk, config.slot_labels, active=config.active_slot, cmdline=cmdline)
    machine_id = _read(config.machine_id_file, "the machine id",
                       "set MACHINE_ID_FILE=").strip()
    host = config.node_uuid or machine_id
    options = DownloadOptions(insecure=config.insecure, ca_file=config.ca_file)
    client = None if config.server is None else OmahaClient(
        config.server, Identity(config.appid, version, config.group, machine_id, boot_id),
        ca_file=config.ca_file, insecure=config.insecure)
    health = HealthGate(config.health_commands, config.health_units, config.health_window,
                        appliance=client.ping if client and config.health_needs_appliance
                        else None, host=host)
    rebooter = Rebooter(config.reboot_strategy, config.window, _leases(config),
                        config.reboot_command, wall_delay=config.wall_delay, host=host)
    installer = Installer(layout, _update_key(config), os.path.join(config.state_dir, "scratch"),
                          options, host)
    return UpdateEngine(store=StateStore(config.state_dir), client=client, layout=layout,
                        installer=installer, health=health, rebooter=rebooter,
                        version=version, boot_id=boot_id,
                        reboot_required_file=config.reboot_required_file,
                        schedule=config.schedule, host=host, deltas=config.delta_okay,
                        in_place=config.delta_in_place)


def _update_key(config: UpdateConfig) -> ed25519.Ed25519PublicKey | None:
    try:
        with open(config.update_key_file, "rb") as handle:
            return delta_format.load_public_key(handle.read())
    except OSError as exc:
        if config.server is None:
            return None
        raise UpdateEngineError(
            f"the appliance's update key cannot be read from {config.update_key_file} "
            f"({exc.strerror}): save the output of 'metalcast image pubkey' there, or set "
            "UPDATE_KEY=") from None
    except WireError as exc:
        raise UpdateEngineError(f"{config.update_key_file}: {exc}") from None


def _leases(config: UpdateConfig) -> LeaseClient | None:
    if config.reboot_strategy != "lease" or config.leases_endpoint() is None:
        return None
    try:
        issued = read_token(Path(config.token_file))
    except AgentError as exc:
        raise UpdateEngineError(f"REBOOT_STRATEGY=lease needs this host's agent token: "
                                f"{exc.message}") from None
    node = config.node_uuid or issued.node_uuid
    if not node:
        raise UpdateEngineError(f"{config.token_file} names no node: set NODE_UUID=")
    return LeaseClient(config.leases_endpoint() or "", node, issued.token, config.lease_group,
                       ca_file=config.ca_file, insecure=config.insecure)
