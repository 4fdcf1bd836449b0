"""The interfaces a node is built from. Each is small: a few operations plus validate.

Implementations raise ``conductor.errors`` exceptions only; library errors are
translated inside the implementation that calls the library.
"""
from __future__ import annotations

import abc
import enum
from typing import TYPE_CHECKING

from conductor import errors

if TYPE_CHECKING:
    from conductor.drivers.context import DriverContext


class PowerState(str, enum.Enum):
    """Power states as Ironic names them."""

    ON = "power on"                  #: the machine runs
    OFF = "power off"                #: the machine is off
    REBOOT = "rebooting"             #: hard reset requested
    SOFT_OFF = "soft power off"      #: ACPI shutdown requested
    SOFT_REBOOT = "soft rebooting"   #: ACPI reboot requested
    ERROR = "error"                  #: the BMC reported something unusable


class BootDevice(str, enum.Enum):
    """Boot devices a management interface can select."""

    PXE = "pxe"
    DISK = "disk"
    CDROM = "cdrom"
    BIOS = "bios"


class Interface(abc.ABC):  # noqa: B024 - abstract through its subclasses' methods
    """Base of every interface: ``validate`` raises Invalid with the reason."""

    kind: str = ""

    def __init__(self, context: DriverContext):
        #: The process's DriverContext: shared sessions, limits, cipher, services.
        self.context = context

    def validate(self, task) -> None:  # noqa: B027 - most interfaces need nothing
        """Check the node's configuration for this interface."""


class PowerInterface(Interface):
    kind = "power"

    @abc.abstractmethod
    def get_power_state(self, task) -> PowerState: ...

    @abc.abstractmethod
    def set_power_state(self, task, state: PowerState, timeout: int | None = None) -> None: ...

    @abc.abstractmethod
    def reboot(self, task, timeout: int | None = None) -> None: ...


class ManagementInterface(Interface):
    kind = "management"

    @abc.abstractmethod
    def get_supported_boot_devices(self, task) -> list[BootDevice]: ...

    @abc.abstractmethod
    def set_boot_device(self, task, device: BootDevice, persistent: bool = False) -> None: ...

    @abc.abstractmethod
    def get_boot_device(self, task) -> dict: ...


class BootInterface(Interface):
    kind = "boot"

    @abc.abstractmethod
    def prepare_ramdisk(self, task) -> None:
        """Make the node network-boot into the agent ramdisk."""

    @abc.abstractmethod
    def clean_up_ramdisk(self, task) -> None: ...

    @abc.abstractmethod
    def prepare_instance(self, task) -> None:
        """Make the node boot the deployed instance."""

    @abc.abstractmethod
    def clean_up_instance(self, task) -> None: ...

    def take_over(self, task) -> None:
        """This conductor took the node over from a dead one (Ironic's deploy
        ``take_over``): make here the boot configuration its state calls for. Default:
        an active node's, as after a deploy."""
        if task.node.provision_state == "active":
            self.prepare_instance(task)

    def ports_changed(self, task, old_macs) -> None:  # nothing keyed by MAC
        """The node's ports were deleted, re-addressed, moved or had pxe_enabled changed;
        ``old_macs`` are the MACs it had before. Interfaces that key boot files or DHCP
        entries by MAC drop those of MACs it lost (conductor/service/ports.py)."""


class DeployInterface(Interface):
    """Writes and removes instances. ``deploy``/``clean`` return "wait" when an
    agent will call back, or None when the work is already done."""

    kind = "deploy"

    @abc.abstractmethod
    def deploy(self, task) -> str | None: ...

    @abc.abstractmethod
    def tear_down(self, task) -> None: ...

    @abc.abstractmethod
    def clean(self, task, steps: list[dict] | None) -> str | None: ...

    def heartbeat(self, task, finish_deploy) -> None:  # no agent, no steps: nothing to do
        """An agent called back; an agent-driven interface continues its deploy or clean
        steps here and calls ``finish_deploy(task)`` once the instance is written."""


class StepsInterface(Interface):
    """Interfaces whose only job here is to validate and run one action
    (inspect, rescue, bios, console, firmware, network, raid, storage, vendor)."""

    def run(self, task, action: str) -> str | None:
        """Run ``action`` (e.g. "inspect", "rescue", "unrescue"); "wait" or None."""
        raise errors.InvalidParameter(
            f"The {self.kind} interface {task.interface_name(self.kind)!r} of node "
            f"{task.node.uuid} does not support {action!r}.")
