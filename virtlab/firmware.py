"""The "firmware" of a simulated machine: what happens between power-on and an OS.

``boot(device, ...)`` follows the boot order real firmware would: the device the
BMC's boot override asked for first, then the other one (a PXE boot that finds
no node config ``exit``s to the next device, exactly as metalcast's generic
``boot.ipxe`` intends; an empty disk falls through to the network):

* ``pxe``: fetch the DHCP boot file (``undionly.kpxe``) and the generic iPXE
  script from metalcast's TFTP server, run the script (virtlab.ipxe: chain to
  ``ipxe/<mac>.ipxe`` over HTTP, download kernel and initrd) -> "start this
  kernel with this command line";
* ``disk``: look for an OS on the disk image file (virtlab.disk) -> "booted"; on an
  A/B disk (CoreOS /usr slots) the slot is chosen as GRUB's gptprio does, from the GPT
  attribute bits, one try consumed per boot (:func:`_gptprio`).

It returns an :class:`Outcome`; starting the agent process is the machine's job.
"""
from __future__ import annotations

import dataclasses
import logging

from ramdisk_agent.host import slots
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
        ab = disk.ab_slots(disk_path)
        if ab is not None:
            return _gptprio(ab, disk_path, events)
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


def _gptprio(ab: slots.SlotDisk, disk_path: str, events) -> Outcome | None:
    """GRUB's ``gptprio.next`` on an A/B disk: the highest-priority /usr slot that is
    proven or has a try left, one try consumed and written back before the boot (so a
    slot that never gets marked good falls back on the boot after), then that slot's
    OS; the command line names the slot as Flatcar's does (``mount.usr=PARTUUID=``)."""
    choice = ab.boot_next()
    if choice is None:
        events.append(("disk", "gptprio: no /usr slot is bootable (no priority, or no "
                               "tries left and never marked successful)"))
        return None
    bits = choice.before
    events.append(("disk", f"gptprio: chose partition {choice.number} (priority "
                           f"{bits.priority}, tries {bits.tries}->{choice.after.tries}, "
                           f"successful {int(bits.successful)})"))
    found = disk.find_os(disk_path, only=choice.number)
    if found is None:
        events.append(("disk", f"partition {choice.number} holds no operating system"))
        return None
    guid = next(s.guid for s in ab.slots() if s.number == choice.number)
    detail = f"booted {found.pretty_name} from slot partition {choice.number}"
    events.append(("disk", detail))
    return Outcome("disk", detail, os=found, cmdline=f"mount.usr=PARTUUID={guid}")


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
