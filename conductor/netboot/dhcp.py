"""DHCP for network boot: the one place metalcast talks to dnsmasq.

Every enrolled port gets one host file ``<hostsdir>/<mac-with-dashes>`` holding one
``dhcp-host`` line that tags the MAC ``metalcast`` (plus ``metalcast-pxe`` for the
``pxe`` boot interface). The loader choice lives in the main dnsmasq config
(:func:`boot_rules`): the firmware announces what it is (client arch, option 93;
iPXE's user class / option 175), so the same entry serves BIOS, UEFI and iPXE.

dnsmasq (2.90, measured) re-reads a changed file in ``dhcp-hostsdir`` through
inotify, and the entry read last for a MAC wins. Deleting or emptying a file does
*not* drop its entries, and SIGHUP, the documented way to drop them, makes dnsmasq
2.90 abort once one of those hosts holds a lease. So a released MAC's file is
rewritten to a "released" entry without the ``metalcast`` tag (ignored, or inspected
when ``[dhcp] unknown_hosts = inspect``) and never SIGHUPed; released files are
purged only before our managed dnsmasq starts. File names start with a hex digit
and temp files with a dot, which dnsmasq's inotify handler skips.

When the writing conductor knows its boot server (``[dhcp] boot_server`` or ``[pxe]
tftp_host``), the entry also carries the node's own boot options, which name that
conductor's TFTP server and iPXE URL, in ``dhcp-optsdir``
(:mod:`conductor.netboot.dhcp_options`): several conductors can then feed one dnsmasq,
each node pointed at its own conductor.

The managed dnsmasq process itself is in :mod:`conductor.netboot.dnsmasq`.
"""
from __future__ import annotations

import abc
import dataclasses
import ipaddress
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path

from conductor import errors
from conductor.netboot.dhcp_options import (
    OWN_TAG,
    BootServer,
    Loaders,
    host_options,
    loader_rules,
)
from conductor.netboot.dhcp_owners import OwnerIndex

LOG = logging.getLogger(__name__)

