"""A strategy's lifecycle (specs/starlingx-patching.md §6.2): build, apply, abort.

Pure functions on the model; ``advance`` runs steps through a Fleet (steps.py).
The rules and texts are StarlingX's: apply-stage targets stage 0 from
ready-to-apply and afterwards exactly the next stage; apply-all after a
single-stage apply resumes; a failed or timed-out apply aborts by itself; an abort
lets the running step finish, skips the rest of its stage and runs the
compensating steps of that stage only; idle between stages, an abort ends at
once; after the apply ended it is refused. One departure: an abort while the
strategy is already aborting is refused (StarlingX forces "aborted", which could
leave the hosts the abort phase is unlocking locked).
"""
from __future__ import annotations

import logging

from conductor.orchestration import image_build, patch_build, steps
from conductor.orchestration.model import ENDED, GOOD, Phase, Result, Stage, State, Strategy
from conductor.orchestration.patch_build import Snapshot

#: Strategy name -> (its build stage's name and steps, its build).
BUILDS = {"sw-patch": ("sw-patch-query", patch_build.build_steps, patch_build.build),
          "image-update": ("image-query", image_build.build_steps, image_build.build)}

LOG = logging.getLogger(__name__)

APPLY_ENDED = (State.APPLIED, State.APPLY_FAILED, State.APPLY_TIMEOUT, State.ABORTED,
               State.ABORT_FAILED, State.ABORT_TIMEOUT)


class Refused(Exception):
    """An action the strategy's state does not allow; the text is StarlingX's."""


# -- build ------------------------------------------------------------------------------

def run_build(strategy: Strategy, snap: Snapshot, now: float) -> None:
    """The build phase, at once (it only reads): ready-to-apply or build-failed."""
    strategy.state, strategy.current_phase = State.BUILDING, "build"
    phase = strategy.build
    restrictions = strategy.options["alarm-restrictions"]
    stage_name, build_steps, build = BUILDS[strategy.name]
    phase.stages = [Stage(stage_name, build_steps(restrictions))]
    phase.stop_at_stage, phase.inprogress, phase.started = 1, True, now
    phase.result = Result.INPROGRESS
    phase.arm_timer(now)
    stage = phase.stages[0]
    stage.inprogress, stage.started, stage.result = True, now, Result.INPROGRESS
    for step in stage.steps:
        step.started = step.ended = now
        step.result = Result.SUCCESS
    stage.current_step = len(stage.steps)
    _end_stage(stage, Result.SUCCESS, "", now)
    phase.current_stage = 1
    reason, stages = build(strategy.options, snap)
    strategy.apply.stages = stages
    if reason:
        _end_phase(phase, Result.FAILED, reason, now)
        strategy.state = State.BUILD_FAILED
    else:
        _end_phase(phase, Result.SUCCESS, "", now)
        strategy.state = State.READY_TO_APPLY
    LOG.info("Strategy %s built: %s%s (%d stages)", strategy.uuid, strategy.state,
             f" ({reason})" if reason else "", len(stages))


# -- actions ----------------------------------------------------------------------------

def apply(strategy: Strategy, stage_id: int | None, now: float) -> None:
    """apply-all (``stage_id`` None) or apply-stage; Refused with StarlingX's reason."""
    phase = strategy.apply
    if strategy.current_phase == "build":
        if strategy.state != State.READY_TO_APPLY:
            reason = strategy.build.reason
            raise Refused(reason if stage_id is None else
                          f"apply of stage id {stage_id} failed: {reason} ")
        if stage_id is not None and not (stage_id == 0 and stage_id < len(phase.stages)):
            raise Refused(f"invalid stage id {stage_id} for the apply, total-stages "
                          f"are {len(phase.stages)}")
        strategy.state, strategy.current_phase = State.APPLYING, "apply"
        phase.inprogress, phase.result, phase.reason = True, Result.INPROGRESS, ""
        phase.started, phase.current_stage = now, 0
        _run_until(phase, len(phase.stages) if stage_id is None else stage_id + 1, now)
        return
    if strategy.current_phase != "apply":
        raise Refused("apply not supported during an abort" if stage_id is None else
                      f"apply of stage id {stage_id} not supported during an abort")
    if strategy.state in APPLY_ENDED:
        raise Refused("apply already completed")
    idle = phase.current_stage == phase.stop_at_stage
    if stage_id is None and idle:
        _run_until(phase, len(phase.stages), now)
    elif stage_id is None or phase.running:
        raise Refused("apply already inprogress")
    elif stage_id < phase.current_stage:
        raise Refused(f"apply already complete for stage id {stage_id}")
    elif stage_id >= len(phase.stages):
        raise Refused(f"invalid stage id {stage_id} for the apply, total-stages are "
                      f"{len(phase.stages)}")
    elif stage_id != phase.current_stage:
        raise Refused(f"stage id {stage_id} is not the next stage to be applied, "
                      f"next-stage = {phase.current_stage}")
    else:
        _run_until(phase, stage_id + 1, now)


