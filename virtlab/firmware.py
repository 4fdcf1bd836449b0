"""The "firmware" of a simulated machine: what happens between power-on and an OS.

``boot(device, ...)`` follows the boot order real firmware would: the device the
BMC's boot override asked for first, then the other one (a PXE boot that finds
no node config ``exit``s to the next device, exactly as metalcast's generic
``boot.ipxe`` intends; an empty disk falls through to the network):

* ``pxe``: fetch the DHCP boot file (``undionly.kpxe``) and the generic iPXE
  script from metalcast's TFTP server, run the script (virtlab.ipxe: chain to
  ``ipxe/<mac>.ipxe`` over HTTP, download kernel and initrd) -> "start this
  kernel with this command line";
* ``disk``: look for an OS on the disk image file (virtlab.disk) -> "booted".

It returns an :class:`Outcome`; starting the agent process is the machine's job.
"""
from __future__ import annotations

import dataclasses
import logging

from virtlab import disk, ipxe

LOG = logging.getLogger(__name__)

#: BMC boot device -> boot order tried (bios: the setup screen, nothing boots).
BOOT_ORDER = {"pxe": ("pxe", "disk"), "disk": ("disk", "pxe"), "none": ("disk", "pxe"),
              "cdrom": ("disk", "pxe"), "floppy": ("disk", "pxe"), "safe": ("disk", "pxe"),
              "bios": ()}


@dataclasses.dataclass
class PxeConfig:
    """What DHCP would tell the machine: TFTP server, boot loader, iPXE script."""

    tftp: str                       # host:port of the TFTP server
    loader: str = "undionly.kpxe"   # fetched first to check it is served ("" skips)
    script: str = "boot.ipxe"       # TFTP path or full URL of the first iPXE script
    sleep_scale: float = 0.01       # iPXE ``sleep N`` lasts N x this

    def script_url(self) -> str:
        return self.script if "://" in self.script else f"tftp://{self.tftp}/{self.script}"


@dataclasses.dataclass
class Outcome:
    """How one boot ended."""

    kind: str                                   # agent | disk | no-boot | poweroff
    detail: str
    os: disk.BootedOs | None = None
    kernel: ipxe.Download | None = None
    cmdline: str = ""
    initrds: list[ipxe.Download] = dataclasses.field(default_factory=list)
    events: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def boot(device: str, mac: str, disk_path: str, pxe: PxeConfig | None) -> Outcome:
    """Try each device of the boot order; the first that boots wins."""
    events: list[tuple[str, str]] = []
    for step in BOOT_ORDER.get(device, ("disk", "pxe")):
        outcome = (_pxe if step == "pxe" else _disk)(mac, disk_path, pxe, events)
        if outcome is not None:
            outcome.events = events
            return outcome
    return Outcome("no-boot", "no bootable device", events=events)


def _disk(mac: str, disk_path: str, pxe: PxeConfig | None, events) -> Outcome | None:
    try:
        found = disk.find_os(disk_path)
    except (disk.DiskError, OSError) as exc:
        events.append(("disk", f"cannot read the disk: {exc}"))
        return None
    if found is None:
        events.append(("disk", "no operating system on the disk"))
        return None
    detail = f"booted {found.pretty_name} (partition {found.partition}, " \
             f"label {found.fs_label!r})"
    events.append(("disk", detail))
    return Outcome("disk", detail, os=found)


def _pxe(mac: str, disk_path: str, pxe: PxeConfig | None, events) -> Outcome | None:
    if pxe is None:
        events.append(("pxe", "no PXE server configured (no DHCP offer)"))
        return None
    try:
        if pxe.loader:
            loader = ipxe.fetch(f"tftp://{pxe.tftp}/{pxe.loader}")
            events.append(("pxe", f"loaded {pxe.loader} over TFTP ({len(loader)} bytes)"))
        result = ipxe.Script([mac], sleep_scale=pxe.sleep_scale).run(pxe.script_url())
    except ipxe.BootError as exc:
        events.append(("pxe", f"network boot failed: {exc}"))
        return None
    for url in result.scripts:
        events.append(("pxe", f"ran iPXE script {url}"))
    for message in result.messages:
        events.append(("pxe", f"iPXE: {message}"))
    if result.action == "poweroff":
        return Outcome("poweroff", "iPXE script powered the machine off")
    if result.action != "boot":
        events.append(("pxe", "iPXE script exited: next boot device"))
        return None
    assert result.kernel is not None  # action "boot" is set by the boot command only
    detail = f"kernel {result.kernel.url} ({result.kernel.size} bytes) " + \
             " ".join(f"initrd {i.url} ({i.size} bytes)" for i in result.initrds)
    events.append(("pxe", detail))
    return Outcome("agent", detail, kernel=result.kernel, cmdline=result.cmdline,
                   initrds=result.initrds)