MODES = ("none", "managed", "hostsdir")
UNKNOWN_HOSTS = ("ignore", "inspect")
RA_CHOICES = ("auto", "on", "off")
TAG = "metalcast"
RELEASED_TAG = "metalcast-released"
#: boot interface -> extra host tags selecting its loaders in :func:`boot_rules`.
INTERFACE_TAGS = {"ipxe": (), "pxe": ("metalcast-pxe",)}
#: client-arch (option 93) values of x86-64 UEFI: 7 (EFI BC), 9 (EFI x86-64).
UEFI_ARCHES = (7, 9)

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_LOADER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_URL_RE = re.compile(r"^(?:https?|tftp)://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/%-]*)?$")
_LEASE_TIME_RE = re.compile(r"^(infinite|\d+[smhdw]?)$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_OWNER_RE = re.compile(r"^# metalcast node ([0-9a-f-]{36})\b")


def canonical_mac(value) -> str:
    """A MAC as ``aa:bb:cc:dd:ee:ff`` (case folded); anything else is refused, so no
    caller can smuggle a comma, tag or newline into a dnsmasq file."""
    if not isinstance(value, str) or not _MAC_RE.match(value.lower()):
        raise errors.InvalidParameter(
            f"Expected a MAC address like 52:54:00:12:34:56 but received {value!r}.")
    return value.lower()


def _node_uuid(value) -> str:
    if not isinstance(value, str) or not _UUID_RE.match(value.lower()):
        raise errors.InvalidParameter(f"Expected a node UUID but received {value!r}.")
    return value.lower()


# --- settings ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DhcpRange:
    """``[dhcp] range``: start,end[,netmask][,lease time], parsed once."""

    start: ipaddress.IPv4Address
    end: ipaddress.IPv4Address
    netmask: ipaddress.IPv4Address | None = None
    lease_time: str = "1h"

    def conf(self) -> str:
        parts = [str(self.start), str(self.end)]
        parts += [str(self.netmask)] if self.netmask else []
        return ",".join(parts + [self.lease_time])


def parse_range(text: str) -> DhcpRange:
    """Parse ``[dhcp] range``; ConfigError names what is wrong."""
    parts = [p.strip() for p in (text or "").split(",")]
    if len(parts) < 2 or len(parts) > 4:
        raise errors.ConfigError(reason=f"[dhcp] range {text!r}: expected start,end"
                                        "[,netmask][,lease time] (IPv4)")
    try:
        start, end = ipaddress.IPv4Address(parts[0]), ipaddress.IPv4Address(parts[1])
        rest = parts[2:]
        netmask = None
        if rest and "." in rest[0]:
            netmask = ipaddress.IPv4Address(rest.pop(0))
            ipaddress.IPv4Network(f"0.0.0.0/{netmask}")
    except ValueError as exc:
        raise errors.ConfigError(reason=f"[dhcp] range {text!r}: {exc}") from None
    lease = rest[0] if rest else "1h"
    if not _LEASE_TIME_RE.match(lease) or len(rest) > 1:
        raise errors.ConfigError(reason=f"[dhcp] range {text!r}: lease time {lease!r} "
                                        "is not like 10m, 1h, 3600 or infinite")
    if end < start:
        raise errors.ConfigError(reason=f"[dhcp] range {text!r}: end is before start")
    return DhcpRange(start, end, netmask, lease)


def hostsdir(settings) -> Path:
    return Path(settings.dhcp.hostsdir or settings.data_path / "dhcp" / "hosts.d").expanduser()


def optsdir(settings) -> Path:
    """``[dhcp] optsdir``, else ``opts.d`` beside the hostsdir (never inside it: dnsmasq
    would read its files as host entries)."""
    if settings.dhcp.optsdir:
        return Path(settings.dhcp.optsdir).expanduser()
    return hostsdir(settings).parent / "opts.d"


def leasefile(settings) -> Path:
    return Path(settings.dhcp.leasefile
                or settings.data_path / "dhcp" / "dnsmasq.leases").expanduser()


def ipxe_url(settings, http_url: str = "") -> str:
    """The URL iPXE clients are sent: ``[dhcp] ipxe_url``, else <boot HTTP root>/boot.ipxe
    (``http_url`` is the running boot server's URL, else ``[pxe] http_url``/host/port)."""
    url = settings.dhcp.ipxe_url
    if not url:
        base = http_url or settings.pxe.http_url
        if not base:
            host = settings.dhcp.boot_server or settings.pxe.http_host
            port = settings.pxe.http_port
            if not host or not port:
                raise errors.ConfigError(reason="[dhcp] cannot tell iPXE where boot.ipxe is: "
                                                "set [dhcp] ipxe_url or [pxe] http_url")
            base = f"http://{host}:{port}"
        url = base.rstrip("/") + "/boot.ipxe"
    if not _URL_RE.match(url):
        raise errors.ConfigError(reason=f"[dhcp] ipxe_url {url!r} is not a plain http(s) or "
                                        "tftp URL (no commas, spaces, queries)")
    return url


def check_settings(settings) -> None:
    """Refuse bad ``[dhcp]`` values at start-up, before anything is written."""
    checks = [("mode", settings.dhcp.mode, MODES),
              ("unknown_hosts", settings.dhcp.unknown_hosts, UNKNOWN_HOSTS),
              ("ipv6_ra", settings.dhcp.ipv6_ra, RA_CHOICES)]
    for key, value, allowed in checks:
        if value not in allowed:
            raise errors.ConfigError(reason=f"[dhcp] {key} must be one of "
                                            f"{', '.join(allowed)}, not {value!r}")
    if settings.dhcp.mode == "none":
        return
    for key in ("bios_loader", "uefi_loader", "pxe_bios_loader", "pxe_uefi_loader"):
        value = getattr(settings.dhcp, key)
        if not _LOADER_RE.match(value) or ".." in value:
            raise errors.ConfigError(reason=f"[dhcp] {key} {value!r} is not a file name")
    if settings.dhcp.boot_server:
        try:
            ipaddress.IPv4Address(settings.dhcp.boot_server)
        except ValueError:
            raise errors.ConfigError(reason=f"[dhcp] boot_server {settings.dhcp.boot_server!r}"
                                            " is not an IPv4 address") from None
    if optsdir(settings).resolve() == hostsdir(settings).resolve():
        raise errors.ConfigError(reason="[dhcp] optsdir must differ from [dhcp] hostsdir: "
                                        "dnsmasq would read option lines as host entries")
    if settings.dhcp.mode == "managed":
        if not settings.dhcp.interface:
            raise errors.ConfigError(reason="[dhcp] mode = managed needs [dhcp] interface")
        parse_range(settings.dhcp.range)


def boot_rules(settings, boot_server: str = "", http_url: str = "") -> list[str]:
    """dnsmasq config lines that choose the loader from the tags of a request.

    Shared by the managed dnsmasq and the snippet written for an existing dnsmasq.
    Every rule carries a negated tag for each alternative, so exactly one matches.
    """
    server = boot_server or settings.dhcp.boot_server
    tail = f",,{server}" if server else ""
    url = ipxe_url(settings, http_url)
    loaders = Loaders.from_settings(settings.dhcp)
    lines = ["dhcp-match=set:ipxe,175", "dhcp-userclass=set:ipxe,iPXE",
             # iPXE's no-pxedhcp (175.176 = 1): else iPXE waits ~3 s after the ACK for
             # ProxyDHCP offers nobody sends (measured in the QEMU PXE boot).
             "dhcp-option=tag:ipxe,encap:175,176,1b"]
    lines += [f"dhcp-match=set:efi64,option:client-arch,{arch}" for arch in UEFI_ARCHES]
    # An iPXE URL is fetched from where it says, a loader file from the next-server.
    ipxe_rules = [(t, f, "" if t == "tag:ipxe" else tail)
                  for t, f in loader_rules(loaders, "ipxe", url)]
    pxe_rules = [(t, f, tail) for t, f in loader_rules(loaders, "pxe", url)]
    # Entries with their own boot options (OWN_TAG) must match no dhcp-boot line.
    known = f"dhcp-boot=tag:{TAG},tag:!{OWN_TAG}"
    lines += [f"{known},tag:!metalcast-pxe,{t},{f}{s}" for t, f, s in ipxe_rules]
    lines += [f"{known},tag:metalcast-pxe,{t},{f}{s}" for t, f, s in pxe_rules]
    if settings.dhcp.unknown_hosts == "inspect":
        # Unknown and released MACs get the iPXE chain; the HTTP side has no per-MAC
        # script for them, which is where an inspection ramdisk hooks in.
        lines += [f"dhcp-boot=tag:!{TAG},{t},{f}{s}" for t, f, s in ipxe_rules]
    else:
        lines.append(f"dhcp-ignore=tag:!{TAG}")
    return lines


# --- host entries -----------------------------------------------------------------

class DhcpProvider(abc.ABC):
    """Points a node's MACs at its boot loader, or takes them away again."""

    @abc.abstractmethod
    def update(self, node, macs=None, boot_interface: str = "ipxe") -> None:
        """Serve ``macs`` of ``node`` (a UUID or a Task) for ``boot_interface``."""

    @abc.abstractmethod
    def remove(self, node, macs=None) -> None:
        """Stop serving the node's MACs (all it has entries for when ``macs`` is None)."""

    def validate(self) -> None:  # noqa: B027 - most providers need no check
        """Raise ConfigError when the provider cannot work."""

    def clean(self, task) -> None:
        """Boot-interface spelling of :meth:`remove`."""
        self.remove(task)


def _target(node, macs, boot_interface):
    """(uuid, canonical MACs, interface) from a UUID or Task plus MACs, or from boot
    options carrying ``node_uuid``/``macs``/``ipxe_script_url`` (conductor.drivers.boot.pxe)."""
    if macs is not None and hasattr(macs, "node_uuid"):
        options = macs
        node, macs = options.node_uuid, options.macs
        boot_interface = "ipxe" if getattr(options, "ipxe_script_url", None) else "pxe"
    uuid = _node_uuid(getattr(getattr(node, "node", None), "uuid", node))
    if boot_interface not in INTERFACE_TAGS:
        raise errors.InvalidParameter(f"Node {uuid}: boot interface {boot_interface!r} "
                                      f"cannot network-boot through DHCP")
    checked = None if macs is None else sorted({canonical_mac(m) for m in macs})
    return uuid, checked, boot_interface


class NoopDhcp(DhcpProvider):
    """``[dhcp] mode = none``: someone else's DHCP points machines at us."""

    def update(self, node, macs=None, boot_interface="ipxe") -> None:
        _target(node, macs if macs is not None else (), boot_interface)

    def remove(self, node, macs=None) -> None:
        _target(node, macs, "ipxe")


class HostsDirDhcp(DhcpProvider):
    """One dnsmasq host file per MAC in a ``dhcp-hostsdir`` (ours or someone's), and
    the MAC's own boot options in the ``dhcp-optsdir`` when its boot server is known."""

    def __init__(self, directory: Path, opts_directory: Path | None = None,
                 loaders: Loaders | None = None):
        self.directory = Path(directory)
        self.opts_directory = Path(opts_directory or self.directory.parent / "opts.d")
        self.loaders = loaders or Loaders()
        #: Which entries each node owns (conductor/netboot/dhcp_owners.py), shared like
        #: the hostsdir; built by validate(), read only once it exists.
        self.owners = OwnerIndex(self.directory.parent / "owners.d")
        self._lock = threading.Lock()

    def validate(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.ConfigError(reason=f"[dhcp] hostsdir {self.directory}: {exc}") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise errors.ConfigError(reason=f"[dhcp] hostsdir {self.directory} is not writable")
        try:
            self.owners.build((uuid, mac) for mac, uuid in self._scan().items())
        except OSError as exc:
            raise errors.ConfigError(reason=f"[dhcp] cannot index {self.directory}: {exc}") \
                from None

    def update(self, node, macs=None, boot_interface="ipxe") -> None:
        server = getattr(macs, "boot_server", None)
        uuid, macs, boot_interface = _target(node, macs or (), boot_interface)
        tags = (TAG,) + INTERFACE_TAGS[boot_interface]
        with self._lock:
            stale = set(self._owned(uuid)) - set(macs)
            for mac in macs:
                self._write_entry(mac, uuid, boot_interface, tags, server)
            for mac in sorted(stale):
                self._release(mac, uuid)
        LOG.info("Node %s: DHCP entries for %s (%s boot, boot server %s)", uuid,
                 ", ".join(macs), boot_interface,
                 server.address if server else "of the dnsmasq-wide rules")

    def _write_entry(self, mac: str, uuid: str, boot_interface: str, tags: tuple,
                     server: BootServer | None) -> None:
        """The MAC's options first, then its host line naming their tag (read last)."""
        comment = f"# metalcast node {uuid} boot {boot_interface}"
        if server is None:
            self._unlink_opts(mac)
        else:
            options = host_options(mac, boot_interface, server, self.loaders)
            self._write(self.opts_directory, mac,
                        f"{comment} server {server.address}\n" + "\n".join(options.lines)
                        + "\n")
            tags += (OWN_TAG, options.tag)
            comment += f" server {server.address}"
        self._write(self.directory, mac, f"{comment}\n{mac},"
                                         f"{','.join(f'set:{t}' for t in tags)}\n")
        self.owners.mark(uuid, mac)

    def options(self) -> dict[str, list[str]]:
        """MAC -> the dhcp-option lines of its own boot options (for status and tests)."""
        result = {}
        for path in self._files(self.opts_directory):
            lines = [ln for ln in _read(path).splitlines() if ln and not ln.startswith("#")]
            result[path.name.replace("-", ":")] = lines
        return result

    def _unlink_opts(self, mac: str) -> None:
        """dnsmasq keeps what it read (the tag no entry names any more); the file goes."""
        (self.opts_directory / mac.replace(":", "-")).unlink(missing_ok=True)

    def remove(self, node, macs=None) -> None:
        uuid, macs, _ = _target(node, macs, "ipxe")
        with self._lock:
            owned = self._owned(uuid)
            for mac in (owned if macs is None else [m for m in macs if m in owned]):
                self._release(mac, uuid)
                LOG.info("Node %s: DHCP entry for %s released", uuid, mac)

    def purge_released(self) -> int:
        """Delete released entries; only safe before a fresh dnsmasq reads the dir."""
        count = 0
        for path in self._files():
            if f",set:{RELEASED_TAG}" in _read(path):
                path.unlink(missing_ok=True)
                count += 1
        entries = {path.name for path in self._files()}
        for path in self._files(self.opts_directory):
            if path.name not in entries:
                path.unlink(missing_ok=True)
        return count

    def entries(self) -> dict[str, str]:
        """MAC -> the dhcp-host line dnsmasq sees (for status and tests)."""
        result = {}
        for path in self._files():
            lines = [ln for ln in _read(path).splitlines() if ln and not ln.startswith("#")]
            if lines:
                result[path.name.replace("-", ":")] = lines[-1]
        return result

    def _release(self, mac: str, uuid: str) -> None:
        self._write(self.directory, mac,
                    f"# metalcast released (was node {uuid})\n{mac},set:{RELEASED_TAG}\n")
        self._unlink_opts(mac)
        self.owners.unmark(uuid, mac)

    def _owned(self, uuid: str) -> list[str]:
        """The MACs whose entries name ``uuid``: from the owner index once it exists,
        else by reading every host file."""
        if self.owners.ready():
            return self.owners.owned(uuid, self._owner)
        return sorted(mac for mac, owner in self._scan().items() if owner == uuid)

    def _scan(self) -> dict[str, str]:
        """MAC -> node UUID of every entry that names one (reads every host file)."""
        found = {}
        for path in self._files():
            match = _OWNER_RE.match(_read(path))
            if match:
                found[path.name.replace("-", ":")] = match.group(1)
        return found

    def _owner(self, mac: str) -> str | None:
        match = _OWNER_RE.match(_read(self.directory / mac.replace(":", "-")))
        return match.group(1) if match else None

    def _files(self, directory: Path | None = None) -> list[Path]:
        try:
            return [p for p in (directory or self.directory).iterdir()
                    if _MAC_RE.match(p.name.replace("-", ":"))]
        except FileNotFoundError:
            return []

    @staticmethod
    def _write(directory: Path, mac: str, text: str) -> None:
        """temp file + rename: dnsmasq sees one IN_MOVED_TO with the whole entry."""
        target = directory / mac.replace(":", "-")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(text)
                os.chmod(temp, 0o644)
                os.replace(temp, target)
            except BaseException:
                os.unlink(temp)
                raise
        except OSError as exc:
            raise errors.DriverError(reason=f"cannot write DHCP host file {target}: {exc}") \
                from None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def make_provider(settings) -> DhcpProvider:
    """The provider ``[dhcp] mode`` asks for (validated)."""
    check_settings(settings)
    if settings.dhcp.mode == "none":
        return NoopDhcp()
    provider = HostsDirDhcp(hostsdir(settings), optsdir(settings),
                            Loaders.from_settings(settings.dhcp))
    provider.validate()
    return provider


def write_snippet(settings, http_url: str = "") -> Path:
    """``hostsdir`` mode: write <data_dir>/dhcp/metalcast-dnsmasq.conf, the boot rules
    for the existing dnsmasq to include (``conf-file=``) next to its dhcp-hostsdir."""
    path = settings.data_path / "dhcp" / "metalcast-dnsmasq.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    optsdir(settings).mkdir(parents=True, exist_ok=True)
    lines = [f"# metalcast boot rules; include with conf-file={path}",
             f"dhcp-hostsdir={hostsdir(settings)}",
             f"dhcp-optsdir={optsdir(settings)}"] + boot_rules(settings, http_url=http_url)
    path.write_text("\n".join(lines) + "\n")
    return path


# --- leases -----------------------------------------------------------------------

def lease_addresses(settings, macs) -> list[str]:
    """IPv4 addresses dnsmasq's lease file holds for ``macs`` (unexpired, in order)."""
    wanted = [canonical_mac(m) for m in macs]
    found: dict[str, list[str]] = {m: [] for m in wanted}
    now = time.time()
    try:
        text = leasefile(settings).read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        fields = line.split()
        # "<expiry> <mac> <ip> <hostname> <client-id>"; DHCPv6 lines follow a "duid" line.
        if len(fields) < 3 or fields[0] == "duid" or fields[1].lower() not in found:
            continue
        if fields[0] != "0" and fields[0].isdigit() and int(fields[0]) < now:
            continue
        try:
            found[fields[1].lower()].append(str(ipaddress.IPv4Address(fields[2])))
        except ValueError:
            continue
    return [ip for mac in wanted for ip in found[mac]]
