"""Work routed through the database on each backend (conductor/engine/intents.py): a
request reaching conductor A for a node the hash ring maps to B is handed over in the
row; only B's poller starts it, A's never does; a restarted B keeps and starts it; a
dead B's handed node fails naming B and redeploys on A."""
from __future__ import annotations

import datetime

import pytest

from conductor.cluster.membership import stale_before
from conductor.cluster.ring import RingManager
from conductor.config import from_options
from conductor.db.conductors import ConductorRows
from conductor.db.schema import conductors
from conductor.drivers.context import DriverContext
from conductor.drivers.fake import FakeBoot
from conductor.drivers.registry import DriverRegistry
from conductor.engine import intents, workers
from conductor.engine.takeover import Takeover
from conductor.service.conductors import Conductors
from conductor.service.facade import Service
from conductor.service.ports import PortChanges
from tests.waiting import wait_until

HOSTS = ("cond-a", "cond-b")
FAKE = {f"{kind}_interface": "fake" for kind in ("boot", "power", "management")}
FAKE["deploy_interface"] = "fake"


class RecordingBoot(FakeBoot):
    """A boot interface that records which conductor ran ports_changed, with what."""

    calls: list[tuple[str, set[str]]] = []

    def ports_changed(self, task, old_macs) -> None:
        self.calls.append((task.host, set(old_macs)))


class Node:
    """One conductor over the shared database: its workers and its request facade."""

    def __init__(self, store, host, rows):
        self.host = host
        self.settings = from_options({"conductor.host": host, "agent.require_tls": False})
        self.ring = RingManager(rows, self.settings.conductor)
        self.drivers = DriverRegistry(DriverContext.create(self.settings),
                                      {("boot", "fake"): RecordingBoot})
        self.workers = workers.Workers(store, self.settings, self.drivers,
                                       owner_of=self.ring.conductor_or_none)
        service = Service.__new__(Service)       # the provisioning part of the facade
        service.store, service.settings, service.host = store, self.settings, host
        service.workers = self.workers
        service.conductors = Conductors(rows, self.ring, self.settings.conductor)
        self.service = service

    def stop(self):
        self.workers.stop()


@pytest.fixture
def cluster(store):
    rows = ConductorRows(store.engine)
    now = datetime.datetime.now(datetime.UTC)
    for host in HOSTS:
        rows.register(host, "", ["fake-hardware"], now, now - datetime.timedelta(seconds=60))
    made = {host: Node(store, host, rows) for host in HOSTS}
    yield made
    for one in made.values():
        one.stop()


def _settled(store, uuid):
    node = store.get_node(uuid)
    return node if node.reservation is None and node.provision_state == "active" else None


def test_a_request_runs_on_the_nodes_conductor_only(store, make_node, cluster):
    a, b = cluster["cond-a"], cluster["cond-b"]
    nodes = [make_node(name=f"n{i}", provision_state="available", **FAKE)
             for i in range(16)]
    owners = {n.uuid: a.ring.conductor_for(n) for n in nodes}
    assert set(owners.values()) == set(HOSTS)
    for node in nodes:
        a.service.set_provision_state(node.uuid, "active")
    theirs = {u for u, owner in owners.items() if owner == "cond-b"}
    for uuid in owners.keys() - theirs:                    # A's own: at once, in-process
        assert wait_until(lambda uuid=uuid: _settled(store, uuid)).conductor_affinity \
            == "cond-a"
    for uuid in theirs:                                    # B's: waiting in the row for B
        node = store.get_node(uuid)
        assert (node.provision_state, node.reservation, node.conductor_affinity) == \
            ("deploying", "cond-b", None)
    assert a.workers.pickup() == []                         # A never starts B's work
    assert sorted(b.workers.pickup()) == sorted(theirs)
    for uuid in theirs:
        assert wait_until(lambda uuid=uuid: _settled(store, uuid)).conductor_affinity \
            == "cond-b"
    assert b.workers.pickup() == []                         # started once


def test_manual_clean_steps_reach_the_nodes_conductor(store, make_node, cluster):
    a, b = cluster["cond-a"], cluster["cond-b"]
    node = next(n for n in (make_node(name=f"m{i}", provision_state="manageable", **FAKE)
                            for i in range(32)) if a.ring.conductor_for(n) == "cond-b")
    steps = [{"interface": "deploy", "step": "erase_devices", "args": {}}]
    a.service.set_provision_state(node.uuid, "clean", clean_steps=steps)
    row = store.get_node(node.uuid)
    assert row.driver_internal_info[intents.CLEAN_STEPS_KEY] == steps
    assert b.workers.pickup() == [node.uuid]
    done = wait_until(lambda: store.get_node(node.uuid).provision_state == "manageable"
                      and store.get_node(node.uuid))
    assert done.reservation is None
    assert intents.CLEAN_STEPS_KEY not in (done.driver_internal_info or {})


