"""Takeover of a dead conductor's nodes on each backend (conductor/engine/takeover.py):
its locks released, its transient states failed naming it, wait states kept and
their callback timeout run by the new owner, each orphan handled by the conductor the
hash ring maps it to and by no other, and no split brain when the dead one returns."""
from __future__ import annotations

import datetime

from conductor.cluster.membership import stale_before
from conductor.cluster.ring import RingManager
from conductor.config import from_options
from conductor.db.conductors import ConductorRows
from conductor.drivers.context import DriverContext
from conductor.drivers.registry import DriverRegistry
from conductor.engine import workers
from conductor.engine.takeover import Takeover

T0 = datetime.datetime(2026, 12, 7, 12, 0, 0, tzinfo=datetime.UTC)
LATER = T0 + datetime.timedelta(seconds=120)     # past heartbeat_timeout (60 s)
HW = ["fake-hardware"]


def _settings(host):
    return from_options({"conductor.host": host})


class Cluster:
    """Conductor rows on the test database and one Takeover per live conductor."""

    def __init__(self, store):
        self.store = store
        self.rows = ConductorRows(store.engine)
        self.now = LATER
        self.drivers = DriverRegistry(DriverContext.create(from_options({})))

    def register(self, host, at):
        self.rows.register(host, "", HW, at, at - datetime.timedelta(seconds=60))

    def ring(self, host):
        settings = _settings(host).conductor
        return RingManager(self.rows, settings, clock=lambda: self.now)

    def takeover(self, host):
        settings = _settings(host).conductor
        return Takeover(self.store, self.rows, host, self.ring(host).conductor_or_none,
                        self.drivers, lambda: stale_before(settings, self.now))


def _dead_b_alive_a(store):
    cluster = Cluster(store)
    cluster.register("cond-b", T0)          # stale at LATER
    cluster.register("cond-a", LATER)
    return cluster


def test_dead_conductors_locks_released_and_transient_states_failed(store, make_node):
    cluster = _dead_b_alive_a(store)
    deploying = make_node(name="deploying", provision_state="deploying",
                          target_provision_state="active", conductor_affinity="cond-b",
                          reservation="cond-b")
    cleaning = make_node(name="cleaning", provision_state="cleaning",
                         target_provision_state="available", conductor_affinity="cond-b")
    powering = make_node(name="powering", provision_state="available",
                         conductor_affinity="cond-b", reservation="cond-b",
                         target_power_state="power on")
    active = make_node(name="active", provision_state="active", conductor_affinity="cond-b",
                       boot_interface="fake")
    # A boot interface that cannot be built: the node stays active, the error shows.
    broken = make_node(name="broken", provision_state="active", conductor_affinity="cond-b",
                       boot_interface="no-such-boot")
    summary = cluster.takeover("cond-a").sweep()

    node = store.get_node(deploying.uuid)
    assert (node.provision_state, node.reservation) == ("deploy failed", None)
    assert "cond-b" in node.last_error and "deploying" in node.last_error
    assert node.conductor_affinity == "cond-a"
    node = store.get_node(cleaning.uuid)
    assert (node.provision_state, node.reservation) == ("clean failed", None)
    assert "Conductor cond-b died" in node.last_error
    node = store.get_node(powering.uuid)
    assert (node.provision_state, node.reservation) == ("available", None)
    assert node.conductor_affinity == "cond-a"
    node = store.get_node(active.uuid)
    assert (node.provision_state, node.reservation, node.last_error) == \
        ("active", None, None)
    assert node.conductor_affinity == "cond-a"
    node = store.get_node(broken.uuid)
    assert (node.provision_state, node.reservation) == ("active", None)
    assert "dead conductor cond-b" in node.last_error and "no-such-boot" in node.last_error
    assert sorted(summary.released) == sorted([deploying.uuid, powering.uuid])
    assert sorted(summary.failed) == sorted([deploying.uuid, cleaning.uuid])
    assert sorted(summary.reprepared) == sorted([active.uuid, broken.uuid])
    assert not cluster.takeover("cond-a").sweep()     # nothing left the second time


def test_live_conductors_nodes_are_left_alone(store, make_node):
    cluster = _dead_b_alive_a(store)
    cluster.register("cond-c", LATER)
    busy = make_node(name="busy", provision_state="deploying", conductor_affinity="cond-c",
                     reservation="cond-c")
    for host in ("cond-a", "cond-c"):
        assert not cluster.takeover(host).sweep()
    node = store.get_node(busy.uuid)
    assert (node.provision_state, node.reservation, node.last_error) == \
        ("deploying", "cond-c", None)


