"""A test machine that boots the STOCK ironic-python-agent (PyPI, unmodified).

The machine is a network namespace with one NIC (the host side of a veth pair is
the provisioning network: metalcast and the image server listen there) and one
disk, a loop device. Its agent runs under ``stock_ipa/machine.sh``: its own PID
namespace and /proc, a private /dev that holds only that loop device, a private
/run, /proc/sysrq-trigger and /sys/firmware covered, and ``stock_ipa/bin`` first on
PATH, where ``poweroff``/``reboot`` stop the machine, ``hwclock`` says there is no
hardware clock and ``lsblk`` shows the machine's disk as a disk. Everything else is
IPA's own code with IPA's own hardware manager: what IPA decides about the machine it
decides from what the kernel and util-linux show it.

Two facts of IPA 13 shape the machine: it lists only NICs that are a device, a
bond or a VLAN (``eth0.7``: a dot and a number), so the veth carries a VLAN's name;
and it skips loop devices, hence the ``lsblk`` above.

The agent lives in its own venv made by ``scripts/install-stock-ipa``; a missing
venv or tool FAILS the test (never skips) with the command to run.
"""
from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from tests.functional.tools import require
from tests.waiting import wait_until
from virtlab.netlab import LabError, NetLab, read_text

IPA_VENV = Path(os.environ.get("METALCAST_IPA_VENV", "/opt/metalcast-ipa"))
SHIM_DIR = Path(__file__).parent / "stock_ipa"
INSTALL_HINT = "run scripts/install-stock-ipa as root (CI: scripts/test does)"
#: Tools the machine's agent runs (IPA 13 fails or hangs without them) and that the
#: test needs to build the machine.
TOOLS = ("ip", "losetup", "unshare", "mount", "udevadm", "lshw", "lsblk", "lscpu", "parted",
         "partprobe", "hexdump", "hdparm", "fuser", "shred", "sgdisk", "qemu-img")
#: The machine's NIC: IPA lists a veth only under a VLAN's name (see above).
GUEST_NIC = "eth0.7"
IPA_CONFIG = """\
[DEFAULT]
api_url = {api_url}
listen_port = {port}
enable_auto_tls = {auto_tls}
lookup_timeout = 60
lookup_interval = 1
# The root disk is the node's root device hint, known only after lookup: IPA's default
# rule (the smallest disk of at least 4 GiB) never finds the small test disk, and
# waiting for it costs 10 x 3 s at start.
disk_wait_attempts = 0
# A failed download or checksum is retried once, 1 s later (IPA's default: 9 retries,
# 10 s apart), so the bad-checksum test fails the node in seconds.
image_download_connection_retries = 1
image_download_connection_retry_interval = 1
debug = true
use_stderr = true
"""


def require_stock_ipa() -> Path:
    """The stock agent's executable; a clear failure when it cannot run here."""
    if os.geteuid() != 0:
        pytest.fail("the stock-IPA machine needs root (network namespace, loop device, "
                    "private /dev)")
    for tool in TOOLS:
        require(tool)
    agent = IPA_VENV / "bin" / "ironic-python-agent"
    if not agent.exists():
        pytest.fail(f"stock ironic-python-agent is not installed ({agent} missing): "
                    f"{INSTALL_HINT}")
    return agent


