"""Reboot strategies and the window, with a fake lease API, clock and users."""
from __future__ import annotations

import datetime as dt

import pytest

from ramdisk_agent.errors import UpdateEngineError
from ramdisk_agent.host.update.client import LeaseAnswer
from ramdisk_agent.host.update.reboot import LEASE_WAIT, Rebooter
from ramdisk_agent.host.update.window import Window

THURSDAY_4AM = dt.datetime(2026, 12, 10, 4, 0)


class FakeLeases:
    def __init__(self, free: bool = True):
        self.free = free
        self.calls: list[str] = []
        self.waits: list[float] = []

    def acquire(self, wait=0.0):
        self.calls.append("acquire")
        self.waits.append(wait)
        return LeaseAnswer(self.free, retry_after=0 if self.free else 30, holders=1, max=1)

    def renew(self):
        self.calls.append("renew")
        return LeaseAnswer(True)

    def release(self):
        self.calls.append("release")
        return LeaseAnswer(False)


class Clock:
    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def rebooter(strategy="lease", window=None, leases=None, users=(), clock=None):
    clock = clock or Clock(THURSDAY_4AM)
    reboots, warnings, held = [], [], []
    r = Rebooter(strategy, window, leases, ("reboot",), users=lambda: list(users),
                 warn=warnings.append, now=clock, sleep=clock.sleep,
                 run=lambda command: reboots.append(command))
    return r, reboots, warnings, held


def test_reboot_strategy_reboots_at_once():
    r, reboots, _, held = rebooter("reboot")
    assert r.step(held.append).action == "rebooting" and reboots == [("reboot",)]


def test_off_never_reboots():
    r, reboots, _, held = rebooter("off")
    assert r.step(held.append).action == "off" and reboots == []


def test_lease_strategy_needs_the_lease():
    leases = FakeLeases(free=False)
    r, reboots, _, held = rebooter(leases=leases)
    step = r.step(held.append)
    assert (step.action, step.retry_in, reboots, held) == ("lease-busy", 30, [], [])
    leases.free = True
    assert r.step(held.append).action == "rebooting" and held == [True]
    # each acquire asks the appliance to hold it until a slot frees
    assert leases.waits == [LEASE_WAIT, LEASE_WAIT] and LEASE_WAIT > 0


def test_outside_the_window_no_lease_is_taken_and_a_held_one_is_released():
    leases = FakeLeases()
    window = Window.parse("Thu 05:00", "1h")
    r, reboots, _, held = rebooter(window=window, leases=leases)
    step = r.step(held.append)
    assert step.action == "outside-window" and step.retry_in == 3600
    assert reboots == [] and leases.calls == ["release"] and held == [False]


def test_users_get_a_warning_and_the_window_is_checked_again():
    """A lease taken at the end of the window: the 5-minute warning runs past its end,
    so there is no reboot and the lease is given back (locksmith#408's deadlock)."""
    leases = FakeLeases()
    clock = Clock(THURSDAY_4AM + dt.timedelta(minutes=58))
    r, reboots, warnings, held = rebooter(window=Window.parse("Thu 04:00", "1h"),
                                          leases=leases, users=("ops",), clock=clock)
    step = r.step(held.append)
    assert step.action == "window-closed" and reboots == []
    assert "5 minutes" in warnings[0]
    assert leases.calls == ["acquire", "renew", "renew", "renew", "renew", "renew", "release"]
    assert held == [True, False]


def test_users_get_five_minutes_then_the_reboot():
    clock = Clock(THURSDAY_4AM)
    r, reboots, warnings, held = rebooter("reboot", users=("ops",), clock=clock)
    assert r.step(held.append).action == "rebooting"
    assert clock.now - THURSDAY_4AM == dt.timedelta(minutes=5) and len(warnings) == 1


def test_lease_strategy_without_a_lease_api_is_refused():
    with pytest.raises(UpdateEngineError, match="lease URL"):
        Rebooter("lease", None, None, ["reboot"])
