"""The provision state machine, exhaustively: every (state, event) pair is checked."""
import itertools

import pytest

from conductor import errors, states
from conductor.states import State as S

EVENTS = sorted({ev for (_, ev) in states.TRANSITIONS} | set(states.VERBS.values()))


@pytest.mark.parametrize("state,event", list(itertools.product(list(S), EVENTS)))
def test_every_pair_is_a_transition_or_refused(state, event):
    expected = states.TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(errors.InvalidTransition):
            states.transition(state, event)
    else:
        assert states.transition(state.value, event) is expected


def _walk(start, events):
    state = start
    for event in events:
        state = states.transition(state, event)
    return state


def test_full_ironic_lifecycle():
    path = ["manage", "done", "provide", "done", "deploy", "wait", "resume", "done",
            "delete", "clean", "done", "manage"]
    assert _walk(S.ENROLL, path) is S.MANAGEABLE


def test_failed_verification_returns_to_enroll():
    assert _walk(S.ENROLL, ["manage", "fail"]) is S.ENROLL


def test_manual_clean_returns_to_manageable():
    assert _walk(S.MANAGEABLE, ["clean", "wait", "resume", "manage"]) is S.MANAGEABLE


def test_deploy_failure_can_be_retried_or_torn_down():
    failed = _walk(S.AVAILABLE, ["deploy", "wait", "fail"])
    assert failed is S.DEPLOYFAIL
    assert states.transition(failed, "deploy") is S.DEPLOYING
    assert states.transition(failed, "rebuild") is S.DEPLOYING
    assert states.transition(failed, "delete") is S.DELETING


@pytest.mark.parametrize("wait", sorted(states.WAIT_STATES))
def test_every_wait_state_can_fail_and_be_aborted(wait):
    failed = states.transition(wait, "fail")
    assert failed.value.endswith("failed")
    assert states.transition(wait, "abort") is failed


@pytest.mark.parametrize("working", sorted(states.WORKING_STATES))
def test_every_working_state_has_a_failure_exit(working):
    # conductor restart recovery relies on this
    assert states.transition(working, "fail") in (S.ENROLL, S.ERROR) or \
        states.transition(working, "fail").value.endswith("failed")


def test_every_state_is_reachable_from_enroll():
    seen, frontier = {S.ENROLL}, [S.ENROLL]
    while frontier:
        current = frontier.pop()
        for (src, _), dst in states.TRANSITIONS.items():
            if src is current and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(S)


def test_failed_states_are_not_dead_ends():
    for state in S:
        if state.value.endswith("failed") or state is S.ERROR:
            assert states.allowed_events(state), state


def test_transient_states_have_targets_and_stable_ones_do_not():
    for state in S:
        if state in states.STABLE_STATES:
            assert states.target_of(state) is None
        else:
            assert states.target_of(state) in states.STABLE_STATES, state


def test_every_api_verb_maps_to_an_event_used_by_the_machine():
    used = {ev for (_, ev) in states.TRANSITIONS}
    assert set(states.VERBS.values()) <= used


def test_unknown_state_is_refused():
    with pytest.raises(errors.InvalidTransition):
        states.transition("bogus", "manage")
