"""Apply, abort, auto-abort, the next-stage rule and the completion percentage, step
by step, on a fleet twin whose hosts the test moves (install done, rebooted)."""
from __future__ import annotations

import dataclasses

import pytest

from conductor.alarms import Alarm
from conductor.orchestration import alarms, lifecycle, options
from conductor.orchestration.hosts import FleetHost
from conductor.orchestration.model import State, Strategy
from conductor.orchestration.patch_build import Snapshot
from conductor.orchestration.steps import Context

OPTIONS = options.parse({"controller-apply-type": "ignore", "storage-apply-type": "ignore",
                         "worker-apply-type": "serial", "default-instance-action": "migrate"})


class FleetTwin:
    """The Fleet the steps act on, in memory: what a host agent would report."""

    def __init__(self, names, reboot=True):
        self.reboot_required = reboot
        self.by_name = {n: FleetHost(n, f"uuid-{n}", frozenset({"worker"}),
                                     patch_current=False, requires_reboot=reboot)
                        for n in names}
        self.alarm_list: list[Alarm] = []
        self.calls: list[tuple[str, str]] = []

    def hosts(self, names=None):
        return {n: h for n, h in self.by_name.items() if names is None or n in names}

    def alarms(self):
        return list(self.alarm_list)

    def set(self, name, **fields):
        self.by_name[name] = dataclasses.replace(self.by_name[name], **fields)

    def lock(self, names, reason):
        ours = []
        for name in names:
            self.calls.append(("lock", name))
            if not self.by_name[name].locked:
                self.set(name, administrative="locked", operational="disabled",
                         availability="online")
                ours.append(name)
        return ours

    def unlock(self, names):
        for name in names:
            self.calls.append(("unlock", name))
            self.set(name, administrative="unlocked", operational="enabled",
                     availability="available")

    def install(self, name):
        self.calls.append(("install", name))
        self.set(name, patch_state="installing")
        return ""

    def reboot(self, name):
        self.calls.append(("reboot", name))

    # what the hosts do
    def installed(self, name, failed=False):
        self.set(name, patch_state="install-failed" if failed else "idle",
                 patch_current=not failed, patch_failed=failed,
                 node_is_patched=self.reboot_required and not failed)

    def rebooted(self, name):
        self.set(name, requires_reboot=False, node_is_patched=False)


class Clock:
    def __init__(self):
        self.now = 1_000_000.0


def built(fleet, **opts):
    strategy = Strategy("11111111-2222-3333-4444-555555555555", "sw-patch",
                        dict(OPTIONS, **opts))
    lifecycle.run_build(strategy, Snapshot(fleet.hosts(), {"P": {}}, [], ""), 1.0)
    assert strategy.state == State.READY_TO_APPLY, strategy.build.reason
    return strategy


def step_on(strategy, fleet, now=2.0, factor=0.0):
    return lifecycle.advance(strategy, fleet, Context(strategy.uuid, "strict", now, factor))


def results(phase):
    return [[s.result for s in stage.steps] for stage in phase.stages]


