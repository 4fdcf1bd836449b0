"""Conductor restart recovery and wait-state timeouts, against the real database."""
from __future__ import annotations

import datetime

import pytest

from conductor.config import from_options
from conductor.db.queries import utcnow
from conductor.drivers.context import DriverContext
from conductor.drivers.registry import DriverRegistry
from conductor.engine import workers


def _drivers() -> DriverRegistry:
    return DriverRegistry(DriverContext.create(from_options({})))


def _reserved(store, make_node, host, **values):
    node = make_node(**values)
    store.reserve(node, host)
    return node


def test_recover_fails_own_working_nodes_and_releases_locks(store, make_node):
    stuck = _reserved(store, make_node, "host-a", name="stuck",
                      provision_state="deploying", target_provision_state="active",
                      conductor_affinity="host-a")
    waiting = _reserved(store, make_node, "host-a", name="waiting",
                        provision_state="wait call-back", target_provision_state="active",
                        conductor_affinity="host-a")
    other = _reserved(store, make_node, "host-b", name="other",
                      provision_state="deploying", conductor_affinity="host-b")
    taken_over = _reserved(store, make_node, "host-b", name="taken-over",
                           provision_state="cleaning", conductor_affinity="host-a")

    workers.recover(store, "host-a", _drivers())

    stuck = store.get_node(stuck.uuid)
    assert stuck.provision_state == "deploy failed"
    assert stuck.target_provision_state == "active"
    assert stuck.reservation is None
    assert "restarted" in stuck.last_error and "host-a" in stuck.last_error

    waiting = store.get_node(waiting.uuid)
    assert (waiting.provision_state, waiting.reservation) == ("wait call-back", None)
    assert waiting.last_error is None

    for untouched, state in ((other, "deploying"), (taken_over, "cleaning")):
        node = store.get_node(untouched.uuid)
        assert (node.provision_state, node.reservation) == (state, "host-b")
        assert node.last_error is None


def test_recover_fails_unlocked_working_nodes_of_this_host_only(store, make_node):
    mine = make_node(name="mine", provision_state="cleaning", conductor_affinity="host-a")
    theirs = make_node(name="theirs", provision_state="cleaning",
                       conductor_affinity="host-b")
    workers.recover(store, "host-a", _drivers())
    assert store.get_node(mine.uuid).provision_state == "clean failed"
    assert store.get_node(theirs.uuid).provision_state == "cleaning"


@pytest.fixture
def settings():
    return from_options({"conductor.host": "host-a", "conductor.deploy_callback_timeout": 60,
                         "conductor.clean_callback_timeout": 600})


def _waiting(store, make_node, name, state, age_seconds, now, **values):
    node = make_node(name=name, provision_state=state, **values)
    store.update_node(node.id, {
        "provision_updated_at": now - datetime.timedelta(seconds=age_seconds)})
    return node


def test_wait_timeouts_fail_only_nodes_past_their_states_timeout(store, make_node,
                                                                  settings):
    now = utcnow()
    late_deploy = _waiting(store, make_node, "late-deploy", "wait call-back", 120, now)
    fresh_deploy = _waiting(store, make_node, "fresh-deploy", "wait call-back", 10, now)
    late_clean = _waiting(store, make_node, "late-clean", "clean wait", 700, now)
    # Older than the deploy timeout but within the clean one: must stay.
    fresh_clean = _waiting(store, make_node, "fresh-clean", "clean wait", 120, now)

    assert workers.check_wait_timeouts(store, settings, _drivers(), now) == 2

    node = store.get_node(late_deploy.uuid)
    assert node.provision_state == "deploy failed"
    assert "Timeout" in node.last_error and "60 seconds" in node.last_error
    assert node.reservation is None
    node = store.get_node(late_clean.uuid)
    assert node.provision_state == "clean failed"
    assert "Timeout" in node.last_error and "600 seconds" in node.last_error
    for fresh in (fresh_deploy, fresh_clean):
        node = store.get_node(fresh.uuid)
        assert node.provision_state in ("wait call-back", "clean wait")
        assert node.last_error is None


def test_wait_timeouts_leave_locked_and_foreign_nodes_alone(store, make_node, settings):
    now = utcnow()
    locked = _waiting(store, make_node, "locked", "wait call-back", 120, now)
    store.reserve(locked, "host-b")
    foreign = _waiting(store, make_node, "foreign", "wait call-back", 120, now,
                       conductor_affinity="host-b")
    assert workers.check_wait_timeouts(store, settings, _drivers(), now) == 0
    assert store.get_node("locked").provision_state == "wait call-back"
    assert store.get_node("locked").reservation == "host-b"
    assert store.get_node(foreign.uuid).provision_state == "wait call-back"
