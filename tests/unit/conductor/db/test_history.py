"""Which node writes make history rows (pure: conductor.db.history.events)."""
from conductor.db import history


def test_state_change_is_an_info_row():
    found = history.events(("deploying", None), {"provision_state": "active"})
    assert found == [history.Event("INFO",
                                   "Provision state changed from deploying to active.")]


def test_state_change_with_an_error_is_one_error_row():
    found = history.events(("deploying", None), {"provision_state": "deploy failed",
                                                 "last_error": "boom"})
    assert found == [history.Event(
        "ERROR", "Provision state changed from deploying to deploy failed: boom")]


def test_new_error_without_state_change_is_an_error_row_once():
    assert history.events(("active", None), {"last_error": "power failed"}) == [
        history.Event("ERROR", "power failed")]
    assert history.events(("active", "power failed"), {"last_error": "power failed"}) == []


def test_writes_that_change_neither_make_nothing():
    assert history.events(("active", None), {"provision_state": "active"}) == []
    assert history.events(("active", "x"), {"last_error": None}) == []
    assert not history.watched({"power_state": "power on", "last_error": None})
    assert history.watched({"provision_state": "active"})