def test_reboot_required_apply_all_to_applied():
    fleet = FleetTwin(["w0", "w1"])
    strategy = built(fleet)
    lifecycle.apply(strategy, None, 2.0)
    assert strategy.state == State.APPLYING and strategy.current_percentage() == 0
    step_on(strategy, fleet)
    assert fleet.calls == [("lock", "w0"), ("install", "w0")]
    assert fleet.by_name["w0"].locked
    seen = [strategy.current_percentage()]
    fleet.installed("w0")                               # the agent reports
    step_on(strategy, fleet)                            # stabilize (factor 0) then unlock
    assert ("reboot", "w0") in fleet.calls and fleet.by_name["w0"].locked
    seen.append(strategy.current_percentage())
    fleet.rebooted("w0")
    step_on(strategy, fleet)
    assert not fleet.by_name["w0"].locked
    seen.append(strategy.current_percentage())
    fleet.installed("w1")
    fleet.rebooted("w1")
    step_on(strategy, fleet)
    step_on(strategy, fleet)
    assert strategy.state == State.APPLIED
    assert seen == [2 * 100 // 12, 4 * 100 // 12, 8 * 100 // 12]  # of 12 steps
    assert strategy.current_percentage() == 100
    assert alarms.evaluate(strategy, fleet.hosts().values()) == []


def test_percentage_counts_ended_steps_at_every_step():
    fleet = FleetTwin(["w0"], reboot=False)
    strategy = built(fleet)
    lifecycle.apply(strategy, None, 2.0)
    assert strategy.to_api()["current-phase-completion-percentage"] == 0
    step_on(strategy, fleet)          # query-alarms done, sw-patch-hosts running
    assert strategy.to_api()["current-phase-completion-percentage"] == 33
    fleet.installed("w0")
    step_on(strategy, fleet, factor=1.0)   # install done, stabilize waits 30 s
    assert strategy.to_api()["current-phase-completion-percentage"] == 66
    step_on(strategy, fleet, now=40.0, factor=1.0)
    assert strategy.state == State.APPLIED
    assert strategy.to_api()["current-phase-completion-percentage"] == 100


def test_failed_install_aborts_and_unlocks_only_what_it_locked():
    """LP 1842952: patch_failed wins over patch_current; the abort unlocks w0."""
    fleet = FleetTwin(["w0", "w1"])
    strategy = built(fleet)
    lifecycle.apply(strategy, None, 2.0)
    step_on(strategy, fleet)
    fleet.set("w0", patch_state="idle", patch_failed=True, patch_current=True,
              node_is_patched=True)
    step_on(strategy, fleet)
    assert strategy.apply.result == "failed"
    assert strategy.apply.reason == "software update failed to apply on host w0"
    assert strategy.state == State.ABORTING and strategy.current_phase == "abort"
    assert [[s.name for s in st.steps] for st in strategy.abort.stages] == [["unlock-hosts"]]
    assert alarms.evaluate(strategy, fleet.hosts().values())[0].alarm_id == "900.102"
    step_on(strategy, fleet)       # w0 still requires its reboot
    assert ("reboot", "w0") in fleet.calls
    fleet.rebooted("w0")
    step_on(strategy, fleet)
    assert strategy.state == State.ABORTED and not fleet.by_name["w0"].locked
    assert ("install", "w1") not in fleet.calls and not fleet.by_name["w1"].locked
    # 900.103 while a host still needs its reboot, cleared once none does
    assert [a.alarm_id for a in alarms.evaluate(strategy, fleet.hosts().values())] == \
        ["900.103"]
    fleet.rebooted("w1")
    assert alarms.evaluate(strategy, fleet.hosts().values()) == []


def test_a_failed_install_that_changed_nothing_is_unlocked_without_a_reboot():
    """A reboot-required install refused before it changed anything: the host has
    nothing to reboot for, though query_hosts says requires_reboot while the patch is
    partially applied; the abort unlocks it as soon as it reports."""
    fleet = FleetTwin(["w0", "w1"])
    strategy = built(fleet, **{"worker-apply-type": "parallel"})
    lifecycle.apply(strategy, None, 2.0)
    step_on(strategy, fleet)
    fleet.installed("w0")
    fleet.set("w1", patch_state="install-failed", patch_failed=True, requires_reboot=True,
              node_is_patched=False)
    step_on(strategy, fleet)
    assert strategy.apply.reason == "software update failed to apply on host w1"
    step_on(strategy, fleet)                      # the abort phase: unlock-hosts
    assert ("reboot", "w0") in fleet.calls and ("reboot", "w1") not in fleet.calls
    assert not fleet.by_name["w1"].locked and fleet.by_name["w0"].locked
    fleet.rebooted("w0")
    step_on(strategy, fleet)
    assert strategy.state == State.ABORTED and not fleet.by_name["w0"].locked
    assert [a.alarm_id for a in alarms.evaluate(strategy, fleet.hosts().values())] == \
        ["900.103"]                               # w1 still behind, requiring a reboot


def test_abort_lets_the_running_step_finish_then_skips_the_stage():
    fleet = FleetTwin(["w0", "w1"])
    strategy = built(fleet)
    lifecycle.apply(strategy, None, 2.0)
    step_on(strategy, fleet)                       # w0 locked, installing
    lifecycle.abort(strategy, None, 3.0)
    assert strategy.state == State.ABORTING and strategy.current_phase == "apply"
    step_on(strategy, fleet)                       # still installing: nothing else
    assert strategy.apply.stages[0].steps[2].result == "inprogress"
    fleet.installed("w0")
    step_on(strategy, fleet)
    stage = strategy.apply.stages[0]
    assert stage.result == "aborted" and stage.steps[2].result == "success"
    assert stage.steps[3].result == "initial"      # never started
    assert strategy.apply.stages[1].result == "initial"
    assert strategy.current_phase == "abort"
    fleet.rebooted("w0")
    step_on(strategy, fleet)
    assert strategy.state == State.ABORTED and not fleet.by_name["w0"].locked
    with pytest.raises(lifecycle.Refused, match="apply not supported during an abort"):
        lifecycle.apply(strategy, None, 9.0)


def test_apply_stage_next_stage_rule_and_idle_abort():
    fleet = FleetTwin(["w0", "w1", "w2"], reboot=False)
    strategy = built(fleet)
    with pytest.raises(lifecycle.Refused, match="invalid stage id 1 for the apply, "
                                                 "total-stages are 3"):
        lifecycle.apply(strategy, 1, 2.0)
    lifecycle.apply(strategy, 0, 2.0)
    with pytest.raises(lifecycle.Refused, match="apply already inprogress"):
        lifecycle.apply(strategy, None, 2.0)
    step_on(strategy, fleet)
    fleet.installed("w0")
    step_on(strategy, fleet)
    assert strategy.apply.current_stage == 1 and not strategy.apply.running
    assert strategy.state == State.APPLYING and ("install", "w1") not in fleet.calls
    with pytest.raises(lifecycle.Refused, match="apply already complete for stage id 0"):
        lifecycle.apply(strategy, 0, 3.0)
    with pytest.raises(lifecycle.Refused, match="stage id 2 is not the next stage to be "
                                                 "applied, next-stage = 1"):
        lifecycle.apply(strategy, 2, 3.0)
    with pytest.raises(lifecycle.Refused, match="apply not inprogress for stage id 1"):
        lifecycle.abort(strategy, 1, 3.0)
    lifecycle.abort(strategy, None, 3.0)          # idle between stages: aborted at once
    assert strategy.state == State.ABORTED
    with pytest.raises(lifecycle.Refused, match="apply not inprogress"):
        lifecycle.abort(strategy, None, 4.0)


def test_apply_all_resumes_after_a_stage_and_abort_after_applied_is_refused():
    fleet = FleetTwin(["w0", "w1"], reboot=False)
    strategy = built(fleet)
    lifecycle.apply(strategy, 0, 2.0)
    step_on(strategy, fleet)
    fleet.installed("w0")
    step_on(strategy, fleet)
    lifecycle.apply(strategy, None, 3.0)
    step_on(strategy, fleet)
    fleet.installed("w1")
    step_on(strategy, fleet)
    assert strategy.state == State.APPLIED
    with pytest.raises(lifecycle.Refused, match="apply not inprogress"):
        lifecycle.abort(strategy, None, 4.0)


def test_alarm_mid_apply_fails_the_next_stage_query():
    fleet = FleetTwin(["w0", "w1"], reboot=False)
    strategy = built(fleet)
    lifecycle.apply(strategy, None, 2.0)
    step_on(strategy, fleet)
    fleet.alarm_list.append(Alarm("100.101", "host=w0", "minor", "warm"))
    fleet.installed("w0")
    step_on(strategy, fleet)
    assert strategy.apply.stages[1].steps[0].result == "failed"
    assert strategy.apply.reason == "active alarms present [ 100.101 ]"
    assert strategy.state == State.ABORTED          # nothing to undo: aborted at once
    assert strategy.data["apply_failed"]


def test_a_host_state_change_during_stabilization_fails_the_step():
    fleet = FleetTwin(["w0", "w1"], reboot=False)
    strategy = built(fleet)
    lifecycle.apply(strategy, None, 2.0)
    step_on(strategy, fleet, factor=1.0)
    fleet.installed("w0")
    step_on(strategy, fleet, now=3.0, factor=1.0)       # stabilize (30 s) running
    assert strategy.apply.stages[0].steps[2].result == "inprogress"
    fleet.set("w1", availability="offline", operational="disabled")
    step_on(strategy, fleet, now=4.0, factor=1.0)
    assert strategy.apply.stages[0].steps[2].result == "failed"
    assert strategy.apply.reason == "host state changed during system stabilization"


def test_step_timeout_fails_and_aborts():
    fleet = FleetTwin(["w0"])
    strategy = built(fleet)
    lifecycle.apply(strategy, None, 2.0)
    step_on(strategy, fleet, now=2.0)
    step_on(strategy, fleet, now=2.0 + 1801)      # sw-patch-hosts: 1800 s
    install = strategy.apply.stages[0].steps[2]
    assert install.result == "timed-out"
    assert strategy.state == State.ABORTING and strategy.current_phase == "abort"


def test_persisted_document_round_trips_mid_apply():
    fleet = FleetTwin(["w0", "w1"])
    strategy = built(fleet)
    lifecycle.apply(strategy, None, 2.0)
    step_on(strategy, fleet)
    again = Strategy.from_document(strategy.to_document())
    assert again.to_api() == strategy.to_api()
    assert again.apply.stages[0].steps[1].data["locked"] == ["w0"]
    calls = len(fleet.calls)
    step_on(again, fleet)                          # resumed: no second lock or install
    assert fleet.calls[calls:] == []
