"""Per-host DHCP boot options: a node's DHCP entry names its own conductor's boot server.

Several conductors may feed one dnsmasq (``[dhcp] mode = hostsdir`` with a shared
``dhcp-hostsdir``): the dnsmasq-wide ``dhcp-boot`` rules (:func:`conductor.netboot.dhcp.
boot_rules`) can name only one boot server, so the conductor that writes a node's entry
also writes the node's options into dnsmasq's ``dhcp-optsdir`` (Ironic writes per-port
DHCP options naming ``[pxe] tftp_server`` and ``[deploy] http_url`` the same way):

- ``server-ip-address`` (dnsmasq's name for the BOOTP next-server field, siaddr): the
  conductor's TFTP server, where PXE firmware fetches the first-stage loader;
- ``bootfile-name`` (option 67) per client kind, chosen by the same tags as the
  dnsmasq-wide rules: the conductor's ``boot.ipxe`` URL for iPXE, the loader file
  otherwise.

Measured on dnsmasq 2.90: these options reach the client only when no ``dhcp-boot``
line matches it, so such entries carry :data:`OWN_TAG` and the dnsmasq-wide rules
exclude it. A file re-read through inotify adds options and never drops the old ones,
so the options' tag carries a digest of their content: the host entry, written after
them and read last, names only the new tag, and the old options match nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress

from conductor import errors

#: Host tag of entries that carry their own boot options (no dhcp-boot rule matches).
OWN_TAG = "metalcast-own"


@dataclasses.dataclass(frozen=True)
class Loaders:
    """The first-stage boot files, by boot interface and firmware (``[dhcp]``)."""

    bios: str = "undionly.kpxe"
    uefi: str = "ipxe.efi"
    pxe_bios: str = "pxelinux.0"
    pxe_uefi: str = "grubx64.efi"

    @classmethod
    def from_settings(cls, dhcp_settings) -> Loaders:
        return cls(dhcp_settings.bios_loader, dhcp_settings.uefi_loader,
                   dhcp_settings.pxe_bios_loader, dhcp_settings.pxe_uefi_loader)


def loader_rules(loaders: Loaders, boot_interface: str, ipxe_url: str
                 ) -> list[tuple[str, str]]:
    """(tag condition, boot file) per client kind: exactly one matches a request."""
    if boot_interface == "pxe":
        return [("tag:!efi64", loaders.pxe_bios), ("tag:efi64", loaders.pxe_uefi)]
    return [("tag:ipxe", ipxe_url), ("tag:!ipxe,tag:!efi64", loaders.bios),
            ("tag:!ipxe,tag:efi64", loaders.uefi)]


@dataclasses.dataclass(frozen=True)
class BootServer:
    """Where one conductor serves boot: its TFTP address (IPv4) and its iPXE URL."""

    address: str
    ipxe_url: str

    def __post_init__(self):
        try:
            ipaddress.IPv4Address(self.address)
        except ValueError:
            raise errors.InvalidParameter(
                f"Boot server {self.address!r} is not an IPv4 address.") from None
        if any(c in self.ipxe_url for c in ", \n\r\t#"):
            raise errors.InvalidParameter(f"iPXE URL {self.ipxe_url!r} is not a plain URL.")


@dataclasses.dataclass(frozen=True)
class HostOptions:
    """A MAC's tag and the dhcp-option lines of its optsdir file."""

    tag: str
    lines: tuple[str, ...]


def host_options(mac: str, boot_interface: str, server: BootServer,
                 loaders: Loaders) -> HostOptions:
    """The options pointing ``mac`` (canonical) at ``server``; the tag changes with them."""
    rules = loader_rules(loaders, boot_interface, server.ipxe_url)
    body = [f"option:server-ip-address,{server.address}"]
    body += [f"{condition},option:bootfile-name,{name}" for condition, name in rules]
    digest = hashlib.sha256("\n".join([mac, *body]).encode()).hexdigest()[:10]
    tag = f"mcb-{mac.replace(':', '')}-{digest}"
    return HostOptions(tag, tuple(f"tag:{tag},{line}" for line in body))
