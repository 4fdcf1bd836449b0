"""Real DHCP peers for the functional tests: two network namespaces and busybox udhcpc.

Topology, built per lab and deleted afterwards (as root; nothing touches the host
network)::

    netns mcd<id>s: mcs0 10.78.0.1/24 + fd78::1/64  <-veth->  mcc0 in netns mcd<id>c

dnsmasq runs in the server namespace, ``busybox udhcpc`` in the client namespace
with the client's MAC set on mcc0 and DHCP options added with ``-x`` (busybox 1.35
sends an unknown option number's value as hex bytes: ``-x 93:0007`` is client arch
7, ``-x 77:69505845`` the user class "iPXE"). Its event script dumps the lease
environment (``boot_file``, ``siaddr``, ``ip``) into a file the test reads.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.functional.tools import require, require_all
from tests.waiting import wait_until
from virtlab.process import stop

#: what a DhcpLab runs (tests.functional.tools.TOOLS names their packages).
LAB_TOOLS = ("dnsmasq", "busybox", "ip")
SERVER_IP, PREFIX, SERVER_IP6 = "10.78.0.1", 24, "fd78::1"
RANGE = "10.78.0.100,10.78.0.150,255.255.255.0,10m"
UDHCPC_SCRIPT = '#!/bin/sh\nenv > "$DUMP.$1"\n'


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the DHCP tests build network namespaces and bind port 67: run them "
                    "as root")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclasses.dataclass
class DhcpLab:
    """Server and client namespaces joined by a veth pair; ``close()`` deletes both."""

    work: Path
    server_ns: str = ""
    client_ns: str = ""

    def __post_init__(self):
        require_all(LAB_TOOLS)
        require_root()
        ident = uuid.uuid4().hex[:8]
        self.server_ns, self.client_ns = f"mcd{ident}s", f"mcd{ident}c"
        self.script = self.work / "udhcpc.script"
        self.script.write_text(UDHCPC_SCRIPT)
        self.script.chmod(0o755)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        s, c = self.server_ns, self.client_ns
        _ip("netns", "add", s)
        _ip("netns", "add", c)
        _ip("-n", s, "link", "add", "mcs0", "type", "veth", "peer", "name", "mcc0", "netns", c)
        _ip("-n", s, "addr", "add", f"{SERVER_IP}/{PREFIX}", "dev", "mcs0")
        _ip("-n", s, "addr", "add", f"{SERVER_IP6}/64", "dev", "mcs0", "nodad")
        for ns, dev in ((s, "lo"), (s, "mcs0"), (c, "lo"), (c, "mcc0")):
            _ip("-n", ns, "link", "set", dev, "up")

    def close(self) -> None:
        for ns in (self.client_ns, self.server_ns):
            if ns:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def dhcp(self, mac: str, *options: str, tries: int = 8) -> dict[str, str] | None:
        """One DHCP exchange from ``mac``: the lease's environment, or None (no lease).

        A new lease takes ~3 s (dnsmasq pings the address before offering it), a
        known one ~0.1 s; a MAC dnsmasq ignores costs ``tries`` seconds.
        """
        _ip("-n", self.client_ns, "link", "set", "mcc0", "address", mac)
        dump = self.work / f"lease-{uuid.uuid4().hex[:8]}"
        extra = [arg for option in options for arg in ("-x", option)]
        cmd = ["ip", "netns", "exec", self.client_ns, "env", "-i", f"DUMP={dump}",
               "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "busybox", "udhcpc", "-i", "mcc0",
               "-n", "-q", "-t", str(tries), "-T", "1", "-s", str(self.script), *extra]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=tries + 20)
        bound = Path(f"{dump}.bound")
        if result.returncode != 0 or not bound.exists():
            return None
        lines = bound.read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def client_ipv6(self) -> list[str]:
        """Global IPv6 addresses mcc0 configured (SLAAC from a router advertisement)."""
        result = subprocess.run(["ip", "-n", self.client_ns, "-6", "-o", "addr", "show",
                                 "dev", "mcc0", "scope", "global"],
                                capture_output=True, text=True, timeout=30)
        return [line.split()[3] for line in result.stdout.splitlines()]


def wait_for(predicate, timeout: float, what: str):
    return wait_until(predicate, timeout, 0.1, what)


class ExternalDnsmasq:
    """A dnsmasq the test runs itself (the "existing dnsmasq" of ``hostsdir`` mode)."""

    def __init__(self, lab: DhcpLab, work: Path, conf_file: Path):
        self.pidfile = work / "external.pid"
        self.log = work / "external.log"
        cmd = ["ip", "netns", "exec", lab.server_ns, require("dnsmasq"),
               "--keep-in-foreground", f"--conf-file={conf_file}", "--port=0",
               "--interface=mcs0", "--bind-interfaces", "--user=root",
               f"--dhcp-range={RANGE}", f"--dhcp-leasefile={work / 'external.leases'}",
               f"--pid-file={self.pidfile}", "--log-facility=-", "--no-ping"]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._ready(), 10, f"dnsmasq to start ({self.log})")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"dnsmasq exited: {self.log.read_text()}")
        return self.pidfile.exists() and self.pidfile.read_text().strip() == \
            str(self.process.pid)

    def close(self) -> None:
        stop(self.process.pid, self.process)
