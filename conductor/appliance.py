"""Builds one appliance process: every object gets its collaborators when it is made.

The order below is the dependency order: database, then the services drivers use
(boot servers, DHCP, DNS, patching), then the driver context and registry, the
engine (workers and periodic tasks), and last the service facade the API calls.
Nothing is attached to an object after it is built.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from conductor import secrets
from conductor.alarms import AlarmTable
from conductor.cluster.membership import Membership
from conductor.cluster.ring import RingManager
from conductor.config import Settings
from conductor.db import migrate
from conductor.db.conductors import ConductorRows
from conductor.db.engine import make_engine
from conductor.db.patch_hosts import PatchHostRows
from conductor.db.queries import Store
from conductor.db.records import Node
from conductor.db.strategies import StrategyRows
from conductor.db.tokens import TokenRows
from conductor.dns import rfc2136
from conductor.dns.registration import DnsRetry
from conductor.drivers.context import DriverContext
from conductor.drivers.registry import DriverRegistry, Factory
from conductor.engine.power_sync import PowerSync
from conductor.engine.takeover import Takeover
from conductor.engine.task import Task
from conductor.engine.workers import Workers
from conductor.identity import Tokens
from conductor.metrics.exporter import Exporter, Recorders, row_collectors
from conductor.netboot import dhcp
from conductor.netboot import dnsmasq as dhcp_dnsmasq
from conductor.netboot.services import NetbootServices
from conductor.orchestration.fleet import ApplianceFleet
from conductor.orchestration.orchestrator import Orchestrator
from conductor.patching.controller import PatchController
from conductor.patching.host_channel import HostAgents, HostCommands
from conductor.service.conductors import Conductors
from conductor.service.facade import Service
from conductor.service.ramdisk import AgentService
from conductor.service.updates import Updates, build_updates

LOG = logging.getLogger(__name__)


class Appliance:
    """Everything ``metalcast serve`` runs besides the HTTP server itself.

    ``driver_overrides`` replaces interface implementations ((kind, name) ->
    factory) for this appliance only: tests use it for recording or simulated
    hardware.
    """

    def __init__(self, settings: Settings,
                 driver_overrides: Mapping[tuple[str, str], Factory] | None = None):
        settings.check()
        settings.make_data_dir()  # 0700: the database and the secrets key live there
        self.settings = settings
        #: Encrypts BMC secrets at rest; the key lives in the data dir (conductor.secrets).
        self.cipher = secrets.Cipher.from_settings(settings)
        self.engine = make_engine(settings.db_url)
        if settings.database.auto_upgrade:
            migrate.upgrade(self.engine)
        #: The event recorders of /metrics, on this appliance's own registry; given to
        #: the objects that see the events (conductor/metrics/).
        recorders = Recorders()
        self.store = Store(self.engine, conductor=settings.conductor.host,
                           on_transition=recorders.provisioning.transition)
        secrets.encrypt_stored(self.store, self.cipher)
        #: The hash ring of the live conductors and this conductor's row (register,
        #: heartbeat; conductor/cluster/): a membership change rebuilds the ring.
        conductor_rows = ConductorRows(self.engine)
        self.ring = RingManager(conductor_rows, settings.conductor)
        self.membership = Membership(conductor_rows, settings.conductor, settings.data_path,
                                     on_change=self.ring.invalidate)
        #: Active alarms (/fm/v1/alarms, `metalcast alarm list`).
        self.alarms = AlarmTable()
        #: TFTP/HTTP boot servers and boot config rendering (the pxe/ipxe boot interfaces).
        self.netboot = NetbootServices(settings, on_transfer=recorders.boot.transfer)
        #: DHCP host entries per MAC; bad [dhcp] settings stop start-up here. The
        #: dnsmasq process starts with the boot servers (start_boot_services).
        self.dhcp = dhcp.make_provider(settings)
        self.dhcp_service: dhcp_dnsmasq.DhcpService | None = None
        #: Set by the patch controller when a host's report changes its state; the
        #: orchestration runner waits on it (a step sees a host finish at once).
        host_changed = threading.Event()
        host_commands = HostCommands(self.store, settings, self.cipher,
                                     owner_of=self.ring.conductor_or_none)
        self.patching, host_agents = self._patching(settings, host_changed, host_commands)
        self.context = DriverContext.create(
            settings, cipher=self.cipher, netboot=self.netboot, dhcp=self.dhcp,
            dns=rfc2136.build(settings), patching=self.patching)
        self.drivers = DriverRegistry(self.context, driver_overrides)
        power_sync = PowerSync.for_settings(self.store, settings, self.drivers,
                                            recorders.engine, self.ring.conductor_or_none)
        dns_retry = DnsRetry.for_settings(self.store, settings, self.context.dns,
                                          self._task_opener(), self.alarms,
                                          self.ring.conductor_or_none)
        #: The nodes of dead conductors that the ring maps here (conductor/engine/
        #: takeover.py), a periodic task of the workers.
        takeover = Takeover(self.store, conductor_rows, settings.conductor.host,
                            self.ring.conductor_or_none, self.drivers,
                            self.membership.stale_before)
        self.workers = Workers(self.store, settings, self.drivers, power_sync, dns_retry,
                               metrics=recorders.engine, takeover=takeover,
                               owner_of=self.ring.conductor_or_none,
                               host_audit=host_commands.audit if self.patching else None)
        agent = AgentService(self.store, settings, self.workers, host_agents, self.cipher,
                             metrics=recorders.engine)
        agent.upgrade_stored_tokens()   # no agent token stays in plain text
        #: Identity v3 tokens, stored hashed in the database (conductor/identity.py).
        tokens = Tokens(TokenRows(self.engine), settings.identity.token_expiration)
        #: sw-manager strategies and their runner (conductor/orchestration/); steps act
        #: through the store, the patch controller, the alarms and the workers.
        self.orchestration = Orchestrator(
            StrategyRows(self.engine),
            ApplianceFleet(self.store, settings, self.patching, self.alarms, self.workers,
                           rebuild=self._rebuild),
            self.alarms, settings, wake=host_changed) if settings.orchestration.enabled \
            else None
        #: Image updates: catalogue, Omaha server, reboot leases (conductor/updates/).
        self.updates: Updates = build_updates(settings, self.engine, self.store)
        #: GET /metrics: the recorders and the row counts read at scrape time.
        self.metrics = Exporter(recorders, row_collectors(
            self.engine, self.patching, self.netboot.open_sessions))
        self.service = Service(self.store, settings, self.workers, agent, self.alarms,
                               self.patching, tokens, self.orchestration,
                               conductors=Conductors(conductor_rows, self.ring,
                                                      settings.conductor),
                               updates=self.updates, metrics=self.metrics)

    def _rebuild(self, name: str) -> None:
        """A node's rebuild as the API starts it (the image-update strategy's steps)."""
        self.service.set_provision_state(name, "rebuild")

    def _task_opener(self) -> Callable[[Node], Task]:
        """Wraps a node that this conductor has locked into a Task with its drivers."""
        host = self.settings.conductor.host
        return lambda node: Task(self.store, node, host, self.drivers)

    def _patching(self, settings: Settings, host_changed: threading.Event,
                  host_commands: HostCommands) -> tuple[PatchController | None, HostAgents]:
        """The patch controller (None when [patching] enabled = false) and the channel
        to installed hosts' agents (``metalcast-agent host``); ``host_commands`` sends
        to the agents of the nodes the ring maps here."""
        if not settings.patching.enabled:
            return None, HostAgents(self.store, settings, None, self.cipher)
        root = Path(settings.patching.root or settings.data_path / "patching")
        trusted = Path(settings.patching.trusted_dir or root / "trusted")
        # Hosts fetch the update and base repos over HTTP: they live in the web root
        # (the HTTP boot root unless set), as /www/pages/{updates,feed} on StarlingX.
        web_root = Path(settings.patching.web_root or settings.pxe.http_root or
                        settings.data_path / "httpboot")
        controller = PatchController(root, trusted, settings.patching.release,
                                     host_rows=PatchHostRows(self.engine),
                                     host_channel=host_commands,
                                     alarm_table=self.alarms, web_root=web_root,
                                     host_changed=host_changed)
        return controller, HostAgents(self.store, settings, controller, self.cipher)

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
        self.membership.start()                # before the workers: a name alive
        self.workers.start()                   # elsewhere is refused before recovery
        self.updates.start()                   # the delta builder
        if self.orchestration is not None:     # after the workers: steps may reboot hosts
            self.orchestration.start()
        LOG.info("Conductor %s started (hardware types: %s)", self.settings.conductor.host,
                 ", ".join(self.settings.conductor.hardware_types))

    def stop(self) -> None:
        self.service.changes.close()           # the console's publisher looks no more
        if self.orchestration is not None:     # a pass in flight ends and is saved
            self.orchestration.stop()
        self.workers.stop()
        self.updates.stop()
        self.membership.stop()                 # after the workers: offline once idle
        self.netboot.stop()
        if self.dhcp_service is not None:
            self.dhcp_service.stop()
        self.context.close()
        self.engine.dispose()