def abort(strategy: Strategy, stage_id: int | None, now: float) -> None:
    """abort / abort-stage; Refused with StarlingX's reason."""
    phase = strategy.apply
    if strategy.current_phase != "apply":
        raise Refused("apply not inprogress")
    if stage_id is not None and (not phase.running or stage_id != phase.current_stage):
        raise Refused(f"apply not inprogress for stage id {stage_id}")
    if strategy.state == State.ABORTING:
        raise Refused("abort already inprogress")
    if strategy.state == State.APPLIED:
        raise Refused("apply not inprogress")
    _start_abort(strategy, now)
    if not phase.running:       # idle between the stages of an apply-stage
        _end_phase(phase, Result.ABORTED, "", now)
        _finish_abort(strategy, now)
    LOG.info("Strategy %s: abort requested, now %s", strategy.uuid, strategy.state)


def _run_until(phase: Phase, stop: int, now: float) -> None:
    phase.stop_at_stage = stop
    phase.arm_timer(now)


def _start_abort(strategy: Strategy, now: float) -> None:
    strategy.state = State.ABORTING
    if strategy.apply.inprogress:
        strategy.apply.result = Result.ABORTING
    strategy.abort = _abort_phase(strategy.apply)


def _abort_phase(apply_phase: Phase) -> Phase:
    """The compensating steps of the current stage's started steps, last first."""
    phase = Phase("abort")
    if apply_phase.current_stage >= len(apply_phase.stages):
        return phase
    stage = apply_phase.stages[apply_phase.current_stage]
    undo = [steps.compensation(step) for step in reversed(stage.steps[:stage.current_step + 1])]
    found = [step for step in undo if step is not None]
    if found:
        phase.stages = [Stage(stage.name, found)]
    return phase


def _finish_abort(strategy: Strategy, now: float) -> None:
    """Start the abort phase (or end it at once when it has nothing to run)."""
    strategy.current_phase = "abort"
    phase = strategy.abort = _abort_phase(strategy.apply) if not strategy.abort.inprogress \
        else strategy.abort
    phase.inprogress, phase.started, phase.result = True, now, Result.INPROGRESS
    _run_until(phase, len(phase.stages), now)
    if not phase.stages:
        _end_phase(phase, Result.SUCCESS, "", now)
        strategy.state = State.ABORTED


# -- running ----------------------------------------------------------------------------

def advance(strategy: Strategy, fleet: steps.Fleet, ctx: steps.Context) -> bool:
    """Run what can run now; True when something changed (to be saved)."""
    if strategy.state == State.APPLYING or (strategy.state == State.ABORTING and
                                             strategy.current_phase == "apply"):
        changed = _advance_phase(strategy.apply, fleet, ctx,
                                 stopping=strategy.state == State.ABORTING)
        if changed and not strategy.apply.inprogress:
            _apply_ended(strategy, ctx.now)
        return changed
    if strategy.state == State.ABORTING and strategy.current_phase == "abort":
        changed = _advance_phase(strategy.abort, fleet, ctx, stopping=False)
        if changed and not strategy.abort.inprogress:
            ends: dict[str, State] = {Result.SUCCESS: State.ABORTED,
                                      Result.TIMED_OUT: State.ABORT_TIMEOUT}
            strategy.state = ends.get(strategy.abort.result, State.ABORT_FAILED)
            LOG.info("Strategy %s: abort ended, %s", strategy.uuid, strategy.state)
        return changed
    return False


