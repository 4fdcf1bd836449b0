"""What ``sw-manager`` prints for a strategy: StarlingX 6.0.0's client
(nfv_client/sw_update/_sw_update.py), line for line; metalcast's image-update
strategy in the same layout, with its own settings (KINDS).

A field is ``name:`` padded to column 42, the value as Python prints it (a list of
names as ``['compute-0']``, a JSON null as ``None``), one space and an optional unit:
so every line ends with a space after its value, as StarlingX's do. The strategy
block, then either the current phase's result and reason, or (``--details``,
``--active``) the phases, their stages and steps; ``--active`` keeps the phases and
stages in progress and the steps that are neither initial nor successful.

The API's JSON is parsed once into the dataclasses below; a document missing a key
the layout needs is a :class:`BadDocument` naming it (StarlingX's client dies with
a KeyError).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from cli.errors import CliError

COLUMN = 42
PATCH_SETTINGS = ("controller-apply-type", "storage-apply-type", "worker-apply-type",
                  "max-parallel-worker-hosts", "default-instance-action",
                  "alarm-restrictions")
#: strategy ``name`` -> (the title, the create settings shown under the uuid in order,
#: the other keys the document must have). StarlingX's names; metalcast's own is
#: image-update (the rolling re-image). An unknown name is shown as StarlingX's client
#: shows it: an "Unknown Strategy" with the patch settings.
KINDS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "sw-patch": ("Patch", PATCH_SETTINGS, ("swift-apply-type",)),
    "sw-upgrade": ("Upgrade", PATCH_SETTINGS, ("swift-apply-type",)),
    "fw-update": ("Firmware Update", PATCH_SETTINGS, ("swift-apply-type",)),
    "kube-rootca-update": ("Kubernetes RootCA Update", PATCH_SETTINGS, ("swift-apply-type",)),
    "kube-upgrade": ("Kubernetes Upgrade", PATCH_SETTINGS, ("swift-apply-type",)),
    "image-update": ("Image Update", ("image", "image-checksum", "delta-url", "delta-version",
                                      "worker-apply-type", "max-parallel-worker-hosts",
                                      "alarm-restrictions"), ()),
}
UNKNOWN = ("Unknown", PATCH_SETTINGS, ("swift-apply-type",))
#: settings shown only when set (metalcast's image-update: no delta)
SHOWN_IF_SET = frozenset({"delta-url", "delta-version"})
#: strategy states in which nothing more happens without an operator
FINAL_STATES = frozenset({"initial", "ready-to-apply", "build-failed", "build-timeout",
                          "applied", "apply-failed", "apply-timeout", "aborted",
                          "abort-failed", "abort-timeout"})
#: final states that mean the operator's request succeeded
SUCCESS_STATES = frozenset({"ready-to-apply", "applied"})


class BadDocument(CliError):
    """The API's strategy lacks a key the layout needs, or has the wrong shape."""


def _get(data: Any, key: str, where: str) -> Any:
    if not isinstance(data, dict):
        raise BadDocument(f"the API's strategy has no object at {where}")
    try:
        return data[key]
    except KeyError:
        raise BadDocument(f"the API's strategy lacks {where}.{key}") from None


@dataclasses.dataclass(frozen=True)
class Step:
    step_id: Any
    step_name: Any
    entity_type: Any
    entity_names: Any
    entity_uuids: Any
    timeout: Any
    start_date_time: Any
    end_date_time: Any
    result: Any
    reason: Any


@dataclasses.dataclass(frozen=True)
class Stage:
    stage_id: Any
    stage_name: Any
    total_steps: Any
    current_step: Any
    timeout: Any
    start_date_time: Any
    end_date_time: Any
    inprogress: Any
    result: Any
    reason: Any
    steps: list[Step]


