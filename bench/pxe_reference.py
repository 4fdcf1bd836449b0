"""The in-run reference for bench/pxe_boot.py: the same VM, kernel and initramfs,
booted by stock servers that metalcast does not involve.

* dnsmasq, DHCP only, with router advertisements (test-lab.md section 2's command);
* in.tftpd (tftpd-hpa) serving a static ``boot.ipxe`` that loads kernel + initrd;
* ``python3 -m http.server`` serving the kernel and the initrd. It answers the
  guest's ``GET /v1/lookup`` with 404 (no such file) and logs the request line,
  which is exactly the "lookup request received" moment the benchmark needs.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from virtlab.netlab import NetLab, TimedLog

HTTP_PORT = 8080

#: test-lab.md's static boot.ipxe, with the parameters metalcast's node script passes.
BOOT_SCRIPT = ("#!ipxe\n"
               "kernel http://{ip}:{port}/vmlinuz console=ttyS0 panic=-1 quiet "
               "ipa-api-url=http://{ip}:{port} BOOTIF=01-${{mac:hexhyp}}\n"
               "initrd http://{ip}:{port}/initrd.img\n"
               "boot\n")


def dnsmasq_command(lab: NetLab, work: Path, boot_file: str) -> list[str]:
    """DHCP only (``--port=0``), bound to the lab bridge, with RA (no iPXE IPv6 stall)."""
    return ["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--conf-file=/dev/null",
            "--port=0", f"--interface={lab.bridge}", "--bind-interfaces", "--user=root",
            "--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,10m",
            f"--dhcp-boot={boot_file},,{lab.address}", "--dhcp-authoritative",
            f"--dhcp-leasefile={work / 'leases'}", "--enable-ra",
            "--dhcp-range=fd77::,ra-only", "--log-dhcp"]


def start_reference(lab: NetLab, work: Path, vmlinuz: Path, initrd: Path) -> dict[str, TimedLog]:
    """Start the three stock servers in ``lab``; their stamped logs by name (every
    pipe is drained, so a chatty ``--log-dhcp`` never blocks dnsmasq)."""
    for tool, package in (("dnsmasq", "dnsmasq-base"), ("in.tftpd", "tftpd-hpa")):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: install the Debian package {package}")
    tftp_root, http_root = work / "ref-tftp", work / "ref-http"
    tftp_root.mkdir(parents=True)
    http_root.mkdir(parents=True)
    (tftp_root / "boot.ipxe").write_text(BOOT_SCRIPT.format(ip=lab.address, port=HTTP_PORT))
    shutil.copyfile(vmlinuz, http_root / "vmlinuz")
    shutil.copyfile(initrd, http_root / "initrd.img")
    commands = {
        "tftp": ["in.tftpd", "--listen", "--foreground", "--address", f"{lab.address}:69",
                 "--secure", str(tftp_root)],
        "dhcp": dnsmasq_command(lab, work, "boot.ipxe"),
        "http": [sys.executable, "-u", "-m", "http.server", "--bind", lab.address,
                 "--directory", str(http_root), str(HTTP_PORT)],
    }
    logs = {name: TimedLog(lab.start(command).stdout) for name, command in commands.items()}
    if not logs["http"].wait_for(r"Serving HTTP on", 15):
        raise RuntimeError(f"python -m http.server did not start:\n{logs['http'].text()}")
    return logs
