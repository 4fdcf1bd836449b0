"""The strategy model: strategy -> phases (build, apply, abort) -> stages -> steps.

Plain dataclasses that the runner changes and the database stores whole
(``to_document``/``from_document``); ``to_api`` renders StarlingX's hyphenated JSON
(specs/starlingx-sw-manager-rest.md: every key its client dereferences, dates as
"YYYY-mm-dd HH:MM:SS"). Times are epoch seconds inside, UTC dates outside. Pure: no
I/O, no clock (callers pass ``now``).
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class State(enum.StrEnum):
    """A strategy's state (specs/starlingx-patching.md §6.2)."""

    INITIAL = "initial"
    BUILDING = "building"
    BUILD_FAILED = "build-failed"
    BUILD_TIMEOUT = "build-timeout"
    READY_TO_APPLY = "ready-to-apply"
    APPLYING = "applying"
    APPLY_FAILED = "apply-failed"
    APPLY_TIMEOUT = "apply-timeout"
    APPLIED = "applied"
    ABORTING = "aborting"
    ABORT_FAILED = "abort-failed"
    ABORT_TIMEOUT = "abort-timeout"
    ABORTED = "aborted"


class Result(enum.StrEnum):
    """The result of a phase, stage or step; degraded counts as success."""

    INITIAL = "initial"
    WAIT = "wait"
    INPROGRESS = "inprogress"
    SUCCESS = "success"
    DEGRADED = "degraded"
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    ABORTING = "aborting"
    ABORTED = "aborted"


#: Results of a step that has ended (StarlingX counts these for the percentage).
ENDED = frozenset({Result.SUCCESS, Result.DEGRADED, Result.FAILED, Result.TIMED_OUT,
                   Result.ABORTED})
GOOD = frozenset({Result.SUCCESS, Result.DEGRADED})
#: States in which a strategy is doing something (delete needs force).
BUSY = frozenset({State.BUILDING, State.APPLYING, State.ABORTING})
#: Phase names, also the values of ``current-phase``.
PHASES = ("build", "apply", "abort")