@dataclasses.dataclass(frozen=True)
class Phase:
    phase_name: Any
    total_stages: Any
    current_stage: Any
    stop_at_stage: Any
    timeout: Any
    start_date_time: Any
    end_date_time: Any
    inprogress: Any
    completion_percentage: Any
    result: Any
    reason: Any
    stages: list[Stage]


@dataclasses.dataclass(frozen=True)
class Strategy:
    uuid: Any
    name: Any
    settings: tuple[tuple[str, Any], ...]     #: (key, value) in the order shown
    current_phase: Any
    current_phase_completion_percentage: Any
    state: Any
    build_phase: Phase
    apply_phase: Phase
    abort_phase: Phase


def _scalars(cls, data: Any, where: str, nested: tuple[str, ...] = ()) -> dict:
    """The fields of ``cls`` other than ``nested``, read from their hyphenated keys."""
    return {f.name: _get(data, f.name.replace("_", "-"), where)
            for f in dataclasses.fields(cls) if f.name not in nested}


def _items(data: Any, key: str, where: str) -> list:
    items = _get(data, key, where)
    if not isinstance(items, list):
        raise BadDocument(f"the API's strategy has no list at {where}.{key}")
    return items


def _step(data: Any, where: str) -> Step:
    return Step(**_scalars(Step, data, where))


def _stage(data: Any, where: str) -> Stage:
    steps = [_step(s, f"{where}.steps[{i}]") for i, s in
             enumerate(_items(data, "steps", where))]
    return Stage(steps=steps, **_scalars(Stage, data, where, ("steps",)))


def _phase(data: Any, where: str) -> Phase:
    stages = [_stage(s, f"{where}.stages[{i}]") for i, s in
              enumerate(_items(data, "stages", where))]
    return Phase(stages=stages, **_scalars(Phase, data, where, ("stages",)))


def parse(data: Any) -> Strategy:
    """The API's ``strategy`` object as a :class:`Strategy`."""
    name = _get(data, "name", "strategy")
    _, shown, other = KINDS.get(name, UNKNOWN)
    for key in other:
        _get(data, key, "strategy")
    phases = {key: _phase(_get(data, key.replace("_", "-"), "strategy"),
                          f"strategy.{key.replace('_', '-')}")
              for key in ("build_phase", "apply_phase", "abort_phase")}
    scalars = {key: _get(data, key.replace("_", "-"), "strategy")
               for key in ("uuid", "current_phase", "current_phase_completion_percentage",
                           "state")}
    settings = tuple((key, _get(data, key, "strategy")) for key in shown)
    return Strategy(name=name, settings=settings, **scalars, **phases)


#: C0 and C1 control characters (and DEL) -> their escaped form
CONTROLS = {code: f"\\x{code:02x}" for code in (*range(32), *range(127, 160))}


def printable(value: Any) -> str:
    """``str(value)`` with control characters escaped: a reason or name comes from the
    server and, through it, from hosts' reports; an escape sequence in it must not
    reach the operator's terminal (StarlingX's client prints it raw). Text without
    control characters is unchanged."""
    return str(value).translate(CONTROLS)


def field(indent: int, name: str, value: Any, unit: str = "") -> str:
    """One ``name:`` line padded to column 42, as StarlingX prints it."""
    pad = " " * (COLUMN - indent - len(name) - 1)
    return f"{' ' * indent}{name}:{pad}{printable(value)} {unit}"


def _step_lines(step: Step, active: bool) -> list[str]:
    if active and step.result in ("initial", "success"):
        return []
    lines = [field(12, "step-id", step.step_id), field(12, "step-name", step.step_name)]
    for name, value in (("entity-type", step.entity_type),
                        ("entity-names", step.entity_names),
                        ("entity-uuids", step.entity_uuids)):
        if value:
            lines.append(field(12, name, value))
    lines.append(field(12, "timeout", step.timeout, "seconds"))
    if step.start_date_time:
        lines.append(field(12, "start-date-time", step.start_date_time))
    if step.end_date_time:
        lines.append(field(12, "end-date-time", step.end_date_time))
    return lines + [field(12, "result", step.result), field(12, "reason", step.reason), ""]


