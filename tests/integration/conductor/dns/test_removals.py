"""Deleting a node never waits on DNS: the removal runs on a conductor worker thread
while the API call has long returned (the queue logic is unit-tested in
tests/unit/conductor/dns/test_removals.py)."""
from __future__ import annotations

import threading

import pytest

from conductor.alarms import AlarmTable
from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.queries import Store
from conductor.db.tokens import TokenRows
from conductor.dns import registration as reg
from conductor.drivers.context import DriverContext
from conductor.drivers.registry import DriverRegistry
from conductor.engine.workers import Workers
from conductor.identity import Tokens
from conductor.service.facade import Service
from conductor.service.ramdisk import AgentService
from tests.unit.conductor.dns.test_registration import RecordingDns, _opener, _settings
from tests.unit.conductor.dns.test_removals import _records, _row


@pytest.fixture
def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate.upgrade(engine)
    yield Store(engine)
    engine.dispose()


class BlockingDns(RecordingDns):
    """Holds every update until ``release`` is set: shows who waits on DNS."""

    def __init__(self):
        super().__init__()
        self.release, self.entered = threading.Event(), threading.Event()

    def unregister(self, name, addresses):
        self.entered.set()
        assert self.release.wait(30)
        return super().unregister(name, addresses)


def test_service_delete_never_waits_on_dns(store):
    client = BlockingDns()
    settings = _settings({"conductor.host": "test-host", "dns.retry_interval": 3600})
    drivers = DriverRegistry(DriverContext.create(settings, dns=client))
    dns_retry = reg.DnsRetry.for_settings(store, settings, client, _opener(store, drivers),
                                          None)
    workers = Workers(store, settings, drivers, dns_retry=dns_retry)
    try:
        service = Service(store, settings, workers,
                          AgentService(store, settings, workers, None), AlarmTable(), None,
                          Tokens(TokenRows(store.engine), 3600))
        node = store.create_node({"driver": "fake-hardware", "name": "web",
                                  "driver_internal_info": {
                                      reg.RECORDS_KEY: _records("web", "10.0.0.1")}})
        service.delete_node(node.uuid)           # returns while the DNS update hangs
        assert client.entered.wait(30)
        assert _row(store, node.uuid) is not None
        client.release.set()
    finally:
        client.release.set()
        workers.stop()
    assert client.calls == [("unregister", "web.lab.test.", ("10.0.0.1",))]
    assert store.list_dns_removals() == []
