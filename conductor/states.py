"""The node provision state machine, as Ironic defines it.

Pure: no I/O. ``transition(state, event)`` answers the next state or raises;
the tables below are the whole machine (ironic-provisioning spec, section 1).
"""
from __future__ import annotations

import enum

from conductor.errors import InvalidTransition


class State(str, enum.Enum):
    """Provision states. Stable states wait for the user; the rest are transient."""

    ENROLL = "enroll"                      #: registered, BMC not yet verified
    VERIFYING = "verifying"                #: checking the BMC credentials
    MANAGEABLE = "manageable"              #: verified, under operator control
    INSPECTING = "inspecting"              #: collecting hardware facts
    INSPECT_WAIT = "inspect wait"          #: waiting for an in-band inspection
    INSPECT_FAILED = "inspect failed"      #: inspection failed
    CLEANING = "cleaning"                  #: running clean steps
    CLEAN_WAIT = "clean wait"              #: waiting for the agent during cleaning
    CLEAN_FAILED = "clean failed"          #: a clean step failed
    CLEAN_HOLD = "clean hold"              #: cleaning paused by a hold step
    AVAILABLE = "available"                #: clean, ready to deploy
    DEPLOYING = "deploying"                #: running deploy steps
    DEPLOYWAIT = "wait call-back"          #: waiting for the agent to call back
    DEPLOYFAIL = "deploy failed"           #: a deploy step failed
    DEPLOYHOLD = "deploy hold"             #: deploy paused by a hold step
    ACTIVE = "active"                      #: deployed and in use
    DELETING = "deleting"                  #: tearing down an instance
    ERROR = "error"                        #: tear-down failed
    ADOPTING = "adopting"                  #: taking over an installed host
    ADOPTFAIL = "adopt failed"             #: adoption failed
    RESCUING = "rescuing"                  #: booting the rescue ramdisk
    RESCUEWAIT = "rescue wait"             #: waiting for the rescue ramdisk
    RESCUEFAIL = "rescue failed"           #: rescue failed
    RESCUE = "rescue"                      #: running the rescue ramdisk
    UNRESCUING = "unrescuing"              #: leaving rescue
    UNRESCUEFAIL = "unrescue failed"       #: leaving rescue failed
    SERVICING = "servicing"                #: day-2 service steps on an active node
    SERVICE_WAIT = "service wait"          #: waiting for the agent during servicing
    SERVICE_FAILED = "service failed"      #: a service step failed
    SERVICE_HOLD = "service hold"          #: servicing paused by a hold step


S = State

STABLE_STATES = frozenset({S.ENROLL, S.MANAGEABLE, S.AVAILABLE, S.ACTIVE,
                           S.ERROR, S.RESCUE})

#: Where each transient state is heading (shown as target_provision_state).
TARGETS: dict[State, State | None] = {
    S.VERIFYING: S.MANAGEABLE,
    S.INSPECTING: S.MANAGEABLE, S.INSPECT_WAIT: S.MANAGEABLE, S.INSPECT_FAILED: S.MANAGEABLE,
    S.CLEANING: S.AVAILABLE, S.CLEAN_WAIT: S.AVAILABLE, S.CLEAN_FAILED: S.AVAILABLE,
    S.CLEAN_HOLD: S.AVAILABLE,
    S.DEPLOYING: S.ACTIVE, S.DEPLOYWAIT: S.ACTIVE, S.DEPLOYFAIL: S.ACTIVE,
    S.DEPLOYHOLD: S.ACTIVE,
    S.DELETING: S.AVAILABLE,
    S.ADOPTING: S.ACTIVE, S.ADOPTFAIL: S.ACTIVE,
    S.RESCUING: S.RESCUE, S.RESCUEWAIT: S.RESCUE, S.RESCUEFAIL: S.RESCUE,
    S.UNRESCUING: S.ACTIVE, S.UNRESCUEFAIL: S.ACTIVE,
    S.SERVICING: S.ACTIVE, S.SERVICE_WAIT: S.ACTIVE, S.SERVICE_FAILED: S.ACTIVE,
    S.SERVICE_HOLD: S.ACTIVE,
}

