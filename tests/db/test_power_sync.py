"""Power-state sync against the real database, with a fake BMC per node (a "lab").

The lab is the hardware: its power state is separate from the node's recorded
one, so it can change behind metalcast's back, stop answering, or ignore
commands. It is registered as the ``fake`` power interface for these tests only.
"""
from __future__ import annotations

import logging
import threading

import pytest

from conductor import errors
from conductor.config import from_options
from conductor.drivers import base
from conductor.drivers.base import PowerState
from conductor.drivers.context import DriverContext
from conductor.drivers.registry import DriverRegistry
from conductor.engine import power_sync
from conductor.engine.power_sync import Outcome
from conductor.engine.workers import Workers
from tests.waiting import wait_until

HOST = "host-a"
ON, OFF = PowerState.ON.value, PowerState.OFF.value


class Lab:
    """Simulated BMCs by node UUID: power state, outages, ignored commands, calls."""

    def __init__(self):
        self.power: dict[str, PowerState] = {}
        self.down: set[str] = set()       # BMC does not answer
        self.stubborn: set[str] = set()   # BMC accepts set_power but nothing changes
        self.broken: set[str] = set()     # the driver itself has a bug
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()


class LabPower(base.PowerInterface):
    def __init__(self, context, lab: Lab):
        super().__init__(context)
        self.lab = lab

    def _lab(self) -> Lab:
        return self.lab

    def get_power_state(self, task) -> PowerState:
        lab, uuid = self._lab(), task.node.uuid
        with lab.lock:
            lab.calls.append(("get", uuid))
        if uuid in lab.broken:
            raise KeyError("a bug")
        if uuid in lab.down:
            raise errors.DriverError(reason=f"BMC of {uuid} timed out")
        return lab.power.get(uuid, PowerState.OFF)

    def set_power_state(self, task, state, timeout=None) -> None:
        lab, uuid = self._lab(), task.node.uuid
        with lab.lock:
            lab.calls.append(("set", uuid))
        if uuid in lab.down:
            raise errors.DriverError(reason=f"BMC of {uuid} timed out")
        if uuid not in lab.stubborn:
            lab.power[uuid] = PowerState(state)

    def reboot(self, task, timeout=None) -> None:
        self.set_power_state(task, PowerState.ON)


@pytest.fixture
def settings():
    return from_options({"conductor.host": HOST, "conductor.sync_power_state_workers": 4,
                         "conductor.power_state_sync_max_retries": 3})


@pytest.fixture
def lab():
    return Lab()


@pytest.fixture
def drivers(settings, lab):
    """The drivers of these tests: fake power answers from the simulated lab."""
    return DriverRegistry(DriverContext.create(settings),
                          {("power", "fake"): lambda ctx: LabPower(ctx, lab)})


@pytest.fixture
def sweep(store, settings, drivers):
    def run(options: dict | None = None):
        used = from_options(options, settings) if options else settings
        return power_sync.sync_power_states(store, used, drivers)
    return run


def _node(make_node, name, power=ON, state="active", **values):
    values.setdefault("power_interface", "fake")
    return make_node(name=name, power_state=power, provision_state=state, **values)


def test_mismatch_is_recorded_with_a_warning(store, make_node, lab, sweep, caplog):
    changed = _node(make_node, "changed", power=ON)
    same = _node(make_node, "same", power=OFF)
    lab.power[changed.uuid] = PowerState.OFF
    with caplog.at_level(logging.WARNING, logger="conductor.engine.power_sync"):
        summary = sweep()
    assert summary.outcomes == {changed.uuid: Outcome.RECORDED, same.uuid: Outcome.IN_SYNC}
    assert store.get_node(changed.uuid).power_state == OFF
    assert store.get_node(same.uuid).power_state == OFF
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and changed.uuid in warnings[0] and "'power off'" in warnings[0]
    for uuid in (changed.uuid, same.uuid):
        assert store.get_node(uuid).reservation is None
    assert sweep().outcomes == {changed.uuid: Outcome.IN_SYNC, same.uuid: Outcome.IN_SYNC}


