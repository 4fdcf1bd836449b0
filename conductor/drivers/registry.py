"""Hardware types and the interface implementations each supports (Ironic's model).

A node names a hardware type (``driver``) and may choose an implementation per
interface; unset interfaces take the type's default (the first listed).
"""
from __future__ import annotations

from conductor import errors
from conductor.drivers.deploy import direct as deploy
from conductor.db.schema import INTERFACES
from conductor.drivers import fake, redfish
from conductor.drivers.ipmi import interfaces as ipmi
from conductor.drivers.boot import pxe

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

#: (kind, implementation name) -> factory of the interface object.
IMPLEMENTATIONS = {
    ("power", "fake"): fake.FakePower,
    ("management", "fake"): fake.FakeManagement,
    ("boot", "fake"): fake.FakeBoot,
    ("deploy", "fake"): fake.FakeDeploy,
    ("deploy", "direct"): lambda ctx: deploy.AgentDeploy(ctx),
    ("boot", "pxe"): pxe.PXEBoot,
    ("boot", "ipxe"): pxe.IPXEBoot,
    ("power", "redfish"): redfish.RedfishPower,
    ("management", "redfish"): redfish.RedfishManagement,
    ("power", "ipmitool"): ipmi.IPMIPower,
    ("management", "ipmitool"): ipmi.IPMIManagement,
}
for _kind in INTERFACES:
    IMPLEMENTATIONS.setdefault((_kind, "fake"), lambda ctx, k=_kind: fake.FakeSteps(k, ctx))
    for _name in ("no-" + _kind, "noop", "flat"):
        IMPLEMENTATIONS.setdefault((_kind, _name), lambda ctx, k=_kind: fake.NoSteps(k, ctx))


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


def build(kind: str, name: str, context=None):
    """Instantiate the implementation ``name`` of interface ``kind``."""
    try:
        return IMPLEMENTATIONS[(kind, name)](context)
    except KeyError:
        raise errors.InvalidParameter(f"Unknown {kind} interface {name!r}.") from None
