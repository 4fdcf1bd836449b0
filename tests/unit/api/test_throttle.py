"""Password checks within their bounds: at once per client and in total, and a
growing wait for a client that keeps failing (api/throttle.py), on a fake clock."""
from __future__ import annotations

import ipaddress

import pytest

from api import throttle
from api.throttle import Busy, CheckBudget, CheckLimits, client_of


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _budget(**limits) -> tuple[CheckBudget, Clock]:
    clock = Clock()
    return CheckBudget(CheckLimits(**limits), clock=clock), clock


def _fail(budget: CheckBudget, client: str = "192.0.2.1") -> None:
    assert budget.run(client, lambda: False) is False


def test_a_check_runs_and_says_whether_the_password_was_right():
    budget, _ = _budget()
    assert budget.run("192.0.2.1", lambda: True) is True
    assert budget.run("192.0.2.1", lambda: False) is False


def test_checks_at_once_are_bounded_per_client_and_in_total():
    """A check that starts another while it runs: concurrency without threads."""
    budget, _ = _budget(total=3, per_client=2)

    def holding(client: str, then) -> bool:
        return budget.run(client, then)

    def refused(client: str, match: str):
        def check() -> bool:
            with pytest.raises(Busy, match=match) as busy:
                budget.run(client, lambda: pytest.fail("a check ran over the bound"))
            assert busy.value.retry_after == 1
            return True
        return check

    # 192.0.2.1 runs two checks at once: a third of its own is refused at once
    assert holding("192.0.2.1", lambda: holding(
        "192.0.2.1", refused("192.0.2.1", "in progress from 192.0.2.1")))
    # three run, of two clients: a fourth, of a third client, is refused (total)
    assert holding("192.0.2.1", lambda: holding("192.0.2.2", lambda: holding(
        "192.0.2.2", refused("192.0.2.3", "Too many logins in progress;"))))
    # every slot came back
    assert budget.run("192.0.2.1", lambda: True) and budget.run("192.0.2.3", lambda: True)


def test_a_client_that_keeps_failing_waits_longer_and_longer():
    budget, clock = _budget(free_failures=3, max_backoff=8)
    for _ in range(3):
        _fail(budget)  # the third failure in a row starts the waits
    waits = []
    for _ in range(6):
        with pytest.raises(Busy, match="Too many failed logins") as busy:
            budget.run("192.0.2.1", lambda: pytest.fail("no check while it waits"))
        waits.append(busy.value.retry_after)
        clock.now += busy.value.retry_after
        _fail(budget)
    assert waits == [1, 2, 4, 8, 8, 8]
    # another client is not held up by it
    assert budget.run("192.0.2.2", lambda: True)


def test_a_success_or_a_quiet_quarter_of_an_hour_clears_the_failures():
    budget, clock = _budget(free_failures=2, max_backoff=60)
    for _ in range(4):
        clock.now += 100
        _fail(budget)
    clock.now += 100
    assert budget.run("192.0.2.1", lambda: True)  # the right password: record cleared
    _fail(budget)
    _fail(budget)  # the free ones were back: both checked
    with pytest.raises(Busy):
        budget.run("192.0.2.1", lambda: True)
    clock.now += 901
    _fail(budget)
    _fail(budget)  # forgotten: free again


def test_an_exception_in_the_check_counts_as_a_failure_and_frees_the_slot():
    budget, _ = _budget(per_client=1, free_failures=1)

    def boom():
        raise RuntimeError("bcrypt")
    with pytest.raises(RuntimeError):
        budget.run("192.0.2.1", boom)
    with pytest.raises(Busy, match="failed logins"):  # one failure was counted
        budget.run("192.0.2.1", lambda: True)


def test_the_table_of_clients_stays_bounded(monkeypatch):
    monkeypatch.setattr("api.throttle.MAX_CLIENTS", 5)
    budget, _ = _budget()
    for n in range(50):
        _fail(budget, f"192.0.2.{n}")
    assert len(budget._clients) == 5


@pytest.mark.parametrize(("address", "key"), [
    ("192.0.2.7", "192.0.2.7"), ("::ffff:192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"), ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"), (None, "unknown"), ("not-an-ip", "not-an-ip"),
    ("0.0.0.0", "0.0.0.0"), ("255.255.255.255", "255.255.255.255"),
    ("192.0.2.07", "192.0.2.07"), ("192.0.2.256", "192.0.2.256"), ("192.0.2", "192.0.2"),
    ("192.0.2.7\n", "192.0.2.7\n")])
def test_a_client_is_its_address_or_its_ipv6_64(address, key):
    assert client_of(address) == key


def test_the_ipv4_shortcut_gives_what_ipaddress_gives():
    for text in ("10.0.0.1", "1.2.3.4", "100.64.0.199", "249.250.251.252", "9.99.199.200"):
        assert throttle._PLAIN_IPV4.fullmatch(text)
        assert client_of(text) == str(ipaddress.ip_address(text)) == text
    for text in ("01.2.3.4", "1.2.3.4.", "1.2.3.4 ", "1.2.3.300", "::1", "1.2.3.-4"):
        assert not throttle._PLAIN_IPV4.fullmatch(text)