def _handed_to_b(store, make_node, a):
    node = next(n for n in (make_node(name=f"h{i}", provision_state="available", **FAKE)
                            for i in range(32)) if a.ring.conductor_for(n) == "cond-b")
    a.service.set_provision_state(node.uuid, "active")
    return node


def test_a_restarted_conductor_keeps_and_starts_what_was_handed_to_it(store, make_node,
                                                                      cluster):
    a, b = cluster["cond-a"], cluster["cond-b"]
    node = _handed_to_b(store, make_node, a)
    workers.recover(store, "cond-b", b.workers.drivers)      # B starting again
    row = store.get_node(node.uuid)
    assert (row.provision_state, row.reservation, row.last_error) == \
        ("deploying", "cond-b", None)
    assert b.workers.pickup() == [node.uuid]
    assert wait_until(lambda: _settled(store, node.uuid))


def test_a_dead_conductors_handed_node_fails_naming_it_and_redeploys(store, make_node,
                                                                     cluster):
    a = cluster["cond-a"]
    node = _handed_to_b(store, make_node, a)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=120)
    rows = ConductorRows(store.engine)
    rows.register("cond-a", "", ["fake-hardware"], later, later)   # A beats on, B does not
    ring = RingManager(rows, a.settings.conductor, clock=lambda: later)
    takeover = Takeover(store, rows, "cond-a", ring.conductor_or_none, a.workers.drivers,
                        lambda: stale_before(a.settings.conductor, later))
    assert takeover.sweep().failed == [node.uuid]
    row = store.get_node(node.uuid)
    assert (row.provision_state, row.reservation) == ("deploy failed", None)
    assert "Conductor cond-b died" in row.last_error
    a.service.conductors = Conductors(rows, ring, a.settings.conductor)
    a.service.set_provision_state(node.uuid, "active")       # now A's: runs in-process
    assert wait_until(lambda: _settled(store, node.uuid)).conductor_affinity == "cond-a"


def _of_b(store, make_node, a, prefix, **values):
    return next(n for n in (make_node(name=f"{prefix}{i}", **FAKE, **values)
                            for i in range(32)) if a.ring.conductor_for(n) == "cond-b")


def test_a_power_request_runs_on_the_nodes_conductor(store, make_node, cluster):
    a, b = cluster["cond-a"], cluster["cond-b"]
    node = _of_b(store, make_node, a, "p", provision_state="available",
                 power_state="power off")
    a.service.set_power_state(node.uuid, "power on", timeout=30)
    row = store.get_node(node.uuid)
    assert (row.reservation, row.conductor_affinity, row.target_power_state) == \
        ("cond-b", None, "power on")
    assert row.driver_internal_info[intents.POWER_KEY] == {"target": "power on",
                                                           "timeout": 30}
    assert a.workers.pickup() == []
    assert b.workers.pickup() == [node.uuid]
    done = wait_until(lambda: store.get_node(node.uuid).reservation is None
                      and store.get_node(node.uuid))
    assert (done.power_state, done.target_power_state, done.conductor_affinity) == \
        ("power on", None, "cond-b")
    assert intents.POWER_KEY not in (done.driver_internal_info or {})


def test_a_lock_of_this_conductors_own_is_not_work_handed_to_it(store, make_node, cluster):
    """A node never acted on, locked by this conductor (its power sync): not picked up."""
    b = cluster["cond-b"]
    node = make_node(name="synced", provision_state="available", reservation="cond-b")
    assert b.workers.pickup() == []
    assert store.get_node(node.uuid).reservation == "cond-b"


