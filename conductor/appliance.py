"""Wires one appliance process together: database, workers, service facade."""
from __future__ import annotations

import logging
from pathlib import Path

from conductor import secrets
from conductor.alarms import AlarmTable
from conductor.config import Settings
from conductor.db import migrate
from conductor.db.queries import Store
from conductor.db.engine import make_engine
from conductor.netboot import dhcp
from conductor.netboot import dnsmasq as dhcp_dnsmasq
from conductor.drivers.context import DriverContext
from conductor.patching.host_channel import HostAgents
from conductor.netboot.services import NetbootServices
from conductor.service.facade import Service
from conductor.engine.workers import Workers

LOG = logging.getLogger(__name__)


class Appliance:
    """Everything ``metalcast serve`` runs besides the HTTP server itself."""

    def __init__(self, settings: Settings):
        settings.check()
        settings.data_path.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        #: Encrypts BMC secrets at rest; the key lives in the data dir (conductor.secrets).
        self.cipher = secrets.Cipher.from_settings(settings)
        self.engine = make_engine(settings.db_url)
        if settings.database_auto_upgrade:
            migrate.upgrade(self.engine)
        self.store = Store(self.engine)
        secrets.encrypt_stored(self.store, self.cipher)
        self.drivers = DriverContext(settings, self.cipher)
        #: TFTP/HTTP boot servers and boot config rendering (the pxe/ipxe boot interfaces).
        self.netboot = NetbootServices(settings)
        self.drivers.shared("netboot", lambda: self.netboot)
        #: DHCP host entries per MAC (conductor/netboot/dhcp.py, context key "dhcp");
        #: bad [dhcp] settings stop start-up here. The dnsmasq starts with the boot servers.
        self.dhcp = dhcp.provider(self.drivers)
        self.dhcp_service: dhcp_dnsmasq.DhcpService | None = None
        self.workers = Workers(self.store, settings, self.drivers)
        self.service = Service(self.store, settings, self.workers)
        #: Active alarms (/fm/v1/alarms, `metalcast alarm list`).
        self.service.alarms = AlarmTable()
        if self.workers.dns_retry is not None:  # deleted nodes' DNS removals that keep failing
            self.workers.dns_retry.removals.alarms = self.service.alarms
        #: The patch controller (/patching/v1); None when [patching] enabled = false.
        self.service.patching = self._patching(settings, self.service.alarms)
        # Deploys install Applied patches through the ramdisk (conductor/drivers/deploy/patches.py).
        self.drivers.shared("patching", lambda: self.service.patching)
        #: Installed hosts' agents (``metalcast-agent host``): lookup, heartbeat with
        #: patching reports, and the install/query commands of the patch controller.
        self.service.agent.host_agents = HostAgents(self.store, settings,
                                                    self.service.patching)
        if self.service.patching is not None:
            self.service.patching.installer = self.service.agent.host_agents.install
            self.service.patching.notifier = self.service.agent.host_agents.notify_all

    @staticmethod
    def _patching(settings: Settings, alarm_table: AlarmTable):
        if not settings.patching_enabled:
            return None
        from conductor.patching.controller import PatchController
        root = Path(settings.patching_root or settings.data_path / "patching")
        trusted = Path(settings.patching_trusted_dir or root / "trusted")
        # Hosts fetch the update and base repos over HTTP: they live in the web root
        # (the HTTP boot root unless set), as /www/pages/{updates,feed} on StarlingX.
        web_root = Path(settings.patching_web_root or settings.pxe_http_root or
                        settings.data_path / "httpboot")
        return PatchController(root, trusted, settings.patching_release,
                               alarm_table=alarm_table, web_root=web_root)

    def start_boot_services(self, api_url: str | None = None) -> list[str]:
        """Bind the boot servers, check the templates (idempotent); lines to print.

        ``metalcast serve`` calls it before it reports ready, so a port that cannot
        be bound or a broken template stops it with a clear message.
        """
        lines = self.netboot.start(api_url)
        if self.dhcp_service is None:  # after the boot servers: DHCP hands out their URL
            self.dhcp_service = dhcp_dnsmasq.start_service(self.settings, self.netboot.http_url)
        return lines + self.dhcp_service.lines

    def start(self) -> None:
        self.start_boot_services()
        self.workers.start()
        LOG.info("Conductor %s started (hardware types: %s)", self.settings.conductor_host,
                 ", ".join(self.settings.hardware_types))

    def stop(self) -> None:
        self.workers.stop()
        self.netboot.stop()
        if self.dhcp_service is not None:
            self.dhcp_service.stop()
        self.drivers.close()
        self.engine.dispose()
