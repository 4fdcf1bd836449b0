"""Hardware inventory from /proc and /sys, in ironic-python-agent's shape.

``collect()`` returns ``{cpu, memory, disks, interfaces, system_vendor, boot}`` with
the field names IPA uses, so root device hints and the conductor read the same
keys. In the virtual lab a machine's disk is a disk image file given with
``--disk PATH[,model=..][,serial=..]``: :func:`describe_disk_spec` turns that into the
same disk record (size from the file; model/serial/wwn from the spec or
deterministic defaults), and /sys/block is then not consulted at all, so the agent
running on a host can never pick one of the host's disks.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import socket
import struct
from dataclasses import asdict, dataclass

SYS_BLOCK = "/sys/block"
SYS_NET = "/sys/class/net"
SKIP_BLOCK_PREFIXES = ("loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd", "zd")
SIOCGIFADDR = 0x8915
VIRTUAL_MODEL = "metalcast virtual disk"


@dataclass
class Disk:
    """One disk; ``name`` is the path the agent writes to."""
    name: str
    size: int
    model: str = ""
    serial: str = ""
    wwn: str = ""
    vendor: str = ""
    rotational: bool = False


def _read(path: str, default: str = "") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return default


def _sys_disk(dev: str, path: str) -> Disk:
    """A disk record from /sys/block/<dev>, written through ``path``."""
    base = os.path.join(SYS_BLOCK, dev)
    size = int(_read(os.path.join(base, "size"), "0") or 0) * 512
    return Disk(
        name=path, size=size,
        model=_read(os.path.join(base, "device", "model")),
        serial=(_read(os.path.join(base, "device", "serial"))
                or _read(os.path.join(base, "serial"))),
        wwn=_read(os.path.join(base, "wwid")) or _read(os.path.join(base, "device", "wwid")),
        vendor=_read(os.path.join(base, "device", "vendor")),
        rotational=_read(os.path.join(base, "queue", "rotational"), "0") == "1")


def list_block_disks() -> list[Disk]:
    """Whole disks of this machine (no partitions, loops, RAM disks, CD-ROMs)."""
    disks = []
    for dev in sorted(os.listdir(SYS_BLOCK)) if os.path.isdir(SYS_BLOCK) else []:
        if dev.startswith(SKIP_BLOCK_PREFIXES) or "boot" in dev:
            continue
        disk = _sys_disk(dev, f"/dev/{dev}")
        if disk.size > 0:
            disks.append(disk)
    return disks


def describe_disk_spec(spec: str) -> Disk:
    """``PATH[,key=value...]`` -> Disk (file or block device) for the virtual lab."""
    path, *props = spec.split(",")
    if not os.path.exists(path):
        raise ValueError(f"disk {path} does not exist")
    extra = dict(p.split("=", 1) for p in props if "=" in p)
    unknown = set(extra) - {"model", "serial", "wwn", "vendor", "rotational"}
    if unknown:
        raise ValueError(f"unknown disk properties {sorted(unknown)} in {spec!r}")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    default_serial = hashlib.sha1(os.path.realpath(path).encode()).hexdigest()[:16]
    return Disk(name=path, size=size, model=extra.get("model", VIRTUAL_MODEL),
                serial=extra.get("serial", default_serial), wwn=extra.get("wwn", ""),
                vendor=extra.get("vendor", "metalcast"),
                rotational=extra.get("rotational", "0") in ("1", "true"))


def list_disks(specs: list[str]) -> list[Disk]:
    """The disks the agent may use: the ``--disk`` specs, else /sys/block."""
    if specs:
        return [describe_disk_spec(s) for s in specs]
    return list_block_disks()


def _ipv4(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), SIOCGIFADDR,
                                 struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def list_interfaces() -> list[dict]:
    """Physical-looking NICs: name, MAC, IPv4, carrier."""
    result = []
    for name in sorted(os.listdir(SYS_NET)) if os.path.isdir(SYS_NET) else []:
        mac = _read(os.path.join(SYS_NET, name, "address"))
        if name == "lo" or not mac or mac == "00:00:00:00:00:00":
            continue
        result.append({"name": name, "mac_address": mac.lower(), "ipv4_address": _ipv4(name),
                       "has_carrier": _read(os.path.join(SYS_NET, name, "carrier")) == "1"})
    return result


def interface_macs() -> list[str]:
    return [nic["mac_address"] for nic in list_interfaces()]


def cpu_info() -> dict:
    model, flags, count, mhz = "", list[str](), 0, None
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            count += 1
        elif key == "model name" and not model:
            model = value
        elif key == "flags" and not flags:
            flags = value.split()
        elif key == "cpu MHz" and mhz is None:
            mhz = value
    return {"model_name": model, "frequency": mhz, "count": count or os.cpu_count(),
            "architecture": platform.machine(), "flags": flags}


def memory_info() -> dict:
    total_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            total_kib = int(line.split()[1])
    return {"total": total_kib * 1024, "physical_mb": total_kib // 1024}


def boot_mode() -> str:
    return "uefi" if os.path.isdir("/sys/firmware/efi") else "bios"


def collect(disk_specs: list[str], pxe_mac: str | None = None) -> dict:
    """The full inventory (IPA's keys)."""
    interfaces = list_interfaces()
    pxe = next((n["name"] for n in interfaces if n["mac_address"] == pxe_mac), None)
    return {
        "cpu": cpu_info(),
        "memory": memory_info(),
        "disks": [asdict(d) for d in list_disks(disk_specs)],
        "interfaces": interfaces,
        "system_vendor": {"product_name": _read("/sys/class/dmi/id/product_name"),
                          "serial_number": _read("/sys/class/dmi/id/product_serial"),
                          "manufacturer": _read("/sys/class/dmi/id/sys_vendor")},
        "boot": {"current_boot_mode": boot_mode(), "pxe_interface": pxe_mac or pxe},
    }
