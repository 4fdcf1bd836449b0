"""One diskless QEMU machine that network-boots in a NetLab, and what its console says.

QEMU runs under TCG (KVM here is kvm_pvm, which hangs ordinary guests), with
``-boot n`` so SeaBIOS runs the iPXE ROM of the virtio NIC, ``-nographic`` so
SeaBIOS/iPXE output reaches the serial console too (not only the kernel's), and
``-no-reboot`` so the guest's ``poweroff -f`` (or a panic with ``panic=-1``) ends
QEMU. ``timeout`` bounds every VM: a hung guest would burn a core forever.

``boot_timeline`` reads the stages back from the stamped console lines: iPXE
prints every download as "URL... ok" once it is complete, and the lab's initramfs
(virtlab/lookup_init.sh) prints "METALCAST-GUEST ..." marker lines.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import time

from virtlab.netlab import NetLab, TimedLog

QEMU = "qemu-system-x86_64"
VM_TIMEOUT = 120  # seconds; a PXE boot to the lookup takes ~11-14 s under TCG

#: "URL... ok" once a download is complete; the "k" of the last one may be lost
#: when the kernel resets the UART (errors read "URL... No such file ..." etc.).
FETCH = re.compile(r"((?:tftp|http)://\S+?)\.\.\. o(?:k|(?![a-z]))")
LOOKUP = re.compile(r"METALCAST-GUEST lookup status=(\w+) mac=(\S+)")
#: (stage, console pattern) for the moments that are one line each.
MARKERS = (
    ("ipxe_start", r"iPXE initialising devices"),
    ("dhcp_start", r"net0: \S+ using .* \(open\)"),
    ("dhcp_done", r"Configuring \(net0 .*\)\.* ok"),
    ("kernel_init", r"METALCAST-GUEST init "),
    ("guest_dhcp", r"METALCAST-GUEST dhcp "),
    ("lookup_sent", r"METALCAST-GUEST lookup url="),
    ("lookup_answered", LOOKUP.pattern),
    ("power_down", r"reboot: Power down"),
)


#: SeaBIOS gave up on every boot device: the VM would idle until its timeout.
NO_BOOT = r"No bootable device"
NO_BOOT_EXIT = 200  # what wait() returns for such a VM (QEMU exits 0 on SIGTERM)


@dataclasses.dataclass
class BootedVM:
    """A running (or finished) QEMU and its stamped serial console."""

    process: subprocess.Popen
    console: TimedLog
    started: float  # time.monotonic() just before QEMU was started
    mac: str
    lab: NetLab | None = None

    def wait(self, timeout: float = VM_TIMEOUT + 10) -> int:
        """QEMU's exit code (0: the guest powered off; 124: ``timeout`` killed it).
        A VM that found nothing to boot is stopped at once rather than left to idle
        until its timeout, and gets NO_BOOT_EXIT."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            if self.lab is not None and self.console.first(NO_BOOT):
                self.lab.stop(self.process)
                return NO_BOOT_EXIT
            try:
                self.process.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
        return self.process.wait(max(0.0, deadline - time.monotonic()))

    def lookup(self) -> tuple[str, str] | None:
        """(HTTP status, MAC) the guest printed after its /v1/lookup, or None."""
        found = self.console.first(LOOKUP)
        return (found[1].group(1), found[1].group(2)) if found else None


def qemu_command(mac: str, tap: str = NetLab.tap, timeout: int = VM_TIMEOUT,
                 memory_mib: int = 512) -> list[str]:
    """The PXE-booting QEMU command line (wrapped in ``timeout``)."""
    if shutil.which(QEMU) is None:
        raise RuntimeError(f"{QEMU} not found: install the Debian packages "
                           "qemu-system-x86 and ipxe-qemu")
    return ["timeout", "--kill-after=5", str(timeout), QEMU, "-accel", "tcg",
            "-m", str(memory_mib), "-nographic", "-no-reboot", "-boot", "n",
            "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]


def power_on(lab: NetLab, mac: str, echo=None, **kwargs) -> BootedVM:
    """Start the VM on the lab's tap; its console is read (and stamped) from now on."""
    command = qemu_command(mac, **kwargs)
    started = time.monotonic()
    process = lab.start(command)
    return BootedVM(process, TimedLog(process.stdout, echo=echo), started, mac, lab)


def boot_timeline(vm: BootedVM) -> dict[str, float]:
    """Stage -> seconds since QEMU start, for every stage the console showed.

    Downloads are named by order: first the boot file DHCP named (boot.ipxe, over
    TFTP or HTTP), then any chained ``.ipxe`` script is the node script, and the
    other two are the kernel and the initrd (the order the node script loads them).
    """
    stages: dict[str, float] = {}
    for name, pattern in MARKERS:
        found = vm.console.first(pattern)
        if found:
            stages[name] = found[0] - vm.started
    images = iter(("kernel_fetched", "initrd_fetched"))
    for index, (stamp, match) in enumerate(vm.console.matches(FETCH)):
        if index == 0:
            name = "boot_file"
        elif match.group(1).endswith(".ipxe"):
            name = "node_script"
        else:
            name = next(images, "other_fetch")
        stages.setdefault(name, stamp - vm.started)
    return stages


def fetched_urls(vm: BootedVM) -> list[str]:
    """Every URL iPXE downloaded successfully, in order."""
    return [match.group(1) for _, match in vm.console.matches(FETCH)]