def date(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime(DATE_FORMAT)


@dataclasses.dataclass
class Step:
    """One action on some hosts. ``params`` says how (fixed at build), ``data`` what
    it has done so far (persisted, so a restarted conductor resumes it)."""

    name: str
    timeout: int
    entity_type: str = ""
    entity_names: list[str] = dataclasses.field(default_factory=list)
    entity_uuids: list[str] = dataclasses.field(default_factory=list)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    result: str = Result.INITIAL
    reason: str = ""
    started: float | None = None
    ended: float | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ended_ok(self) -> bool:
        return self.result in GOOD

    def to_api(self, step_id: int) -> dict[str, Any]:
        return {"step-id": step_id, "step-name": self.name, "timeout": self.timeout,
                "entity-type": self.entity_type, "entity-uuids": list(self.entity_uuids),
                "entity-names": list(self.entity_names), "result": str(self.result),
                "reason": self.reason, "start-date-time": date(self.started),
                "end-date-time": date(self.ended)}


@dataclasses.dataclass
class Stage:
    name: str
    steps: list[Step]
    current_step: int = 0
    inprogress: bool = False
    result: str = Result.INITIAL
    reason: str = ""
    started: float | None = None
    ended: float | None = None

    @property
    def timeout(self) -> int:
        """StarlingX's: the sum of its steps' timeouts plus one second."""
        return sum(step.timeout for step in self.steps) + 1

    def to_api(self, stage_id: int) -> dict[str, Any]:
        return {"stage-id": stage_id, "stage-name": self.name, "timeout": self.timeout,
                "total-steps": len(self.steps), "current-step": self.current_step,
                "steps": [step.to_api(i) for i, step in enumerate(self.steps)],
                "inprogress": self.inprogress, "result": str(self.result),
                "reason": self.reason, "start-date-time": date(self.started),
                "end-date-time": date(self.ended)}


@dataclasses.dataclass
class Phase:
    name: str
    stages: list[Stage] = dataclasses.field(default_factory=list)
    current_stage: int = 0
    stop_at_stage: int = 0
    inprogress: bool = False
    result: str = Result.INITIAL
    reason: str = ""
    started: float | None = None
    ended: float | None = None
    timeout: int = 0            #: set when a run starts: the remaining stages' sum + 1
    timer_started: float | None = None

    @property
    def running(self) -> bool:
        """A stage is to be run now (not idle between the stages of apply-stage)."""
        return self.inprogress and self.current_stage < self.stop_at_stage

    def completion_percentage(self) -> int:
        """Ended steps over all steps while in progress, else 100 (StarlingX's rule)."""
        if not self.inprogress:
            return 100
        steps = [step for stage in self.stages for step in stage.steps]
        if not steps:
            return 100
        return sum(step.result in ENDED for step in steps) * 100 // len(steps)

    def arm_timer(self, now: float) -> None:
        """Phase timeout: the stages from here to the stop plus one second."""
        stages = self.stages[self.current_stage:self.stop_at_stage]
        self.timeout = sum(stage.timeout for stage in stages) + 1
        self.timer_started = now

    def to_api(self) -> dict[str, Any]:
        return {"phase-name": self.name, "timeout": self.timeout,
                "total-stages": len(self.stages), "current-stage": self.current_stage,
                "stop-at-stage": self.stop_at_stage,
                "stages": [stage.to_api(i) for i, stage in enumerate(self.stages)],
                "inprogress": self.inprogress,
                "completion-percentage": self.completion_percentage(),
                "result": str(self.result), "reason": self.reason,
                "start-date-time": date(self.started), "end-date-time": date(self.ended)}


@dataclasses.dataclass
class Strategy:
    """One sw-update strategy. ``options`` holds the create options under their
    hyphenated names (they are rendered as they are)."""

    uuid: str
    name: str
    options: dict[str, Any]
    state: str = State.INITIAL
    current_phase: str = "initial"
    build: Phase = dataclasses.field(default_factory=lambda: Phase("build"))
    apply: Phase = dataclasses.field(default_factory=lambda: Phase("apply"))
    abort: Phase = dataclasses.field(default_factory=lambda: Phase("abort"))
    #: What the runner keeps across passes (the apply that failed: alarm 900.103).
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def phase(self, name: str) -> Phase:
        return {"build": self.build, "apply": self.apply, "abort": self.abort}[name]

    def current_percentage(self) -> int:
        if self.current_phase not in PHASES:
            return 0
        return self.phase(self.current_phase).completion_percentage()

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {"uuid": self.uuid, "name": self.name}
        body.update(self.options)
        body.update({"state": str(self.state), "current-phase": self.current_phase,
                     "current-phase-completion-percentage": self.current_percentage(),
                     "build-phase": self.build.to_api(), "apply-phase": self.apply.to_api(),
                     "abort-phase": self.abort.to_api()})
        return body

    def describe(self) -> str:
        """How a 409 names it (LP 1989485: say which strategy is in the way)."""
        return f"{self.name} strategy {self.uuid} (state {self.state})"

    # -- persistence ------------------------------------------------------------------
    def to_document(self) -> dict[str, Any]:
        """A JSON-able view of the whole strategy (shallow: it shares the lists and
        dicts of the model, and is serialised at once; dataclasses.asdict deep-copied
        a 1000-host strategy on every save of the runner)."""
        doc = dict(vars(self))
        for name in PHASES:
            phase = dict(vars(self.phase(name)))
            phase["stages"] = [dict(vars(stage), steps=[vars(step) for step in stage.steps])
                               for stage in phase["stages"]]
            doc[name] = phase
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Strategy:
        phases = {name: _phase(doc[name]) for name in PHASES}
        return cls(uuid=doc["uuid"], name=doc["name"], options=dict(doc["options"]),
                   state=State(doc["state"]), current_phase=doc["current_phase"],
                   data=dict(doc.get("data") or {}), **phases)


def _phase(doc: dict[str, Any]) -> Phase:
    stages = [Stage(**dict(stage, steps=[Step(**step) for step in stage["steps"]]))
              for stage in doc["stages"]]
    return Phase(**dict(doc, stages=stages))
