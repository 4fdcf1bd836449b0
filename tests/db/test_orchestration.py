"""The persisted strategy on each backend: one strategy across conductors, writes over
the revision read, the runner's lease, and a conductor restarted mid-apply resuming
the running step from the database (the host it locked is unlocked in the end).

Hosts are real node rows (lock and unlock are their maintenance flag, through
ApplianceFleet); what their host agents would report is kept in the test."""
from __future__ import annotations

import pytest

from conductor import config, errors
from conductor.alarms import AlarmTable
from conductor.db.queries import Store
from conductor.db.strategies import StrategyRows
from conductor.orchestration.fleet import ApplianceFleet
from conductor.orchestration.hosts import map_hosts
from conductor.orchestration.orchestrator import Orchestrator

CREATE = {"controller-apply-type": "ignore", "storage-apply-type": "ignore",
          "worker-apply-type": "serial", "default-instance-action": "migrate"}


class ReportedFleet(ApplianceFleet):
    """ApplianceFleet over real node rows; the patch reports are the test's."""

    def __init__(self, store: Store, settings, reports: dict):
        super().__init__(store, settings, None, AlarmTable(), None)
        self.reports, self.installs, self.reboots = reports, [], []

    def hosts(self, names=None):
        views = [dict(report, hostname=name) for name, report in self.reports.items()
                 if names is None or name in names]
        filters = {"provision_state": "active"} if names is None else \
            {"provision_state": "active", "names": names}
        return map_hosts(self.store.list_nodes(filters), views, 180)

    def patches(self):
        return {"P1": {"patchstate": "Partial-Apply"}}

    def install(self, name):
        self.installs.append(name)
        self.reports[name]["state"] = "installing"
        return ""

    def reboot(self, name):
        self.reboots.append(name)


@pytest.fixture
def fleet_db(engines, make_node):
    reports = {}
    for name in ("w0", "w1"):
        make_node(name=name, provision_state="active", properties={"nodetype": "worker"})
        reports[name] = {"nodetype": "worker", "subfunctions": ["worker"], "state": "idle",
                         "patch_current": False, "requires_reboot": True,
                         "patch_failed": False, "interim_state": False, "secs_since_ack": 1}

    def conductor(host: str = "c1"):
        e = engines()
        settings = config.from_options({"conductor.host": host,
                                        "orchestration.stabilize_factor": 0})
        fleet = ReportedFleet(Store(e), settings, reports)
        return Orchestrator(StrategyRows(e), fleet, AlarmTable(), settings), fleet
    return conductor, reports


def test_one_strategy_across_conductors(fleet_db):
    conductor, _ = fleet_db
    first, _ = conductor("c1")
    second, _ = conductor("c2")
    made = first.create(CREATE)
    assert made["state"] == "ready-to-apply"
    with pytest.raises(errors.Conflict, match=made["uuid"]):
        second.create(CREATE)
    assert second.get()["uuid"] == made["uuid"]
    assert second.get(made["uuid"].upper())["uuid"] == made["uuid"]


def test_a_stale_write_loses(fleet_db):
    conductor, _ = fleet_db
    orchestrator, _ = conductor()
    orchestrator.create(CREATE)
    rows = orchestrator.rows
    row = rows.get()
    assert rows.save(row.uuid, row.state, row.document, row.revision)
    assert rows.save(row.uuid, row.state, row.document, row.revision) is None


def test_restart_mid_apply_resumes_and_unlocks(fleet_db):
    conductor, reports = fleet_db
    before, fleet = conductor("c1")
    before.create(CREATE)
    before.action({"action": "apply-all"})
    assert before.run_once()
    node = fleet.store.get_node("w0")
    assert node.maintenance and before.get()["uuid"] in node.maintenance_reason
    assert fleet.installs == ["w0"]
    # SIGKILL: nothing of `before` runs again. Another conductor may not take the
    # strategy over while the lease is fresh; the restarted one (same host) may.
    other, other_fleet = conductor("c2")
    assert not other.run_once() and other_fleet.installs == []
    after, fleet = conductor("c1")
    assert not after.run_once()                      # still installing: nothing changed
    assert fleet.installs == []                      # the install is not sent again
    reports["w0"].update(state="idle", patch_current=True, node_is_patched=True)
    after.run_once()
    assert fleet.reboots == ["w0"] and fleet.store.get_node("w0").maintenance
    reports["w0"].update(requires_reboot=False, node_is_patched=False)  # rebooted
    while after.run_once():
        pass
    assert not fleet.store.get_node("w0").maintenance
    assert after.get()["apply-phase"]["current-stage"] == 1
    assert fleet.installs == ["w1"] and fleet.store.get_node("w1").maintenance


def test_abort_after_restart_unlocks_the_host(fleet_db):
    conductor, reports = fleet_db
    before, _ = conductor()
    before.create(CREATE)
    before.action({"action": "apply-all"})
    before.run_once()
    after, fleet = conductor()
    shown = after.action({"action": "abort-stage", "stage-id": None})
    assert shown["state"] == "aborting"
    reports["w0"].update(state="idle", patch_current=False, patch_failed=True,
                         requires_reboot=False)
    while after.run_once():
        pass
    strategy = after.get()
    assert strategy["state"] == "aborted", strategy
    assert strategy["abort-phase"]["stages"][0]["steps"][0]["step-name"] == "unlock-hosts"
    assert not fleet.store.get_node("w0").maintenance
    assert not fleet.store.get_node("w1").maintenance and fleet.installs == []
    assert after.delete(False)["state"] == "aborted"
    assert after.get() is None


def test_delete_needs_force_while_applying(fleet_db):
    conductor, _ = fleet_db
    orchestrator, _ = conductor()
    orchestrator.create(CREATE)
    orchestrator.action({"action": "apply-all"})
    with pytest.raises(errors.Conflict, match="applying"):
        orchestrator.delete(False)
    assert orchestrator.get()["state"] == "applying"
    assert orchestrator.delete(True)["state"] == "applying"
    assert orchestrator.get() is None


def test_a_host_locked_before_a_crash_is_still_ours(fleet_db):
    """Killed after the lock and before the save: the resumed lock step owns the host
    (its maintenance reason names the strategy), so an abort unlocks it."""
    conductor, reports = fleet_db
    orchestrator, fleet = conductor()
    created = orchestrator.create(CREATE)
    reason = f"locked by sw-patch strategy {created['uuid']}"
    assert fleet.lock(["w0"], reason) == ["w0"] == fleet.lock(["w0"], reason)
    assert fleet.lock(["w0", "w1"], "locked by the operator") == ["w1"]
    assert fleet.store.get_node("w1").maintenance_reason == "locked by the operator"
    fleet.unlock(["w1"])
    assert not fleet.store.get_node("w1").maintenance
    orchestrator.action({"action": "apply-all"})
    orchestrator.run_once()
    orchestrator.action({"action": "abort"})
    reports["w0"].update(state="idle", patch_failed=True, requires_reboot=False)
    while orchestrator.run_once():
        pass
    assert orchestrator.get()["state"] == "aborted"
    assert not fleet.store.get_node("w0").maintenance
