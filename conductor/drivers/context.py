"""What the interface implementations of one process share, built once and passed in.

Interfaces are built per task; what must outlive a task (BMC sessions and per-BMC
rate limits, Redfish sessions, the kept connections to agents, the image checks and
their HTTP session, the secrets cipher) and the services some interfaces drive
(boot servers, DHCP, DNS, the patch controller) are fields of one DriverContext
that the appliance builds with everything in it. Each field is typed and named:
there is no lookup by string and no object created behind a caller's back.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from conductor.dns.rfc2136 import DnsInterface, NoopDns
from conductor.drivers.deploy.connections import AgentConnections
from conductor.drivers.deploy.images import ImageChecks
from conductor.drivers.ipmi.client import BmcChannels
from conductor.drivers.redfish.client import SessionCache
from conductor.netboot.dhcp import DhcpProvider, NoopDhcp

if TYPE_CHECKING:
    from conductor.config import Settings
    from conductor.netboot.services import NetbootServices
    from conductor.patching.controller import PatchController
    from conductor.secrets import Cipher


@dataclasses.dataclass
class DriverContext:
    """The process's driver resources. Build it with :meth:`create`."""

    settings: Settings
    #: Decrypts driver_info secrets for the task holding the node (Task.driver_info).
    cipher: Cipher | None
    #: IPMI sessions, one channel per BMC address (conductor/drivers/ipmi/client.py).
    bmc_channels: BmcChannels
    #: sushy sessions by address and credentials (conductor/drivers/redfish/client.py).
    redfish_sessions: SessionCache
    #: Kept-alive connections to the agents' command APIs, TLS contexts per certificate.
    agent_connections: AgentConnections
    #: The deploy's image checks (HEAD before the node reboots, on one session).
    image_checks: ImageChecks
    #: TFTP/HTTP boot servers and config rendering; None where [pxe] is off.
    netboot: NetbootServices | None
    #: Per-MAC DHCP host entries (the no-op provider when [dhcp] mode = none).
    dhcp: DhcpProvider
    #: RFC 2136 client (the no-op one when [dns] server is not set).
    dns: DnsInterface
    #: Applied patches that deploys install into the new root; None when off.
    patching: PatchController | None

    @classmethod
    def create(cls, settings: Settings, *, cipher: Cipher | None = None,
               netboot: NetbootServices | None = None,
               dhcp: DhcpProvider | None = None, dns: DnsInterface | None = None,
               patching: PatchController | None = None) -> DriverContext:
        """A context whose sessions are new; services not given are the no-op ones."""
        return cls(settings=settings, cipher=cipher, bmc_channels=BmcChannels(settings),
                   redfish_sessions=SessionCache(settings),
                   agent_connections=AgentConnections(),
                   image_checks=ImageChecks(), netboot=netboot,
                   dhcp=dhcp or NoopDhcp(), dns=dns or NoopDns(), patching=patching)

    def close(self) -> None:
        """Log out of BMCs and close pooled connections (the services stop elsewhere)."""
        self.bmc_channels.close()
        self.redfish_sessions.close()
        self.agent_connections.close()
        self.image_checks.close()