def test_an_agents_heartbeat_continues_on_the_nodes_conductor(store, make_node, cluster):
    """The agent's heartbeat reaches conductor A; the node is B's: A records it and
    hands it over, B's poller continues the steps (here the made-up row holds
    no agent B can reach, so B's attempt fails the deploy, saying so)."""
    from conductor.drivers import internal_info
    from conductor.drivers.deploy.heartbeat import Heartbeat
    from conductor.service.ramdisk import AgentService
    from ramdisk_agent.wire.agent_tokens import token_hash

    a, b = cluster["cond-a"], cluster["cond-b"]
    info = internal_info.with_heartbeat({"agent_token_hash": token_hash("T")},
                                        "http://127.0.0.1:9", "1.0", "then", None)
    node = next(n for n in (make_node(
        name=f"w{i}", **{**FAKE, "deploy_interface": "direct"},
        provision_state="wait call-back", target_provision_state="active",
        driver_internal_info=info) for i in range(32)) if a.ring.conductor_for(n) == "cond-b")
    agent = AgentService(store, a.settings, a.workers, host_agents=None)
    agent.heartbeat(node.uuid, Heartbeat("http://127.0.0.1:9", "T", "1.0", None))
    row = store.get_node(node.uuid)
    assert (row.provision_state, row.reservation, row.conductor_affinity) == \
        ("wait call-back", "cond-b", None)
    assert row.driver_internal_info[intents.HEARTBEAT_KEY] is True
    assert a.workers.pickup() == []
    assert b.workers.pickup() == [node.uuid]
    done = wait_until(lambda: store.get_node(node.uuid).reservation is None
                      and store.get_node(node.uuid))
    assert done.conductor_affinity == "cond-b"
    assert done.provision_state == "deploy failed"        # B called the agent: no token
    assert "Connection to agent failed" in done.last_error    # copy in this made-up row
    assert intents.HEARTBEAT_KEY not in (done.driver_internal_info or {})


def test_a_port_change_runs_its_boot_side_on_the_nodes_conductor(store, make_node, cluster):
    """A port deleted through conductor A (an API process, say) for a node of B: A
    writes the row and passes the lock to B with the old MACs; B's poller drops the
    MAC's boot files and DHCP entry where they are, on B."""
    a, b = cluster["cond-a"], cluster["cond-b"]
    RecordingBoot.calls = []
    node = _of_b(store, make_node, a, "ports", provision_state="clean wait")
    gone = store.create_port({"address": "52:54:00:00:00:0a", "node_id": node.id})
    store.create_port({"address": "52:54:00:00:00:0b", "node_id": node.id})
    ports = PortChanges(store, "cond-a", a.drivers,
                        owner_of=a.service.conductors.shown_conductor)
    ports.delete(store.get_port(gone.uuid))
    row = store.get_node(node.uuid)
    assert (row.provision_state, row.reservation, row.conductor_affinity) == \
        ("clean wait", "cond-b", None)
    assert row.driver_internal_info[intents.PORTS_KEY] == ["52:54:00:00:00:0a",
                                                           "52:54:00:00:00:0b"]
    assert RecordingBoot.calls == []                      # nothing done on A
    assert a.workers.pickup() == []
    assert b.workers.pickup() == [node.uuid]
    done = wait_until(lambda: store.get_node(node.uuid).reservation is None
                      and store.get_node(node.uuid))
    assert RecordingBoot.calls == [("cond-b", {"52:54:00:00:00:0a", "52:54:00:00:00:0b"})]
    assert (done.provision_state, done.conductor_affinity) == ("clean wait", "cond-b")
    assert intents.PORTS_KEY not in (done.driver_internal_info or {})


def test_a_handed_port_change_a_restart_released_is_done_at_start(store, make_node, cluster):
    b = cluster["cond-b"]
    RecordingBoot.calls = []
    node = make_node(name="restart", provision_state="clean wait", reservation="cond-b",
                     boot_interface="fake",
                     driver_internal_info={intents.PORTS_KEY: ["52:54:00:00:00:0c"]})
    workers.recover(store, "cond-b", b.drivers)
    row = store.get_node(node.uuid)
    assert RecordingBoot.calls == [("cond-b", {"52:54:00:00:00:0c"})]
    assert (row.reservation, row.conductor_affinity) == (None, "cond-b")
    assert intents.PORTS_KEY not in (row.driver_internal_info or {})
    assert b.workers.pickup() == []        # no mark left to mistake for handed work


def test_no_work_is_handed_to_a_conductor_that_died_after_the_ring_was_built(
        store, make_node, cluster):
    a = cluster["cond-a"]
    node = _of_b(store, make_node, a, "d", provision_state="available")
    # B stops beating: its row goes stale while A's ring (rebuilt every 15 s) still
    # names it, as after a takeover the survivors already made
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    with store.engine.begin() as conn:
        conn.execute(conductors.update().where(conductors.c.hostname == "cond-b")
                     .values(updated_at=old))
    assert a.ring.conductor_for(node) == "cond-b"
    a.service.set_provision_state(node.uuid, "active")       # A's now: runs in-process
    assert wait_until(lambda: _settled(store, node.uuid)).conductor_affinity == "cond-a"
    assert a.ring.conductor_for(node) == "cond-a"             # and the ring was rebuilt
