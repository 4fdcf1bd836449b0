"""StarlingX-shaped strategy documents (specs/starlingx-sw-manager-rest.md: the keys
nfv-client dereferences, hyphenated, dates "YYYY-mm-dd HH:MM:SS") for the
``sw-manager`` output tests: one mid-apply, one aborted after a failed step, one
building."""
from __future__ import annotations

import copy


def step(step_id, name, result, entity_names=(), start="", end="", reason="",
         timeout=60, entity_type="hosts"):
    return {"step-id": step_id, "step-name": name, "timeout": timeout,
            "entity-type": entity_type if entity_names else "",
            "entity-names": list(entity_names),
            "entity-uuids": [f"uuid-{n}" for n in entity_names],
            "start-date-time": start, "end-date-time": end, "result": result,
            "reason": reason}


def stage(stage_id, name, steps, result, current, inprogress=False, start="", end="",
          reason=""):
    return {"stage-id": stage_id, "stage-name": name, "total-steps": len(steps),
            "current-step": current, "timeout": sum(s["timeout"] for s in steps) + 1,
            "steps": steps, "inprogress": inprogress, "result": result, "reason": reason,
            "start-date-time": start, "end-date-time": end}


def phase(name, stages, result="initial", current=0, inprogress=False, percentage=0,
          start="", end="", reason=""):
    return {"phase-name": name, "total-stages": len(stages), "current-stage": current,
            "stop-at-stage": len(stages), "timeout": sum(s["timeout"] for s in stages) + 1,
            "stages": stages, "inprogress": inprogress, "completion-percentage": percentage,
            "result": result, "reason": reason, "start-date-time": start,
            "end-date-time": end}


T0, T1, T2 = "2026-12-07 11:00:00", "2026-12-07 11:00:05", "2026-12-07 11:01:30"

BUILD = phase("build", [stage(0, "sw-patch-query", [
    step(0, "query-alarms", "success", start=T0, end=T0),
    step(1, "query-sw-patches", "success", start=T0, end=T0),
    step(2, "query-sw-patch-hosts", "success", start=T0, end=T1)],
    "success", 3, start=T0, end=T1)], "success", 1, percentage=100, start=T0, end=T1)

WORKERS = ["compute-0", "compute-1"]
APPLY_STAGES = [
    stage(0, "sw-patch-controllers", [
        step(0, "query-alarms", "success", start=T1, end=T1),
        step(1, "sw-patch-hosts", "success", ["controller-1"], T1, T1, timeout=1800),
        step(2, "system-stabilize", "success", start=T1, end=T1, timeout=30)],
        "success", 3, start=T1, end=T1),
    stage(1, "sw-patch-worker-hosts", [
        step(0, "query-alarms", "success", start=T1, end=T1),
        step(1, "lock-hosts", "success", WORKERS, T1, T1, timeout=900),
        step(2, "sw-patch-hosts", "inprogress", WORKERS, T1, timeout=1800),
        step(3, "system-stabilize", "initial", timeout=15),
        step(4, "unlock-hosts", "initial", WORKERS, timeout=1800),
        step(5, "system-stabilize", "initial", timeout=60)],
        "inprogress", 2, inprogress=True, start=T1),
]


def strategy(state, current_phase, percentage, build, apply, abort, **options):
    base = {"uuid": "6f0b2a43-0b1e-4b83-9c8e-1f4f4b1d2c3a", "name": "sw-patch",
            "controller-apply-type": "serial", "storage-apply-type": "serial",
            "swift-apply-type": "ignore", "worker-apply-type": "parallel",
            "max-parallel-worker-hosts": 2, "default-instance-action": "stop-start",
            "alarm-restrictions": "strict", "state": state,
            "current-phase": current_phase,
            "current-phase-completion-percentage": percentage,
            "build-phase": build, "apply-phase": apply, "abort-phase": abort}
    return dict(base, **options)


APPLYING = strategy("applying", "apply", 58, BUILD,
                    phase("apply", APPLY_STAGES, "inprogress", 1, True, 58, T1),
                    phase("abort", []))


def _aborted() -> dict:
    stages = copy.deepcopy(APPLY_STAGES)
    failed = stages[1]
    failed.update(inprogress=False, result="aborted", end=T2,
                  reason="software update failed to apply on host compute-1")
    failed["end-date-time"] = T2
    failed["steps"][2].update({"result": "failed", "end-date-time": T2,
                               "reason": "software update failed to apply on host "
                                         "compute-1"})
    for later in failed["steps"][3:]:
        later["result"] = "aborted"
    unlock = stage(0, "sw-patch-worker-hosts", [
        step(0, "unlock-hosts", "success", WORKERS, T2, T2, timeout=1800)],
        "success", 1, start=T2, end=T2)
    return strategy(
        "aborted", "abort", 100, BUILD,
        phase("apply", stages, "failed", 1, False, 58, T1, T2,
              "software update failed to apply on host compute-1"),
        phase("abort", [unlock], "success", 1, False, 100, T2, T2),
        **{"worker-apply-type": "serial", "alarm-restrictions": "relaxed"})


ABORTED = _aborted()
BUILDING = strategy("building", "build", 0,
                    phase("build", [stage(0, "sw-patch-query", [
                        step(0, "query-alarms", "inprogress", start=T0)],
                        "inprogress", 0, True, T0)], "inprogress", 0, True, 0, T0),
                    phase("apply", []), phase("abort", []))
DOCUMENTS = {"applying": APPLYING, "aborted": ABORTED, "building": BUILDING}