def _free_subnet() -> int:
    """A /24 of 10.213.0.0/16 that no interface of the host uses yet (third octet)."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                          timeout=30).stdout
    free = [n for n in range(1, 255) if f" 10.213.{n}." not in used]
    if not free:
        raise LabError("no free 10.213.N.0/24 for the stock-IPA machine")
    return random.choice(free)


class ProvisioningNet(NetLab):
    """The machine's namespace, joined to the root namespace by a veth pair."""

    def __init__(self):
        super().__init__(prefix="mcipa")
        subnet = _free_subnet()
        self.host_ip, self.guest_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
        self.host_nic = f"mcipa{subnet}h"

    def create(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the stock-IPA machine needs root")
        _ip("netns", "add", self.name)
        self._created = True
        try:
            _ip("link", "add", self.host_nic, "type", "veth", "peer", "name", GUEST_NIC,
                "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_nic)
            _ip("link", "set", self.host_nic, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip("-n", self.name, "addr", "add", f"{self.guest_ip}/24", "dev", GUEST_NIC)
            _ip("-n", self.name, "link", "set", GUEST_NIC, "up")
        except LabError:
            self.delete()
            raise

    def set_mac(self, address: str) -> None:
        """Give the machine's NIC another MAC (each test enrolls its own port)."""
        _ip("-n", self.name, "link", "set", GUEST_NIC, "address", address)

    def delete(self) -> None:
        super().delete()  # the guest end goes with the namespace, and its peer with it
        subprocess.run(["ip", "link", "delete", self.host_nic], capture_output=True,
                       timeout=30)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


class Disk:
    """A file attached to a loop device: the machine's only disk."""

    def __init__(self, path: Path, size: int):
        self.path = path
        with open(path, "wb") as f:
            f.write(b"\xee" * size)
        self.device = subprocess.run([require("losetup"), "--find", "--show", str(path)],
                                     capture_output=True, text=True, timeout=30,
                                     check=True).stdout.strip()

    def read(self) -> bytes:
        with open(self.device, "rb") as f:
            return f.read()

    def detach(self) -> None:
        subprocess.run([require("losetup"), "-d", self.device], capture_output=True,
                       timeout=30)


class StockAgent:
    """One boot of the machine: the stock IPA process in the namespace."""

    def __init__(self, agent: Path, net: ProvisioningNet, disk: Disk, api_url: str,
                 folder: Path, auto_tls: bool = True, port: int = 9999):
        self.net, self.folder = net, folder
        self.log_path, self.power_log = folder / "ipa.log", folder / "power.log"
        config = folder / "ipa.conf"
        config.write_text(IPA_CONFIG.format(api_url=api_url, port=port,
                                            auto_tls=str(auto_tls).lower()))
        (folder / "tmp").mkdir(exist_ok=True)
        self.power_log.write_text("")
        env = {"PATH": f"{SHIM_DIR / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
               "TMPDIR": str(folder / "tmp"), "HOME": str(folder), "LANG": "C.UTF-8",
               "METALCAST_MACHINE_POWER_LOG": str(self.power_log)}
        cmd = [require("unshare"), "--mount", "--pid", "--fork", "--kill-child",
               "--mount-proc", "--propagation", "private",
               str(SHIM_DIR / "machine.sh"), disk.device, str(self.power_log), str(agent),
               "--config-file", str(config)]
        self.stopped = False
        with open(self.log_path, "ab") as log:
            self.process = net.start(cmd, stdout=log, env=env)

    def log(self) -> str:
        return read_text(self.log_path)

    def powered_off(self) -> list[str]:
        """What the agent did to the machine's power: the shims' lines, and what it
        wrote to /proc/sysrq-trigger when they failed."""
        return read_text(self.power_log).splitlines()

    def check_alive(self) -> None:
        """Fail at once when the machine is off but nobody pressed its power button
        (the agent or machine.sh died): no state will change any more."""
        if self.process.poll() is not None and not self.powered_off() and not self.stopped:
            raise AssertionError(f"the stock-IPA machine died (exit status "
                                 f"{self.process.returncode}); log tail:\n{self.log()[-6000:]}")

    def wait_exit(self, timeout: float) -> int:
        """The machine's exit status once it is off (its agent ended)."""
        wait_until(lambda: self.process.poll() is not None, timeout,
                   message=lambda: f"the stock-IPA machine to power off; log tail:\n"
                                   f"{self.log()[-3000:]}")
        return self.process.returncode

    def stop(self) -> None:
        """The machine loses power: the agent is gone, whatever it was doing."""
        self.stopped = True
        self.net.stop(self.process)
