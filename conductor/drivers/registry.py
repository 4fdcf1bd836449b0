"""Hardware types and the interface implementations each supports (Ironic's model).

A node names a hardware type (``driver``) and may choose an implementation per
interface; unset interfaces take the type's default (the first listed).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from conductor import errors
from conductor.db.schema import INTERFACES
from conductor.drivers import fake, redfish
from conductor.drivers.boot import pxe
from conductor.drivers.context import DriverContext
from conductor.drivers.deploy import direct
from conductor.drivers.ipmi import interfaces as ipmi

#: hardware type -> interface kind -> supported implementations (default first).
HARDWARE_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "fake-hardware": {
        "bios": ("no-bios", "fake"), "boot": ("fake", "pxe", "ipxe"),
        "console": ("no-console", "fake"), "deploy": ("fake", "direct"),
        "firmware": ("no-firmware", "fake"),
        "inspect": ("fake", "no-inspect"), "management": ("fake",),
        "network": ("noop", "flat"), "power": ("fake",), "raid": ("no-raid", "fake"),
        "rescue": ("no-rescue", "fake"), "storage": ("noop", "fake"),
        "vendor": ("no-vendor", "fake"),
    },
}
# Network boot (drivers/pxe.py: PXELINUX/GRUB over TFTP, iPXE over HTTP) and the
# agent-driven deploy (conductor/drivers/deploy/direct.py) work with every type, fake power and
# management included. As in Ironic, the real types default to ipxe + direct;
# fake-hardware keeps its fakes first.
_REAL = dict(HARDWARE_TYPES["fake-hardware"], boot=("ipxe", "pxe", "fake"),
             deploy=("direct", "fake"))
# Redfish: power and management through sushy (conductor/drivers/redfish/).
HARDWARE_TYPES["redfish"] = dict(_REAL, power=("redfish", "fake"),
                                 management=("redfish", "fake"))
# IPMI: power and management through pyghmi, with Ironic's "ipmitool" names.
HARDWARE_TYPES["ipmi"] = dict(_REAL, power=("ipmitool", "fake"),
                              management=("ipmitool", "fake"))

#: Builds one interface object for a task from the process's DriverContext.
Factory = Callable[[DriverContext], object]


def default_implementations() -> dict[tuple[str, str], Factory]:
    """(kind, implementation name) -> factory: every implementation metalcast ships."""
    table: dict[tuple[str, str], Factory] = {
        ("power", "fake"): fake.FakePower,
        ("management", "fake"): fake.FakeManagement,
        ("boot", "fake"): fake.FakeBoot,
        ("deploy", "fake"): fake.FakeDeploy,
        ("deploy", "direct"): direct.AgentDeploy,
        ("boot", "pxe"): pxe.PXEBoot,
        ("boot", "ipxe"): pxe.IPXEBoot,
        ("power", "redfish"): redfish.RedfishPower,
        ("management", "redfish"): redfish.RedfishManagement,
        ("power", "ipmitool"): ipmi.IPMIPower,
        ("management", "ipmitool"): ipmi.IPMIManagement,
    }
    for kind in INTERFACES:
        table.setdefault((kind, "fake"), functools.partial(fake.FakeSteps, kind))
        for name in ("no-" + kind, "noop", "flat"):
            table.setdefault((kind, name), functools.partial(fake.NoSteps, kind))
    return table


class DriverRegistry:
    """Builds a node's interface objects, all sharing one DriverContext.

    The appliance makes one with :func:`default_implementations`; a test that
    needs a recording or simulated interface passes its own factories in
    ``overrides`` instead of patching a module table.
    """

    def __init__(self, context: DriverContext,
                 overrides: Mapping[tuple[str, str], Factory] | None = None):
        self.context = context
        self._factories = default_implementations()
        self._factories.update(overrides or {})

    def build(self, kind: str, name: str) -> object:
        """Instantiate the implementation ``name`` of interface ``kind``."""
        try:
            factory = self._factories[(kind, name)]
        except KeyError:
            raise errors.InvalidParameter(f"Unknown {kind} interface {name!r}.") from None
        return factory(self.context)


def check_driver(driver: str, enabled: list[str]) -> dict[str, tuple[str, ...]]:
    """The interface table of ``driver``, or a 400 that names the enabled types."""
    if driver not in HARDWARE_TYPES or driver not in enabled:
        raise errors.InvalidParameter(
            f"No valid host was found. Reason: No conductor service registered which "
            f"supports driver {driver}. Enabled hardware types: {', '.join(enabled)}.")
    return HARDWARE_TYPES[driver]


def resolve_interfaces(driver: str, chosen: dict[str, str | None],
                       enabled: list[str]) -> dict[str, str]:
    """Fill every ``<kind>_interface`` for a node, validating explicit choices."""
    table = check_driver(driver, enabled)
    result = {}
    for kind in INTERFACES:
        name = chosen.get(f"{kind}_interface")
        if name is None:
            name = table[kind][0]
        elif name not in table[kind]:
            raise errors.InvalidParameter(
                f"Could not find a suitable {kind} interface {name!r} for hardware type "
                f"{driver}; supported: {', '.join(table[kind])}.")
        result[f"{kind}_interface"] = name
    return result