def test_unknown_recorded_state_is_filled_in_silently(store, make_node, lab, sweep, caplog):
    node = _node(make_node, "unknown", power=None)
    lab.power[node.uuid] = PowerState.ON
    with caplog.at_level(logging.WARNING, logger="conductor.engine.power_sync"):
        assert sweep().outcomes == {node.uuid: Outcome.RECORDED}
    assert store.get_node(node.uuid).power_state == ON
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_force_pushes_the_recorded_state_to_the_hardware(store, make_node, lab, sweep):
    node = _node(make_node, "forced", power=ON)
    lab.power[node.uuid] = PowerState.OFF
    assert sweep({"conductor.force_power_state_during_sync": True}).outcomes == {
        node.uuid: Outcome.FORCED}
    assert lab.power[node.uuid] is PowerState.ON
    assert store.get_node(node.uuid).power_state == ON
    assert ("set", node.uuid) in lab.calls
    # The next sweep finds the states equal and forgets the attempt.
    assert sweep({"conductor.force_power_state_during_sync": True}).outcomes == {
        node.uuid: Outcome.IN_SYNC}
    fresh = store.get_node(node.uuid)
    assert power_sync.FAILURES_KEY not in fresh.driver_internal_info
    assert not fresh.maintenance


def test_force_never_powers_off_a_node_that_must_stay_on(store, make_node, lab, sweep):
    node = _node(make_node, "keep-on", power=OFF, disable_power_off=True)
    lab.power[node.uuid] = PowerState.ON
    assert sweep({"conductor.force_power_state_during_sync": True}).outcomes == {
        node.uuid: Outcome.RECORDED}
    assert lab.power[node.uuid] is PowerState.ON
    assert ("set", node.uuid) not in lab.calls


def test_force_that_does_not_stick_ends_in_maintenance(store, make_node, lab, sweep):
    node = _node(make_node, "stubborn", power=ON)
    lab.power[node.uuid] = PowerState.OFF
    lab.stubborn.add(node.uuid)
    for attempt in (1, 2, 3):
        assert sweep({"conductor.force_power_state_during_sync": True}).outcomes == {
            node.uuid: Outcome.FORCED}
        fresh = store.get_node(node.uuid)
        assert fresh.driver_internal_info[power_sync.FAILURES_KEY] == attempt
        assert not fresh.maintenance
    assert sweep({"conductor.force_power_state_during_sync": True}).outcomes == {
        node.uuid: Outcome.MAINTENANCE}
    fresh = store.get_node(node.uuid)
    assert (fresh.maintenance, fresh.fault, fresh.power_state) == (True, "power failure", OFF)
    assert "3 time(s)" in fresh.maintenance_reason
    assert [c for c in lab.calls if c[0] == "set"] == [("set", node.uuid)] * 3


def test_bmc_failures_lead_to_maintenance_and_recovery(store, make_node, lab, sweep):
    node = _node(make_node, "flaky", power=ON)
    lab.power[node.uuid] = PowerState.ON
    lab.down.add(node.uuid)
    for count in (1, 2):
        assert sweep().outcomes == {node.uuid: Outcome.FAILED}
        fresh = store.get_node(node.uuid)
        assert fresh.driver_internal_info[power_sync.FAILURES_KEY] == count
        assert (fresh.maintenance, fresh.fault, fresh.power_state) == (False, None, ON)
    assert sweep().outcomes == {node.uuid: Outcome.MAINTENANCE}
    fresh = store.get_node(node.uuid)
    assert (fresh.maintenance, fresh.fault, fresh.power_state) == (True, "power failure", None)
    assert "3 time(s) in a row" in fresh.maintenance_reason
    assert f"BMC of {node.uuid} timed out" in fresh.maintenance_reason
    assert fresh.reservation is None
    # Still down: checked again, stays in maintenance, nothing rewritten.
    assert sweep().outcomes == {node.uuid: Outcome.FAILED}
    assert store.get_node(node.uuid).maintenance_reason == fresh.maintenance_reason
    # The BMC answers again: out of maintenance by itself, the real state recorded.
    lab.down.discard(node.uuid)
    lab.power[node.uuid] = PowerState.OFF
    assert sweep().outcomes == {node.uuid: Outcome.RECOVERED}
    fresh = store.get_node(node.uuid)
    assert (fresh.maintenance, fresh.fault, fresh.maintenance_reason) == (False, None, None)
    assert fresh.power_state == OFF
    assert power_sync.FAILURES_KEY not in fresh.driver_internal_info
    assert sweep().outcomes == {node.uuid: Outcome.IN_SYNC}


