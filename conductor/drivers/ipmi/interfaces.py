"""IPMI power and management ("ipmitool" in Ironic's names) over pyghmi.

Ironic's ipmitool driver forks ``ipmitool`` per command; here pyghmi keeps one
RMCP+ session per BMC and set of credentials (reused for those credentials only, at
most ``[ipmi] session_max_age``) and ``ipmi_client`` serialises, spaces, retries and
bounds the commands. The requests are raw IPMI (chassis status, chassis control, boot
options parameter 5), the same bytes Ironic sends for UEFI boot flags.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from conductor import errors
from conductor.config import Settings
from conductor.drivers import base
from conductor.drivers.base import BootDevice, PowerState
from conductor.drivers.ipmi.client import BmcAddress, BmcChannels

if TYPE_CHECKING:
    from conductor.drivers.context import DriverContext

LOG = logging.getLogger(__name__)

DEFAULT_PORT = 623
#: ipmi_priv_level names (Ironic's) -> IPMI privilege level numbers.
PRIV_LEVELS = {"ADMINISTRATOR": 4, "OPERATOR": 3, "USER": 2, "CALLBACK": 1}
#: IPMI 2.0 limits on user name and password length (RAKP).
MAX_USERNAME, MAX_PASSWORD = 16, 20
#: Boot modes; Ironic's default ([deploy]default_boot_mode) is UEFI since Yoga.
BOOT_MODES = ("uefi", "bios")
DEFAULT_BOOT_MODE = "uefi"

NETFN_CHASSIS = 0x00
CMD_CHASSIS_STATUS, CMD_CHASSIS_CONTROL = 0x01, 0x02
CMD_SET_BOOT_OPTIONS, CMD_GET_BOOT_OPTIONS = 0x08, 0x09
BOOT_PARAM_VALID_BIT_CLEARING, BOOT_PARAM_FLAGS = 3, 5
FLAG_VALID, FLAG_PERSISTENT, FLAG_UEFI = 0x80, 0x40, 0x20

#: Chassis control data byte for each power action.
CHASSIS_CONTROL = {"off": 0, "on": 1, "cycle": 2, "reset": 3, "soft off": 5}
#: Boot device -> boot-flags device selector (data byte 2, bits 5:2).
BOOT_SELECTORS = {BootDevice.PXE: 1, BootDevice.DISK: 2, BootDevice.CDROM: 5,
                  BootDevice.BIOS: 6}
SELECTOR_DEVICES = {sel: dev for dev, sel in BOOT_SELECTORS.items()}
#: driver_internal_info key remembering the last boot device request (for reboot).
BOOT_REQUEST_KEY = "ipmi_boot_device"


@dataclasses.dataclass(frozen=True)
class ChassisStatus:
    """Get Chassis Status, byte 1 (current power state) decoded."""

    power_on: bool
    overload: bool
    interlock: bool
    power_fault: bool
    control_fault: bool

    @classmethod
    def parse(cls, data: bytes) -> ChassisStatus:
        if not data:
            raise errors.DriverError("BMC returned an empty chassis status")
        b = data[0]
        return cls(bool(b & 1), bool(b & 2), bool(b & 4), bool(b & 8), bool(b & 16))

    @property
    def faults(self) -> list[str]:
        names = ("overload", "interlock", "power_fault", "control_fault")
        return [n for n in names if getattr(self, n)]


def parse_driver_info(task) -> BmcAddress:
    """driver_info -> BmcAddress; InvalidParameter (400) naming the bad field."""
    info = task.driver_info
    address = info.get("ipmi_address")
    if not address:
        raise errors.InvalidParameter("Missing the following IPMI credentials in node's "
                                      "driver_info: ipmi_address.")
    if not isinstance(address, str) or any(c.isspace() for c in address):
        raise errors.InvalidParameter(f"driver_info.ipmi_address must be a host name or IP "
                                      f"address, not {address!r}.")
    return BmcAddress(host=address, port=_port(info.get("ipmi_port", DEFAULT_PORT)),
                      username=_text(info, "ipmi_username", MAX_USERNAME),
                      password=_text(info, "ipmi_password", MAX_PASSWORD),
                      priv_level=_priv_level(info.get("ipmi_priv_level", "ADMINISTRATOR")))


def _port(raw) -> int:
    try:
        port = int(raw)
        valid = not isinstance(raw, (bool, float)) and 1 <= port <= 65535
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise errors.InvalidParameter(f"driver_info.ipmi_port must be an integer between 1 "
                                      f"and 65535, not {raw!r}.")
    return port


def _text(info: dict, field: str, limit: int) -> str:
    value = info.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise errors.InvalidParameter(f"driver_info.{field} must be a string.")
    if len(value.encode()) > limit:
        raise errors.InvalidParameter(f"driver_info.{field} is longer than the {limit} bytes "
                                      "IPMI 2.0 allows.")
    return value


def _priv_level(raw) -> int:
    level = PRIV_LEVELS.get(str(raw).upper())
    if level is None:
        raise errors.InvalidParameter(
            f"Invalid privilege level value: driver_info.ipmi_priv_level {raw!r}; the valid "
            f"value can be one of {', '.join(PRIV_LEVELS)}.")
    return level


def boot_mode(task) -> str:
    """'uefi' or 'bios': properties.capabilities boot_mode, else driver_info.boot_mode."""
    caps = (task.node.properties or {}).get("capabilities") or {}
    if isinstance(caps, str):
        caps = dict(item.split(":", 1) for item in caps.split(",") if ":" in item)
    mode = caps.get("boot_mode") or task.driver_info.get("boot_mode") or DEFAULT_BOOT_MODE
    if mode not in BOOT_MODES:
        raise errors.InvalidParameter(f"boot_mode {mode!r} (properties.capabilities or "
                                      f"driver_info) must be one of {', '.join(BOOT_MODES)}.")
    return mode


class _IpmiInterface:
    """What power and management share: parsing, the channel, the raw calls."""

    context: DriverContext

    def validate(self, task) -> None:
        parse_driver_info(task)

    @property
    def settings(self) -> Settings:
        return self.context.settings

    def _channels(self) -> BmcChannels:
        return self.context.bmc_channels

    def _call(self, task, what: str, command: int, data: tuple = ()) -> bytes:
        bmc = parse_driver_info(task)
        return self._channels().get(bmc).call(bmc, what, NETFN_CHASSIS, command, data,
                                              node=task.node.uuid)

    def _chassis_status(self, task) -> ChassisStatus:
        return ChassisStatus.parse(self._call(task, "get chassis status", CMD_CHASSIS_STATUS))

    def _set_boot_flags(self, task, device: BootDevice, persistent: bool) -> None:
        flags = FLAG_VALID | (FLAG_PERSISTENT if persistent else 0)
        if boot_mode(task) == "uefi":
            flags |= FLAG_UEFI
        try:
            # As Ironic and pyghmi: keep the BMC from dropping the flags after 60 s.
            self._call(task, "disable boot flag timeout", CMD_SET_BOOT_OPTIONS,
                       (BOOT_PARAM_VALID_BIT_CLEARING, 0x08))
        except errors.UnsupportedCommand as exc:
            LOG.info("Node %s: BMC keeps its boot flag timeout (%s)", task.node.uuid, exc)
        self._call(task, f"set boot device {device.value}", CMD_SET_BOOT_OPTIONS,
                   (BOOT_PARAM_FLAGS, flags, BOOT_SELECTORS[device] << 2, 0, 0, 0))


class IPMIPower(_IpmiInterface, base.PowerInterface):
    """Power via Chassis Control; reboot = off, re-assert boot device, on (Ironic)."""

    def get_power_state(self, task) -> PowerState:
        status = self._chassis_status(task)
        if status.faults:
            LOG.warning("Node %s: BMC reports chassis faults: %s", task.node.uuid,
                        ", ".join(status.faults))
        return PowerState.ON if status.power_on else PowerState.OFF

    def set_power_state(self, task, state, timeout=None) -> None:
        state = PowerState(state)
        if state in (PowerState.REBOOT, PowerState.SOFT_REBOOT):
            return self._reboot(task, soft=state is PowerState.SOFT_REBOOT, timeout=timeout)
        actions = {PowerState.ON: ("on", PowerState.ON), PowerState.OFF: ("off", PowerState.OFF),
                   PowerState.SOFT_OFF: ("soft off", PowerState.OFF)}
        if state not in actions:
            raise errors.InvalidParameter(f"ipmitool power cannot set {state.value!r}.")
        action, final = actions[state]
        self._control(task, action, final, timeout)

    def reboot(self, task, timeout=None) -> None:
        self._reboot(task, soft=False, timeout=timeout)

    def _reboot(self, task, soft: bool, timeout) -> None:
        was_on = self.get_power_state(task) is not PowerState.OFF
        if was_on:
            self._control(task, "soft off" if soft else "off", PowerState.OFF, timeout)
        self._reassert_boot_device(task, powered_off=was_on)
        self._control(task, "on", PowerState.ON, timeout)

    def _control(self, task, action: str, final: PowerState, timeout) -> None:
        LOG.info("Node %s: IPMI power %s", task.node.uuid, action)
        self._call(task, f"power {action}", CMD_CHASSIS_CONTROL, (CHASSIS_CONTROL[action],))
        if isinstance(task.management, IPMIManagement):
            task.management.power_changed()  # a boot (some BMCs: an off) takes the flags
        self._wait_for(task, final, timeout)

    def _wait_for(self, task, final: PowerState, timeout) -> None:
        limit = timeout or self.settings.ipmi.power_state_timeout
        deadline = time.monotonic() + limit
        while True:
            state = self.get_power_state(task)  # channel spacing paces this loop
            if state is final:
                return
            if time.monotonic() >= deadline:
                raise errors.DriverError(
                    f"Node {task.node.uuid} did not reach {final.value!r} within {limit:g} s "
                    f"after the IPMI request; the BMC still reports {state.value!r}.")
            time.sleep(0.1)

    def _reassert_boot_device(self, task, powered_off: bool) -> None:
        # A one-time boot device is used up by the boot it applied to; Ironic sets
        # it again before every reboot so the node keeps booting where we asked.
        request = (task.node.driver_internal_info or {}).get(BOOT_REQUEST_KEY)
        management = task.management
        if not powered_off and isinstance(management, IPMIManagement) and \
                management.fresh_request == request:
            return  # set by this task, no power on or off since: not used up yet
        if request and not request.get("persistent"):
            device = BootDevice(request["boot_device"])
            LOG.info("Node %s: re-asserting one-time boot device %s before power on",
                     task.node.uuid, device.value)
            self._set_boot_flags(task, device, persistent=False)


class IPMIManagement(_IpmiInterface, base.ManagementInterface):
    """Boot device via Set/Get System Boot Options, parameter 5 (boot flags)."""

    def __init__(self, context):
        super().__init__(context)
        #: The boot request this interface (one per task) sent to the BMC: a reboot
        #: of a node that stayed off since need not send it again.
        self.fresh_request: dict | None = None

    def power_changed(self) -> None:
        """A power request went to the BMC: the one-time flags this task set may be
        used up (a boot takes them; some BMCs drop them at power off)."""
        self.fresh_request = None

    def validate(self, task) -> None:
        parse_driver_info(task)
        boot_mode(task)

    def get_supported_boot_devices(self, task) -> list[BootDevice]:
        return list(BOOT_SELECTORS)

    def set_boot_device(self, task, device, persistent=False) -> None:
        requested = device
        try:
            device = BootDevice(device)
        except ValueError:
            device = None
        if device not in BOOT_SELECTORS:
            raise errors.InvalidParameter(
                f"Boot device {getattr(requested, 'value', requested)!r} is not supported "
                f"by the ipmitool management interface; supported: "
                f"{', '.join(d.value for d in BOOT_SELECTORS)}.")
        LOG.info("Node %s: IPMI boot device %s (persistent=%s)", task.node.uuid,
                 device.value, persistent)
        self._set_boot_flags(task, device, bool(persistent))
        info = dict(task.node.driver_internal_info or {})
        info[BOOT_REQUEST_KEY] = {"boot_device": device.value, "persistent": bool(persistent)}
        task.update(driver_internal_info=info)
        self.fresh_request = info[BOOT_REQUEST_KEY]

    def get_boot_device(self, task) -> dict:
        data = self._call(task, "get boot device", CMD_GET_BOOT_OPTIONS,
                          (BOOT_PARAM_FLAGS, 0, 0))
        return parse_boot_flags(data)


def parse_boot_flags(data: bytes) -> dict:
    """Get System Boot Options (parameter 5) response -> Ironic's boot device dict."""
    if len(data) < 4:
        raise errors.DriverError(f"BMC returned a short boot flags parameter: {data.hex()}")
    if data[1] & 0x80 or not data[2] & FLAG_VALID:  # parameter invalid, or no override
        return {"boot_device": None, "persistent": None}
    device = SELECTOR_DEVICES.get((data[3] >> 2) & 0x0F)
    return {"boot_device": device.value if device else None,
            "persistent": bool(data[2] & FLAG_PERSISTENT)}
