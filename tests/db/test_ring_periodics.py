"""Periodic tasks follow the hash ring, on each backend: with two live conductors,
each one's power sync, callback timeouts, DNS retries and patch host audits cover
exactly the nodes the ring maps to it, whoever acted on a node last, so together they
cover every node once."""
from __future__ import annotations

import datetime

import pytest

from conductor.cluster.ring import RingManager
from conductor.config import from_options
from conductor.db.conductors import ConductorRows
from conductor.dns import registration as reg
from conductor.dns.removals import PendingRemovals
from conductor.drivers.base import PowerState
from conductor.drivers.context import DriverContext
from conductor.drivers.registry import DriverRegistry
from conductor.engine import power_sync, workers
from conductor.engine.power_sync import Outcome
from conductor.engine.task import Task
from tests.db.test_power_sync import Lab, LabPower
from tests.integration.conductor.patching.test_host_audit import RecordingCommands
from tests.unit.conductor.dns.test_registration import RecordingDns

HOSTS = ("cond-a", "cond-b")
#: Who acted on a node last: a live conductor, a dead one, or no one.
AFFINITIES = ("cond-a", "cond-b", "cond-gone", None)


def _settings(host):
    return from_options({"conductor.host": host, "conductor.sync_power_state_workers": 2})


@pytest.fixture
def cluster(store):
    """Both conductors registered (alive now); one ring manager each."""
    rows = ConductorRows(store.engine)
    now = datetime.datetime.now(datetime.UTC)
    for host in HOSTS:
        rows.register(host, "", ["fake-hardware"], now, now - datetime.timedelta(seconds=60))
    return {host: RingManager(rows, _settings(host).conductor) for host in HOSTS}


def _nodes(make_node, count, **values):
    return [make_node(name=f"n{i}", conductor_affinity=AFFINITIES[i % len(AFFINITIES)],
                      **values) for i in range(count)]


def test_power_sync_covers_each_node_once_by_its_ring_owner(store, make_node, cluster):
    labs = {host: Lab() for host in HOSTS}     # the BMCs as each conductor reaches them
    nodes = _nodes(make_node, 40, power_interface="fake", provision_state="active",
                   power_state="power off")
    for node in nodes:
        for lab in labs.values():
            lab.power[node.uuid] = PowerState.ON   # changed behind our back
    owners = {n.uuid: cluster["cond-a"].conductor_for(store.get_node(n.uuid)) for n in nodes}
    assert set(owners.values()) == set(HOSTS)

    for host in HOSTS:
        settings = _settings(host)
        drivers = DriverRegistry(DriverContext.create(settings), {
            ("power", "fake"): lambda ctx, lab=labs[host]: LabPower(ctx, lab)})
        summary = power_sync.sync_power_states(store, settings, drivers,
                                               owner_of=cluster[host].conductor_or_none)
        share = {u for u, owner in owners.items() if owner == host}
        assert set(summary.outcomes) == share
        assert set(summary.outcomes.values()) == {Outcome.RECORDED}
        assert {uuid for _, uuid in labs[host].calls} == share   # no BMC of the other's
    assert {store.get_node(n.uuid).power_state for n in nodes} == {"power on"}


def test_callback_timeouts_run_on_the_ring_owner_only(store, make_node, cluster):
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    nodes = _nodes(make_node, 24, provision_state="wait call-back",
                   target_provision_state="active", provision_updated_at=long_ago)
    owners = {n.uuid: cluster["cond-a"].conductor_for(store.get_node(n.uuid)) for n in nodes}
    drivers = DriverRegistry(DriverContext.create(from_options({})))
    for host in HOSTS:
        share = {u for u, owner in owners.items() if owner == host}
        failed = workers.check_wait_timeouts(store, _settings(host), drivers,
                                             owner_of=cluster[host].conductor_or_none)
        assert failed == len(share)
        for uuid in share:
            assert store.get_node(uuid).provision_state == "deploy failed"
    assert {store.get_node(n.uuid).provision_state for n in nodes} == {"deploy failed"}


def test_dns_retries_and_host_audits_run_on_the_ring_owner_only(store, make_node, cluster):
    """Issue 17 item 3's other periodic tasks: a pending DNS registration is retried,
    and a host agent asked to re-report (HELLO_AGENT), by the node's ring owner only."""
    record = {"host_agent_token_hash": "0" * 64, "host_agent_command_token": "sealed",
              "host_agent_url": "https://192.0.2.7:9999"}
    nodes = [make_node(name=f"n{i}", provision_state="active",
                       conductor_affinity=AFFINITIES[i % len(AFFINITIES)],
                       driver_internal_info={**record, reg.PENDING_KEY: {
                           "action": "register", "attempts": 1, "stale": [],
                           "wanted": {"label": f"n{i}", "fqdn": f"n{i}.lab.test.",
                                      "addresses": [f"10.0.0.{i + 1}"]}}})
             for i in range(24)]
    owners = {n.uuid: cluster["cond-a"].conductor_for(store.get_node(n.uuid)) for n in nodes}
    names = {n.uuid: n.name for n in nodes}
    for host in HOSTS:
        share = {u for u, owner in owners.items() if owner == host}
        settings = _settings(host)
        client = RecordingDns()
        drivers = DriverRegistry(DriverContext.create(settings, dns=client))
        retry = reg.DnsRetry(store, settings, client,
                             lambda node, d=drivers, h=host: Task(store, node, h, d),
                             PendingRemovals(store, settings, client, None),
                             owner_of=cluster[host].conductor_or_none)
        assert retry.sweep() == dict.fromkeys(share, True)
        assert {name for _, name, _ in client.calls} == {names[u] for u in share}
        audit = RecordingCommands(store, settings, owner_of=cluster[host].conductor_or_none)
        assert set(audit.audit()) == share
    assert not any(reg.PENDING_KEY in store.get_node(n.uuid).driver_internal_info
                   for n in nodes)