def test_one_good_answer_resets_the_failure_count(store, make_node, lab, sweep):
    node = _node(make_node, "blip", power=ON, driver_internal_info={"keep": 1})
    lab.power[node.uuid] = PowerState.ON
    lab.down.add(node.uuid)
    sweep(), sweep()
    lab.down.discard(node.uuid)
    assert sweep().outcomes == {node.uuid: Outcome.IN_SYNC}
    assert store.get_node(node.uuid).driver_internal_info == {"keep": 1}
    lab.down.add(node.uuid)
    sweep(), sweep()
    assert not store.get_node(node.uuid).maintenance


def test_operator_maintenance_is_left_alone(store, make_node, lab, sweep):
    mine = _node(make_node, "operator", maintenance=True, maintenance_reason="disk swap")
    other_fault = _node(make_node, "clean-fault", maintenance=True, fault="clean failure")
    assert sweep().outcomes == {}
    for node in (mine, other_fault):
        assert store.get_node(node.uuid).maintenance
    assert lab.calls == []


def test_driver_bug_counts_as_failure_and_frees_the_lock(store, make_node, lab, sweep):
    buggy = _node(make_node, "buggy")
    fine = _node(make_node, "fine")
    lab.power[fine.uuid] = PowerState.ON
    lab.broken.add(buggy.uuid)
    summary = sweep()
    assert summary.outcomes == {buggy.uuid: Outcome.FAILED, fine.uuid: Outcome.IN_SYNC}
    fresh = store.get_node(buggy.uuid)
    assert fresh.reservation is None
    assert fresh.driver_internal_info[power_sync.FAILURES_KEY] == 1


def test_failing_nodes_are_checked_first(store, make_node, lab, sweep):
    healthy = [_node(make_node, f"healthy-{i}") for i in range(3)]
    failing = _node(make_node, "failing", driver_internal_info={power_sync.FAILURES_KEY: 1})
    in_maintenance = _node(make_node, "power-fault", maintenance=True,
                           fault="power failure")
    for node in healthy + [failing, in_maintenance]:
        lab.power[node.uuid] = PowerState.ON
    sweep({"conductor.sync_power_state_workers": 1})
    order = [uuid for op, uuid in lab.calls if op == "get"]
    assert set(order[:2]) == {failing.uuid, in_maintenance.uuid}
    assert order[2:] == [n.uuid for n in healthy]


def test_locked_and_busy_nodes_are_skipped(store, make_node, lab, sweep):
    locked = _node(make_node, "locked")
    store.reserve(locked, "host-b")
    pending = _node(make_node, "pending", target_power_state=OFF)
    for node in (locked, pending):
        lab.power[node.uuid] = PowerState.OFF
    assert sweep().outcomes == {}
    assert lab.calls == []
    assert store.get_node(locked.uuid).reservation == "host-b"
    assert store.get_node(locked.uuid).power_state == ON


def test_node_locked_after_listing_is_read_but_never_written(store, make_node, lab,
                                                             settings, drivers):
    node = _node(make_node, "raced")
    listed = store.get_node(node.uuid)
    store.reserve(node, "host-b")  # someone takes it between the listing and the check
    lab.power[node.uuid] = PowerState.ON
    # The BMC agrees: a lock-free read (Ironic's shared lock) and nothing to write.
    assert power_sync.check_node(store, listed, HOST, settings, drivers) is Outcome.IN_SYNC
    # The BMC disagrees: recording it needs the lock, which host-b holds: skipped.
    lab.power[node.uuid] = PowerState.OFF
    assert power_sync.check_node(store, listed, HOST, settings, drivers) is Outcome.SKIPPED
    after = store.get_node(node.uuid)
    assert after.reservation == "host-b" and after.power_state == ON


