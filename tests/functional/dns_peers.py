"""A real BIND 9 ``named`` for the DNS tests, on 127.0.0.1, stopped by PID.

``Named`` writes a config in its own directory: a TSIG key made by ``tsig-keygen``,
an updatable forward zone ``lab.test``, a zone ``locked.test`` that allows no
updates (for REFUSED), and updatable reverse zones ``77.10.in-addr.arpa`` (a /16,
so the zone cut is not a /24 guess), ``78.10.in-addr.arpa`` (the DHCP lab's network)
and ``7.7.d.f.ip6.arpa`` (fd77::/16). ``dig``
reads back what BIND serves, independently of dnspython.
"""
from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.functional.tools import require
from tests.waiting import wait_until
from virtlab.process import stop

ZONE = "lab.test"
LOCKED_ZONE = "locked.test"
REVERSE_V4 = "77.10.in-addr.arpa"
REVERSE_DHCP = "78.10.in-addr.arpa"   # dhcp_peers' lab network, 10.78.0.0/24
REVERSE_V6 = "7.7.d.f.ip6.arpa"
KEY_NAME = "metalcast-test"
START_TIMEOUT = 30

SOA = """$TTL 300
@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60
@ IN NS ns.{zone}.
"""
CONFIG = """include "{dir}/key.conf";
options {{
    directory "{dir}";
    pid-file "{dir}/named.pid";
    session-keyfile "{dir}/session.key";
    managed-keys-directory "{dir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
{zones}
"""
ZONE_CONF = 'zone "{zone}" {{ type primary; file "{zone}.db"; {update} }};\n'


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (named serves both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def tsig_keygen(name: str, algorithm: str = "hmac-sha256") -> tuple[str, str]:
    """(key clause for named.conf, base64 secret) from the real tsig-keygen."""
    clause = subprocess.run([require("tsig-keygen"), "-a", algorithm, name],
                            capture_output=True, text=True, check=True, timeout=30).stdout
    return clause, re.search(r'secret "([^"]+)"', clause).group(1)


class Named:
    """One ``named -g`` (foreground, logs to stderr) serving the test zones."""

    def __init__(self, workdir: Path, port: int | None = None):
        require("named")
        require("dig")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        key_clause, self.secret = tsig_keygen(KEY_NAME)
        (workdir / "key.conf").write_text(key_clause)
        zones = ""
        for zone, updatable in ((ZONE, True), (LOCKED_ZONE, False), (REVERSE_V4, True),
                                (REVERSE_DHCP, True), (REVERSE_V6, True)):
            text = SOA.format(zone=ZONE) if zone.endswith(".arpa") else \
                SOA.format(zone=zone) + "ns IN A 127.0.0.1\n"  # named wants the NS's glue
            (workdir / f"{zone}.db").write_text(text)
            update = f'allow-update {{ key "{KEY_NAME}"; }};' if updatable else ""
            zones += ZONE_CONF.format(zone=zone, update=update)
        (workdir / "named.conf").write_text(CONFIG.format(dir=workdir, port=self.port,
                                                          zones=zones))
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start named (again, on the same port and zones) and wait until it answers."""
        log = open(self.workdir / "named.log", "a")
        self.process = subprocess.Popen(
            [require("named"), "-g", "-c", str(self.workdir / "named.conf"),
             "-p", str(self.port)], cwd=self.workdir, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        try:
            if wait_until(lambda: "exited" if self.process.poll() is not None
                          else self.dig(ZONE, "SOA", check=False), START_TIMEOUT, 0.1,
                          "named to answer") != "exited":
                return
        except AssertionError:
            pass
        self.stop()
        pytest.fail(f"named did not answer on 127.0.0.1:{self.port}; log:\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process.pid, self.process)
            self.process = None

    def log(self) -> str:
        return (self.workdir / "named.log").read_text(errors="replace")

    def dig(self, *args: str, check: bool = True) -> list[str]:
        """``dig +short`` against this named; the answer lines, sorted."""
        result = subprocess.run([require("dig"), "@127.0.0.1", "-p", str(self.port),
                                 "+short", "+tries=1", "+time=2", *args],
                                capture_output=True, text=True, timeout=30)
        if check:
            assert result.returncode == 0, f"dig {' '.join(args)}: {result.stdout}" \
                                           f"{result.stderr}"
        return sorted(line for line in result.stdout.splitlines() if line.strip()) \
            if result.returncode == 0 else []

    def records(self, fqdn: str, *addresses: str) -> dict[str, list[str]]:
        """What BIND serves for ``fqdn`` (A, AAAA) and each address's PTR."""
        found = {"A": self.dig(fqdn, "A"), "AAAA": self.dig(fqdn, "AAAA")}
        for address in addresses:
            found[address] = self.dig("-x", address)
        return found

    def settings(self, **overrides) -> dict[str, object]:
        """A ``[dns]`` section pointing at this named."""
        section = {"server": "127.0.0.1", "port": self.port, "zone": ZONE,
                   "tsig_key_name": KEY_NAME, "tsig_secret": self.secret, "timeout": 2}
        section.update(overrides)
        return section