#: (state, event) -> next state. Events are user verbs plus the internal
#: done / fail / wait / resume / hold / unhold / abort.
TRANSITIONS: dict[tuple[State, str], State] = {
    # verification
    (S.ENROLL, "manage"): S.VERIFYING,
    (S.VERIFYING, "done"): S.MANAGEABLE,
    (S.VERIFYING, "fail"): S.ENROLL,
    # inspection
    (S.MANAGEABLE, "inspect"): S.INSPECTING,
    (S.INSPECTING, "done"): S.MANAGEABLE,
    (S.INSPECTING, "wait"): S.INSPECT_WAIT,
    (S.INSPECTING, "fail"): S.INSPECT_FAILED,
    (S.INSPECT_WAIT, "done"): S.MANAGEABLE,
    (S.INSPECT_WAIT, "resume"): S.INSPECTING,
    (S.INSPECT_WAIT, "fail"): S.INSPECT_FAILED,
    (S.INSPECT_WAIT, "abort"): S.INSPECT_FAILED,
    (S.INSPECT_FAILED, "manage"): S.MANAGEABLE,
    (S.INSPECT_FAILED, "inspect"): S.INSPECTING,
    # cleaning
    (S.MANAGEABLE, "provide"): S.CLEANING,
    (S.MANAGEABLE, "clean"): S.CLEANING,
    (S.CLEANING, "done"): S.AVAILABLE,
    (S.CLEANING, "manage"): S.MANAGEABLE,
    (S.CLEANING, "wait"): S.CLEAN_WAIT,
    (S.CLEANING, "fail"): S.CLEAN_FAILED,
    (S.CLEANING, "hold"): S.CLEAN_HOLD,
    (S.CLEAN_WAIT, "resume"): S.CLEANING,
    (S.CLEAN_WAIT, "fail"): S.CLEAN_FAILED,
    (S.CLEAN_WAIT, "abort"): S.CLEAN_FAILED,
    (S.CLEAN_WAIT, "hold"): S.CLEAN_HOLD,
    (S.CLEAN_HOLD, "unhold"): S.CLEAN_WAIT,
    (S.CLEAN_HOLD, "abort"): S.CLEAN_FAILED,
    (S.CLEAN_FAILED, "manage"): S.MANAGEABLE,
    (S.AVAILABLE, "manage"): S.MANAGEABLE,
    # deployment
    (S.AVAILABLE, "deploy"): S.DEPLOYING,
    (S.DEPLOYING, "wait"): S.DEPLOYWAIT,
    (S.DEPLOYING, "done"): S.ACTIVE,
    (S.DEPLOYING, "fail"): S.DEPLOYFAIL,
    (S.DEPLOYING, "hold"): S.DEPLOYHOLD,
    (S.DEPLOYWAIT, "resume"): S.DEPLOYING,
    (S.DEPLOYWAIT, "fail"): S.DEPLOYFAIL,
    (S.DEPLOYWAIT, "abort"): S.DEPLOYFAIL,
    (S.DEPLOYWAIT, "hold"): S.DEPLOYHOLD,
    (S.DEPLOYHOLD, "unhold"): S.DEPLOYWAIT,
    (S.DEPLOYHOLD, "abort"): S.DEPLOYFAIL,
    (S.DEPLOYFAIL, "deploy"): S.DEPLOYING,
    (S.DEPLOYFAIL, "rebuild"): S.DEPLOYING,
    (S.ACTIVE, "rebuild"): S.DEPLOYING,
    (S.ERROR, "rebuild"): S.DEPLOYING,
    # tear-down
    (S.ACTIVE, "delete"): S.DELETING,
    (S.DEPLOYWAIT, "delete"): S.DELETING,
    (S.DEPLOYFAIL, "delete"): S.DELETING,
    (S.ERROR, "delete"): S.DELETING,
    (S.RESCUE, "delete"): S.DELETING,
    (S.RESCUEWAIT, "delete"): S.DELETING,
    (S.RESCUEFAIL, "delete"): S.DELETING,
    (S.UNRESCUEFAIL, "delete"): S.DELETING,
    (S.SERVICE_WAIT, "delete"): S.DELETING,
    (S.SERVICE_FAILED, "delete"): S.DELETING,
    (S.DELETING, "clean"): S.CLEANING,
    (S.DELETING, "fail"): S.ERROR,
    # adoption
    (S.MANAGEABLE, "adopt"): S.ADOPTING,
    (S.ADOPTING, "done"): S.ACTIVE,
    (S.ADOPTING, "fail"): S.ADOPTFAIL,
    (S.ADOPTFAIL, "adopt"): S.ADOPTING,
    (S.ADOPTFAIL, "manage"): S.MANAGEABLE,
    # rescue
    (S.ACTIVE, "rescue"): S.RESCUING,
    (S.RESCUING, "wait"): S.RESCUEWAIT,
    (S.RESCUING, "done"): S.RESCUE,
    (S.RESCUING, "fail"): S.RESCUEFAIL,
    (S.RESCUEWAIT, "resume"): S.RESCUING,
    (S.RESCUEWAIT, "fail"): S.RESCUEFAIL,
    (S.RESCUEWAIT, "abort"): S.RESCUEFAIL,
    (S.RESCUE, "rescue"): S.RESCUING,
    (S.RESCUEFAIL, "rescue"): S.RESCUING,
    (S.RESCUE, "unrescue"): S.UNRESCUING,
    (S.RESCUEFAIL, "unrescue"): S.UNRESCUING,
    (S.UNRESCUING, "done"): S.ACTIVE,
    (S.UNRESCUING, "fail"): S.UNRESCUEFAIL,
    (S.UNRESCUEFAIL, "rescue"): S.RESCUING,
    (S.UNRESCUEFAIL, "unrescue"): S.UNRESCUING,
    # servicing
    (S.ACTIVE, "service"): S.SERVICING,
    (S.SERVICING, "wait"): S.SERVICE_WAIT,
    (S.SERVICING, "done"): S.ACTIVE,
    (S.SERVICING, "fail"): S.SERVICE_FAILED,
    (S.SERVICING, "hold"): S.SERVICE_HOLD,
    (S.SERVICE_WAIT, "resume"): S.SERVICING,
    (S.SERVICE_WAIT, "fail"): S.SERVICE_FAILED,
    (S.SERVICE_WAIT, "abort"): S.SERVICE_FAILED,
    (S.SERVICE_WAIT, "hold"): S.SERVICE_HOLD,
    (S.SERVICE_HOLD, "unhold"): S.SERVICE_WAIT,
    (S.SERVICE_HOLD, "abort"): S.SERVICE_FAILED,
    (S.SERVICE_FAILED, "abort"): S.ACTIVE,
    (S.SERVICE_FAILED, "service"): S.SERVICING,
}