def test_wait_call_back_is_kept_and_its_timeout_runs_on_the_new_owner(store, make_node):
    cluster = _dead_b_alive_a(store)
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    waiting = make_node(name="waiting", provision_state="wait call-back",
                        target_provision_state="active", conductor_affinity="cond-b",
                        provision_updated_at=long_ago, boot_interface="fake")
    settings = _settings("cond-a")
    # Before the takeover the node is the dead conductor's: cond-a does not time it out.
    assert workers.check_wait_timeouts(store, settings, cluster.drivers) == 0

    summary = cluster.takeover("cond-a").sweep()
    assert summary.resumed == [waiting.uuid]
    node = store.get_node(waiting.uuid)
    assert (node.provision_state, node.reservation, node.last_error) == \
        ("wait call-back", None, None)
    assert node.conductor_affinity == "cond-a"
    # Its agent may still call back (any API process, then any worker takes the lock);
    # if it does not, the new owner's callback timeout ends the wait.
    assert workers.check_wait_timeouts(store, settings, cluster.drivers) == 1
    node = store.get_node(waiting.uuid)
    assert node.provision_state == "deploy failed"
    assert "deploy_callback_timeout" in node.last_error


def test_each_orphan_goes_to_its_ring_owner_only(store, make_node):
    cluster = _dead_b_alive_a(store)
    cluster.register("cond-c", LATER)
    orphans = [make_node(name=f"n{i}", provision_state="cleaning",
                         conductor_affinity="cond-b", reservation="cond-b")
               for i in range(40)]
    ring = cluster.ring("cond-a")
    owners = {n.uuid: ring.conductor_for(store.get_node(n.uuid)) for n in orphans}
    assert set(owners.values()) == {"cond-a", "cond-c"}    # the ring splits them

    first = cluster.takeover("cond-a").sweep()
    assert sorted(first.failed) == sorted(u for u, o in owners.items() if o == "cond-a")
    for uuid, owner in owners.items():     # cond-c's share is untouched so far
        node = store.get_node(uuid)
        assert node.reservation == (None if owner == "cond-a" else "cond-b")
    second = cluster.takeover("cond-c").sweep()
    assert sorted(second.failed) == sorted(u for u, o in owners.items() if o == "cond-c")
    for uuid, owner in owners.items():
        node = store.get_node(uuid)
        assert (node.provision_state, node.reservation, node.conductor_affinity) == \
            ("clean failed", None, owner)


def test_a_conductor_that_comes_back_takes_nothing_back(store, make_node):
    cluster = _dead_b_alive_a(store)
    orphan = make_node(name="orphan", provision_state="deploying",
                       conductor_affinity="cond-b", reservation="cond-b")
    cluster.takeover("cond-a").sweep()
    cluster.register("cond-b", LATER)       # restarted: alive again
    for host in ("cond-a", "cond-b"):
        assert not cluster.takeover(host).sweep()
    node = store.get_node(orphan.uuid)
    assert (node.provision_state, node.reservation, node.conductor_affinity) == \
        ("deploy failed", None, "cond-a")


def test_a_node_taken_by_a_request_meanwhile_is_left_to_it(store, make_node):
    """The request's conditional UPDATE wins: takeover defers (the next pass decides)."""
    cluster = _dead_b_alive_a(store)
    node = make_node(name="raced", provision_state="available", conductor_affinity="cond-b")
    takeover = cluster.takeover("cond-a")
    store.reserve(store.get_node(node.uuid), "cond-a")    # a request holds it now
    assert not takeover.sweep()
    assert store.get_node(node.uuid).reservation == "cond-a"


def test_a_port_change_handed_to_the_dead_conductor_leaves_no_mark(store, make_node):
    """Its boot side is redone by the boot interface's take_over for the MACs the node
    has now; the mark must not outlive the lock (it would read as work handed over)."""
    cluster = _dead_b_alive_a(store)
    node = make_node(name="ports", provision_state="clean wait", reservation="cond-b",
                     conductor_affinity=None, boot_interface="fake",
                     driver_internal_info={"handed_ports": ["52:54:00:00:00:0a"], "x": 1})
    summary = cluster.takeover("cond-a").sweep()
    assert summary.released == [node.uuid] and summary.resumed == [node.uuid]
    row = store.get_node(node.uuid)
    assert (row.reservation, row.conductor_affinity, row.driver_internal_info) == \
        (None, "cond-a", {"x": 1})
