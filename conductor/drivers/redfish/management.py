"""Redfish management interface ("redfish"): boot override, boot mode, virtual media.

Boot devices are checked against the system's
``BootSourceOverrideTarget@Redfish.AllowableValues`` before anything is sent, so
an unsupported device is a clear 400 naming the allowed ones, not a BMC error.
"""
from __future__ import annotations

import logging

import sushy

from conductor import errors
from conductor.drivers import base
from conductor.drivers.base import BootDevice
from conductor.drivers.redfish import vmedia
from conductor.drivers.redfish.client import RedfishInterface

LOG = logging.getLogger(__name__)

#: Ironic's name for UEFI HTTP boot; not in base.BootDevice (only Redfish has it).
UEFI_HTTP = "uefihttp"

#: Our boot device -> Redfish BootSourceOverrideTarget (Ironic's map).
BOOT_DEVICES = {
    BootDevice.PXE.value: sushy.BootSource.PXE,
    BootDevice.DISK.value: sushy.BootSource.HDD,
    BootDevice.CDROM.value: sushy.BootSource.CD,
    BootDevice.BIOS.value: sushy.BootSource.BIOS_SETUP,
    UEFI_HTTP: sushy.BootSource.UEFI_HTTP,
}
BOOT_DEVICES_REV = {target: name for name, target in BOOT_DEVICES.items()}

#: persistent? -> BootSourceOverrideEnabled
PERSISTENCE = {False: sushy.BootSourceOverrideEnabled.ONCE,
               True: sushy.BootSourceOverrideEnabled.CONTINUOUS}

#: Our boot mode (Ironic's names) -> BootSourceOverrideMode
BOOT_MODES = {"uefi": sushy.BootSourceOverrideMode.UEFI,
              "bios": sushy.BootSourceOverrideMode.LEGACY}
BOOT_MODES_REV = {mode: name for name, mode in BOOT_MODES.items()}


def _device_name(device) -> BootDevice | str:
    """Our public form of a device name: the BootDevice member when there is one."""
    try:
        return BootDevice(device)
    except ValueError:
        return device


def _allowed_names(allowed) -> str:
    ours = [name for name, target in BOOT_DEVICES.items() if target in allowed]
    raw = sorted(v.value for v in allowed)
    return f"{', '.join(ours) or 'none'} (Redfish: {', '.join(raw)})"


class RedfishManagement(RedfishInterface, base.ManagementInterface):
    """Boot device and mode through the System's Boot object; virtual CD."""

    def get_supported_boot_devices(self, task) -> list:
        allowed = self.client(task).run(
            "boot device list", lambda system: system.get_allowed_system_boot_source_values())
        return [_device_name(name) for name, target in BOOT_DEVICES.items()
                if target in allowed]

    def set_boot_device(self, task, device, persistent: bool = False) -> None:
        name = getattr(device, "value", device)
        if name not in BOOT_DEVICES:
            raise errors.InvalidParameter(
                f"Unknown boot device {name!r}; expected one of {', '.join(BOOT_DEVICES)}.")
        target = BOOT_DEVICES[name]

        def apply(system):
            allowed = system.get_allowed_system_boot_source_values()
            if target not in allowed:
                raise errors.InvalidParameter(
                    f"Boot device {name!r} is not supported by the Redfish system of node "
                    f"{task.node.uuid}; allowed: {_allowed_names(allowed)}.")
            system.set_system_boot_options(target, enabled=PERSISTENCE[bool(persistent)])

        self.client(task).run(f"set boot device {name}", apply)
        LOG.info("Node %s: boot device %s (%s)", task.node.uuid, name,
                 "persistent" if persistent else "once")

    def get_boot_device(self, task) -> dict:
        boot = self.client(task).run("boot device read", lambda system: system.boot)
        target = BOOT_DEVICES_REV.get(boot.target) if boot else None
        enabled = boot.enabled if boot else None
        return {"boot_device": _device_name(target) if target else None,
                "persistent": None if enabled is None
                else enabled == sushy.BootSourceOverrideEnabled.CONTINUOUS}

    # -- boot mode (Ironic's ManagementInterface has these too) ---------------
    def get_supported_boot_modes(self, task) -> list[str]:
        return list(BOOT_MODES)

    def get_boot_mode(self, task) -> str | None:
        """The boot mode: "uefi", "bios", or None when the system does not say."""
        boot = self.client(task).run("boot mode read", lambda system: system.boot)
        return BOOT_MODES_REV.get(boot.mode) if boot else None

    def set_boot_mode(self, task, mode: str) -> None:
        if mode not in BOOT_MODES:
            raise errors.InvalidParameter(
                f"Unknown boot mode {mode!r}; expected one of {', '.join(BOOT_MODES)}.")
        self.client(task).run(
            f"set boot mode {mode}",
            lambda system: system.set_system_boot_options(mode=BOOT_MODES[mode]))
        LOG.info("Node %s: boot mode %s", task.node.uuid, mode)

    # -- virtual media -----------------------------------------------------
    def insert_virtual_media(self, task, url: str) -> str:
        """Put the ISO at ``url`` into the virtual CD (DVD if no CD); the drive's Id."""
        vmedia.check_url(url)
        return self.client(task).run(
            "virtual media insert", lambda system: vmedia.insert(system, url, task.node.uuid))

    def eject_virtual_media(self, task) -> list[str]:
        """Eject whatever is in the virtual CD/DVD drives; the drives that had media."""
        return self.client(task).run(
            "virtual media eject", lambda system: vmedia.eject(system, task.node.uuid))

    def boot_from_virtual_media(self, task, url: str, persistent: bool = False) -> None:
        """Insert ``url`` and make the virtual CD the boot device."""
        self.insert_virtual_media(task, url)
        self.set_boot_device(task, BootDevice.CDROM, persistent=persistent)
