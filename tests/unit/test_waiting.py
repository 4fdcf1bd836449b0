"""tests.waiting.wait_until, the one polling helper every tier waits with."""
from __future__ import annotations

import pytest

from tests.waiting import wait_until


def countdown(ready_at: int, value="done", error: type[Exception] | None = None):
    """A predicate that is falsy (or raises ``error``) until its ``ready_at``-th call."""
    calls = []

    def predicate():
        calls.append(1)
        if len(calls) >= ready_at:
            return value
        if error is not None:
            raise error("not yet")
        return None
    return predicate, calls


def test_returns_the_first_truthy_value_without_waiting_longer():
    predicate, calls = countdown(3, value={"state": "active"})
    assert wait_until(predicate, timeout=5, interval=0) == {"state": "active"}
    assert len(calls) == 3


def test_timeout_fails_with_the_message_and_the_last_value():
    with pytest.raises(AssertionError,
                       match=r"after 0 s waiting for the node \(last value: \[\]\)"):
        wait_until(lambda: [], timeout=0, interval=0, message="the node")


def test_message_may_be_computed_at_the_end():
    seen = []
    with pytest.raises(AssertionError, match="log: 2 lines"):
        wait_until(lambda: seen.append(1), timeout=0, interval=0,
                   message=lambda: f"log: {len(seen) + 1} lines")


def test_ignored_exceptions_count_as_not_yet():
    predicate, calls = countdown(4, error=ConnectionError)
    assert wait_until(predicate, timeout=5, interval=0, ignore=ConnectionError) == "done"
    assert len(calls) == 4


def test_the_last_ignored_exception_is_reported():
    predicate, _ = countdown(10 ** 9, error=ConnectionError)
    with pytest.raises(AssertionError, match=r"last error: ConnectionError\('not yet'\)"):
        wait_until(predicate, timeout=0, interval=0, ignore=ConnectionError)


def test_other_exceptions_propagate_at_once():
    predicate, calls = countdown(10, error=KeyError)
    with pytest.raises(KeyError):
        wait_until(predicate, timeout=5, interval=0, ignore=ConnectionError)
    assert len(calls) == 1
