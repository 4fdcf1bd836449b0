"""Hardware types and the interface implementations each supports (Ironic's model).

A node names a hardware type (``driver``) and may choose an implementation per
interface; unset interfaces take the type's default (the first listed).
"""
from __future__ import annotations

from conductor import deploy, errors
from conductor.db.schema import INTERFACES
from conductor.drivers import fake, ipmi, pxe, redfish

#: hardware type -> interface kind -> supported implementations (default first).
HARDWARE_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "fake-hardware": {
        "bios": ("no-bios", "fake"), "boot": ("fake",), "console": ("no-console", "fake"),
        "deploy": ("fake",), "firmware": ("no-firmware", "fake"),
        "inspect": ("fake", "no-inspect"), "management": ("fake",),
        "network": ("noop", "flat"), "power": ("fake",), "raid": ("no-raid", "fake"),
        "rescue": ("no-rescue", "fake"), "storage": ("noop", "fake"),
        "vendor": ("no-vendor", "fake"),
    },
}
# Redfish: real power and management (sushy). Boot and deploy stay fake until the
# real boot (pxe/ipxe/virtual media) and deploy (agent) interfaces exist; every
# other interface is as in fake-hardware.
HARDWARE_TYPES["redfish"] = dict(
    HARDWARE_TYPES["fake-hardware"], power=("redfish", "fake"),
    management=("redfish", "fake"), boot=("fake",), deploy=("fake",))
# IPMI (pyghmi; Ironic's "ipmitool" names): real power and management, likewise
# with fake boot and deploy until the real boot and deploy interfaces land.
HARDWARE_TYPES["ipmi"] = dict(
    HARDWARE_TYPES["fake-hardware"], power=("ipmitool", "fake"),
    management=("ipmitool", "fake"), boot=("fake",), deploy=("fake",))
# Network boot (drivers/pxe.py: PXELINUX/GRUB over TFTP, iPXE over HTTP) is supported
# by every type; "fake" stays the default boot interface until the agent deploy lands.
for _table in HARDWARE_TYPES.values():
    _table["boot"] = _table["boot"] + tuple(b for b in ("pxe", "ipxe")
                                            if b not in _table["boot"])
# The agent-driven deploy (conductor/deploy.py) works with every type, fake power and
# management included; "fake" stays the default deploy interface for now.
for _table in HARDWARE_TYPES.values():
    _table["deploy"] = _table["deploy"] + ("direct",)

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