#: API ``target`` values -> machine events (Ironic's VERBS).
VERBS: dict[str, str] = {
    "manage": "manage", "provide": "provide", "inspect": "inspect",
    "active": "deploy", "deploy": "deploy", "rebuild": "rebuild",
    "deleted": "delete", "undeploy": "delete", "clean": "clean",
    "abort": "abort", "adopt": "adopt", "rescue": "rescue",
    "unrescue": "unrescue", "unhold": "unhold", "service": "service",
}

#: The minimum API microversion at which each verb exists.
VERB_MIN_VERSION: dict[str, int] = {
    "manage": 4, "provide": 4, "inspect": 6, "abort": 13, "clean": 15,
    "adopt": 17, "rescue": 38, "unrescue": 38, "deploy": 73, "undeploy": 73,
    "unhold": 85, "service": 87,
}

#: Where a failed/timed-out transient state lands, with the event that gets it there.
WAIT_STATES: frozenset[State] = frozenset({S.DEPLOYWAIT, S.CLEAN_WAIT, S.INSPECT_WAIT,
                                           S.RESCUEWAIT, S.SERVICE_WAIT})

#: Transient states a worker drives; a conductor that died in one cannot resume it.
WORKING_STATES: frozenset[State] = frozenset({
    S.VERIFYING, S.INSPECTING, S.CLEANING, S.DEPLOYING, S.DELETING, S.ADOPTING,
    S.RESCUING, S.UNRESCUING, S.SERVICING})

#: States in which a node may be deleted (or any state in maintenance).
DELETE_ALLOWED: frozenset[State] = frozenset({S.MANAGEABLE, S.ENROLL, S.ADOPTFAIL,
                                              S.AVAILABLE})

#: States counted against the concurrent-action limits.
DEPLOY_STATES = frozenset({S.DEPLOYING, S.DEPLOYWAIT})
CLEAN_STATES = frozenset({S.CLEANING, S.CLEAN_WAIT})


def transition(state: State | str | None, event: str) -> State:
    """Return the state ``event`` leads to from ``state``, or raise InvalidTransition."""
    try:
        return TRANSITIONS[(State(state), event)]
    except (KeyError, ValueError):
        raise InvalidTransition(reason=f"event {event!r} is not allowed in state "
                                       f"{state!r}") from None


def target_of(state: State | str) -> State | None:
    """The target_provision_state shown while in ``state`` (None when stable)."""
    return TARGETS.get(State(state))


def allowed_events(state: State | str) -> list[str]:
    """Every event accepted in ``state``, sorted (for error messages and tests)."""
    st = State(state)
    return sorted(ev for (src, ev) in TRANSITIONS if src is st)
