"""Agent settings: the kernel command line first, command-line flags on top.

In the ramdisk the PXE config passes everything on the kernel command line
(``ipa-api-url=… BOOTIF=01-aa-bb-cc-dd-ee-ff ipa-insecure=1``, the names IPA uses);
in the virtual lab and the tests the same agent runs as a process on the host with
flags instead (``--api-url``, ``--mac``, ``--disk FILE``), so a "machine" is just a
MAC address and a disk image file. Flags always win over the kernel command line.
"""
from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORT = 9999
POWER_ACTIONS = ("system", "exit")

# kernel argument -> (AgentConfig field, converter)
KERNEL_ARGS: dict[str, tuple[str, Callable[[str], object]]] = {
    "ipa-api-url": ("api_url", str),
    "ipa-insecure": ("insecure", lambda v: v.lower() in ("1", "true", "yes", "")),
    "ipa-lookup-timeout": ("lookup_timeout", float),
    "ipa-listen-port": ("listen_port", int),
    "ipa-advertise-host": ("advertise_host", str),
    "ipa-node-uuid": ("node_uuid", str),
    "ipa-debug": ("debug", lambda v: v.lower() in ("1", "true", "yes", "")),
    "metalcast-verify-write": ("verify_write", lambda v: v.lower() in ("1", "true", "yes", "")),
}


@dataclass
class AgentConfig:
    """Everything the agent needs to run; built by :func:`load`."""
    api_url: str | None = None
    insecure: bool = False            # image and API TLS verification off (ipa-insecure)
    ca_file: str | None = None
    macs: list[str] = field(default_factory=list)
    node_uuid: str | None = None
    disks: list[str] = field(default_factory=list)   # files/devices instead of /sys/block
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    advertise_host: str | None = None
    lookup_timeout: float = 600.0
    heartbeat_timeout: float | None = None   # override of the API's heartbeat_timeout
    verify_write: bool = False
    scratch_dir: str | None = None
    power_action: str = "system"     # system: poweroff/reboot; exit: end the process
    state_file: str | None = None    # JSON written on power_off/reboot (virtual lab)
    debug: bool = False


def parse_kernel_cmdline(text: str) -> tuple[dict, list[str]]:
    """(AgentConfig keyword values, MACs from BOOTIF) from a kernel command line."""
    values: dict = {}
    macs: list[str] = []
    for token in shlex.split(text):
        key, _, value = token.partition("=")
        if key == "BOOTIF" and value:
            macs.append(bootif_to_mac(value))
        elif key == "metalcast-disk" and value:       # repeatable, like --disk
            values.setdefault("disks", []).append(value)
        elif key in KERNEL_ARGS:
            name, convert = KERNEL_ARGS[key]
            values[name] = convert(value)
    return values, macs


def bootif_to_mac(value: str) -> str:
    """``01-aa-bb-cc-dd-ee-ff`` (PXELINUX: ARP type 01 first) -> ``aa:bb:cc:dd:ee:ff``."""
    parts = value.strip().lower().split("-")
    if len(parts) == 7:
        parts = parts[1:]
    return normalize_mac(":".join(parts))


def normalize_mac(value: str) -> str:
    parts = value.strip().lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p)
                                  for p in parts):
        raise ValueError(f"not a MAC address: {value!r}")
    return ":".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalcast-agent",
        description="metalcast ramdisk agent: looks its node up at the metalcast API, "
                    "heartbeats, and runs deploy/clean commands (ironic-python-agent "
                    "protocol) over HTTPS. Settings come from /proc/cmdline "
                    "(ipa-api-url=, BOOTIF=, ipa-insecure=...); flags override them.")
    add = parser.add_argument
    add("--api-url", help="metalcast API URL (kernel: ipa-api-url)")
    add("--mac", action="append", default=[], dest="macs", metavar="MAC",
        help="MAC to look the node up by (repeatable; default: BOOTIF, else all NICs)")
    add("--node-uuid", help="node UUID to add to the lookup")
    add("--disk", action="append", default=[], dest="disks", metavar="PATH",
        help="disk the agent may write: a block device or a disk image FILE, optionally "
             "with properties for root device hints: PATH[,model=M][,serial=S][,wwn=W]"
             "[,rotational=0|1][,vendor=V]; repeatable; when given, /sys/block is not "
             "used at all (virtual lab); kernel: metalcast-disk=")
    add("--listen", metavar="HOST:PORT",
        help=f"command API address (default 0.0.0.0:{DEFAULT_PORT}; port 0: any free port)")
    add("--advertise-host", help="host/IP put in callback_url (default: the source "
                                 "address used to reach the API)")
    add("--insecure", action="store_true", default=None,
        help="do not verify TLS certificates of the API and image servers")
    add("--ca-file", help="CA bundle for the API and image servers")
    add("--lookup-timeout", type=float, help="give up lookup after this many seconds")
    add("--heartbeat-timeout", type=float,
        help="use this instead of the API's heartbeat_timeout (heartbeat every 0.3-0.6x)")
    add("--verify-write", action="store_true", default=None,
        help="read raw images back after writing and check their hash")
    add("--scratch-dir", help="where qcow2 images are downloaded before conversion")
    add("--power-action", choices=POWER_ACTIONS,
        help="system: run poweroff/reboot (ramdisk); exit: write --state-file and end "
             "the process (virtual lab)")
    add("--state-file", help="write {event, time} JSON here on power_off/reboot")
    add("--cmdline-file", default="/proc/cmdline",
        help="kernel command line to read ('' to ignore it)")
    add("--print-inventory", action="store_true", help="print the inventory as JSON and exit")
    add("--debug", action="store_true", default=None)
    return parser


def load(argv: list[str] | None = None) -> tuple[AgentConfig, argparse.Namespace]:
    """The merged configuration and the parsed flags."""
    args = build_parser().parse_args(argv)
    values, boot_macs = dict[str, Any](), list[str]()
    if args.cmdline_file and os.path.exists(args.cmdline_file):
        with open(args.cmdline_file, encoding="utf-8") as f:
            values, boot_macs = parse_kernel_cmdline(f.read())
    config = AgentConfig(**values)
    _apply_flags(config, args)
    config.macs = [normalize_mac(m) for m in args.macs] or boot_macs
    return config, args


def _apply_flags(config: AgentConfig, args: argparse.Namespace) -> None:
    for name in ("api_url", "node_uuid", "advertise_host", "insecure", "ca_file",
                 "lookup_timeout", "heartbeat_timeout", "verify_write", "scratch_dir",
                 "power_action", "state_file", "debug"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    if args.disks:
        config.disks = list(args.disks)
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        config.listen_host, config.listen_port = host or "0.0.0.0", int(port)