def _outcome(indent: int, item: Stage | Phase) -> list[str]:
    """``inprogress: true``, or the end time, result and reason."""
    if item.inprogress:
        return [field(indent, "inprogress", "true")]
    return [field(indent, "end-date-time", item.end_date_time),
            field(indent, "result", item.result), field(indent, "reason", item.reason)]


def _stage_lines(stage: Stage, details: bool, active: bool) -> list[str]:
    if active and not stage.inprogress:
        return []
    lines = [field(8, "stage-id", stage.stage_id), field(8, "stage-name", stage.stage_name),
             field(8, "total-steps", stage.total_steps),
             field(8, "current-step", stage.current_step),
             field(8, "timeout", stage.timeout, "seconds"),
             field(8, "start-date-time", stage.start_date_time), *_outcome(8, stage)]
    if details or active:
        lines.append("        steps:")
        for step in stage.steps:
            lines += _step_lines(step, active)
    return lines + [""]


def _phase_lines(phase: Phase, details: bool, active: bool) -> list[str]:
    if active and not phase.inprogress:
        return []
    lines = [f"  {printable(phase.phase_name)}-phase:",
             field(4, "total-stages", phase.total_stages),
             field(4, "current-stage", phase.current_stage),
             field(4, "stop-at-stage", phase.stop_at_stage),
             field(4, "timeout", phase.timeout, "seconds"),
             field(4, "completion-percentage", f"{phase.completion_percentage}%"),
             field(4, "start-date-time", phase.start_date_time), *_outcome(4, phase)]
    if details or active:
        lines.append("    stages:")
        for stage in phase.stages:
            lines += _stage_lines(stage, details, active)
    return lines


def _summary_lines(s: Strategy) -> list[str]:
    """Without --details: the current phase's result and reason (in progress: say so)."""
    apply = [field(2, "apply-result", s.apply_phase.result),
             field(2, "apply-reason", s.apply_phase.reason)]
    if s.current_phase == s.build_phase.phase_name:
        if s.build_phase.inprogress:
            return [field(2, "inprogress", "true")]
        return [field(2, "build-result", s.build_phase.result),
                field(2, "build-reason", s.build_phase.reason)]
    if s.current_phase == s.apply_phase.phase_name:
        return [field(2, "inprogress", "true")] if s.apply_phase.inprogress else apply
    if s.current_phase == s.abort_phase.phase_name:
        if s.abort_phase.inprogress:
            return [field(2, "inprogress", "true"), *apply, field(2, "abort-result", ""),
                    field(2, "abort-reason", "")]
        return [*apply, field(2, "abort-result", s.abort_phase.result),
                field(2, "abort-reason", s.abort_phase.reason)]
    return []


def render(strategy: Strategy, details: bool = False, active: bool = False) -> list[str]:
    """The lines StarlingX's ``sw-manager … show`` prints for this strategy."""
    s = strategy
    lines = [f"Strategy {KINDS.get(s.name, UNKNOWN)[0]} Strategy:",
             field(2, "strategy-uuid", s.uuid)]
    settings = dict(s.settings)
    for key, value in s.settings:
        if key == "max-parallel-worker-hosts" and settings.get("worker-apply-type") \
                != "parallel":
            continue
        if key in SHOWN_IF_SET and value is None:
            continue
        lines.append(field(2, key, value))
    lines += [field(2, "current-phase", s.current_phase),
              field(2, "current-phase-completion",
                    f"{s.current_phase_completion_percentage}%"),
              field(2, "state", s.state)]
    if not (details or active):
        return lines + _summary_lines(s)
    for phase in (s.build_phase, s.apply_phase, s.abort_phase):
        if phase.total_stages > 0:
            lines += _phase_lines(phase, details, active)
    return lines
