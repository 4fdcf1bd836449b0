"""Wires one appliance process together: database, workers, service facade."""
from __future__ import annotations

import logging

from conductor import secrets
from conductor.config import Settings
from conductor.db import migrate
from conductor.db.api import Store
from conductor.db.engine import make_engine
from conductor.drivers.context import DriverContext
from conductor.service import Service
from conductor.workers import Workers

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
        self.workers = Workers(self.store, settings, self.drivers)
        self.service = Service(self.store, settings, self.workers)

    def start(self) -> None:
        self.workers.start()
        LOG.info("Conductor %s started (hardware types: %s)", self.settings.conductor_host,
                 ", ".join(self.settings.hardware_types))

    def stop(self) -> None:
        self.workers.stop()
        self.drivers.close()
        self.engine.dispose()