@pytest.mark.parametrize("state", ["enroll", "verifying", "wait call-back", "clean wait",
                                   "inspect wait", "rescue wait", "service wait",
                                   "adopt failed"])
def test_enroll_and_wait_states_are_skipped(store, make_node, lab, sweep, state):
    node = _node(make_node, "skipped", state=state)
    lab.power[node.uuid] = PowerState.OFF
    assert sweep().outcomes == {}
    assert store.get_node(node.uuid).power_state == ON


@pytest.mark.parametrize("state", ["manageable", "available", "active", "deploy failed",
                                   "clean failed", "error", "rescue"])
def test_stable_and_failed_states_are_synced(store, make_node, lab, sweep, state):
    node = _node(make_node, "synced", state=state)
    lab.power[node.uuid] = PowerState.OFF
    assert sweep().outcomes == {node.uuid: Outcome.RECORDED}


def test_only_this_conductors_nodes_and_enabled_drivers(store, make_node, lab, sweep):
    mine = _node(make_node, "mine", conductor_affinity=HOST)
    unclaimed = _node(make_node, "unclaimed")
    theirs = _node(make_node, "theirs", conductor_affinity="host-b")
    assert set(sweep().outcomes) == {mine.uuid, unclaimed.uuid}
    assert sweep({"conductor.enabled_hardware_types": "redfish"}).outcomes == {}
    assert store.get_node(theirs.uuid).power_state == ON


def test_parallel_sweep_covers_every_node_once(store, make_node, lab, sweep):
    nodes = [_node(make_node, f"many-{i}", power=ON) for i in range(20)]
    for node in nodes[::2]:
        lab.power[node.uuid] = PowerState.ON
    summary = sweep({"conductor.sync_power_state_workers": 8})
    assert summary.counts == {"in sync": 10, "recorded": 10}
    # nodes that agree are read once, lock-free; the others again under the lock
    reads = [uuid for op, uuid in lab.calls]
    assert sorted(set(reads)) == sorted(n.uuid for n in nodes)
    assert all(reads.count(n.uuid) == 1 for n in nodes[::2])
    assert all(store.get_node(n.uuid).reservation is None for n in nodes)


def test_bad_sync_settings_are_refused(store):
    for option in ("conductor.sync_power_state_workers",
                   "conductor.power_state_sync_max_retries"):
        with pytest.raises(errors.ConfigError, match=option):
            bad = from_options({option: 0})
            power_sync.sync_power_states(store, bad, DriverRegistry(DriverContext.create(bad)))


def test_workers_run_the_sync_periodically(store, make_node, lab, drivers):
    node = _node(make_node, "periodic", power=ON)
    lab.power[node.uuid] = PowerState.OFF
    settings = from_options({"conductor.host": HOST, "conductor.sync_power_state_interval": 0.05,
                             "conductor.heartbeat_interval": 60})
    pool = Workers(store, settings, drivers,
                   power_sync=power_sync.PowerSync.for_settings(store, settings, drivers))
    pool.start()
    try:
        wait_until(lambda: store.get_node(node.uuid).power_state == OFF, 30, 0.05,
                   "the periodic sync to power the node off")
    finally:
        pool.stop()
    assert store.get_node(node.uuid).reservation is None


def test_interval_zero_disables_the_sync(store, drivers):
    settings = from_options({"conductor.host": HOST, "conductor.sync_power_state_interval": 0})
    assert power_sync.PowerSync.for_settings(store, settings, drivers) is None
    pool = Workers(store, settings, drivers)
    pool.start()
    pool.stop()
    assert pool.power_sync is None
