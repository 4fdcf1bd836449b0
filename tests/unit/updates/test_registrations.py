"""The per-address budget of new update instances (conductor/updates/registrations.py)."""
from __future__ import annotations

from conductor.updates.registrations import Registrations


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_per_address():
    clock = Clock()
    budget = Registrations(burst=3, rate=2, clock=clock)
    assert [budget.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert budget.allow("10.0.0.2")                     # another address: its own bucket
    clock.now = 0.5                                     # one token back
    assert [budget.allow("10.0.0.1") for _ in range(2)] == [True, False]
    clock.now = 100.0                                   # never more than the burst
    assert [budget.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]


def test_the_table_of_addresses_is_bounded():
    budget = Registrations(burst=1, rate=0, max_clients=100, clock=Clock())
    for n in range(1000):
        assert budget.allow(f"10.0.{n // 250}.{n % 250}")
    assert len(budget._buckets) == 100
    assert budget.allow("10.0.0.0")          # forgotten long ago: a fresh bucket