def _apply_ended(strategy: Strategy, now: float) -> None:
    result = strategy.apply.result
    if result in (Result.FAILED, Result.TIMED_OUT):
        strategy.data["apply_failed"] = True        # alarm 900.103 (alarms.py)
    if strategy.state == State.ABORTING:
        _finish_abort(strategy, now)
    elif result in GOOD:
        strategy.state = State.APPLIED
    else:                       # a failed or timed-out apply aborts by itself
        strategy.state = State.APPLY_TIMEOUT if result == Result.TIMED_OUT \
            else State.APPLY_FAILED
        LOG.warning("Strategy %s: %s (%s); aborting", strategy.uuid, strategy.state,
                    strategy.apply.reason)
        _start_abort(strategy, now)
        _finish_abort(strategy, now)
    LOG.info("Strategy %s: apply phase ended (%s), now %s", strategy.uuid, result,
             strategy.state)


def _advance_phase(phase: Phase, fleet: steps.Fleet, ctx: steps.Context,
                   stopping: bool) -> bool:
    changed = False
    while phase.running:
        if phase.timer_started is not None and ctx.now - phase.timer_started > phase.timeout:
            _end_phase(phase, Result.TIMED_OUT, "timeout", ctx.now)
            return True
        stage = phase.stages[phase.current_stage]
        outcome, moved = _advance_stage(stage, fleet, ctx, stopping)
        changed = changed or moved
        if outcome is None:
            return changed
        result, reason = outcome
        if result not in GOOD:
            _end_phase(phase, result, reason, ctx.now)
            return True
        phase.current_stage += 1
        changed = True
        if stopping:                # abort: no later stage runs
            _end_phase(phase, Result.ABORTED, "", ctx.now)
            return True
    if phase.current_stage >= len(phase.stages) and phase.inprogress:
        _end_phase(phase, Result.SUCCESS, "", ctx.now)
        changed = True
    return changed


def _advance_stage(stage: Stage, fleet: steps.Fleet, ctx: steps.Context,
                   stopping: bool) -> tuple[tuple[str, str] | None, bool]:
    """Run the stage's steps as far as they go: ((result, reason) when the stage
    ended, else None), and whether anything changed."""
    changed = False
    if not stage.inprogress and stage.result == Result.INITIAL:
        stage.inprogress, stage.started, stage.result = True, ctx.now, Result.INPROGRESS
        changed = True
    while stage.current_step < len(stage.steps):
        step = stage.steps[stage.current_step]
        if step.result == Result.INITIAL:
            if stopping:                            # abort: the rest of the stage skipped
                _end_stage(stage, Result.ABORTED, "", ctx.now)
                return (Result.ABORTED, ""), True
            step.result, step.started = Result.INPROGRESS, ctx.now
            changed = True
        if not step.data.get("started"):
            steps.KINDS[step.name][0](step, fleet, ctx)
            step.data["started"] = True
            changed = True
        outcome = steps.KINDS[step.name][1](step, fleet, ctx)
        if outcome is None and step.started is not None and \
                ctx.now - step.started > step.timeout:
            outcome = (Result.SUCCESS, "") if step.name in steps.TIMEOUT_IS_SUCCESS \
                else (Result.TIMED_OUT, "step timed out")
        if outcome is None:
            return None, changed
        step.result, step.reason = outcome
        step.ended = ctx.now
        changed = True
        if step.result not in GOOD:
            _end_stage(stage, step.result, step.reason, ctx.now)
            return (step.result, step.reason), True
        stage.current_step += 1
    _end_stage(stage, Result.SUCCESS, "", ctx.now)
    return (Result.SUCCESS, ""), True


def _end_stage(stage: Stage, result: str, reason: str, now: float) -> None:
    stage.inprogress, stage.result, stage.reason, stage.ended = False, result, reason, now


def _end_phase(phase: Phase, result: str, reason: str, now: float) -> None:
    phase.inprogress, phase.result, phase.reason, phase.ended = False, result, reason, now


def running_step_ended(phase: Phase) -> bool:
    """No step of ``phase`` is in progress (what a restart checks)."""
    return all(step.result in ENDED or step.result == Result.INITIAL
               for stage in phase.stages for step in stage.steps)
