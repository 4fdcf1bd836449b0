"""Nebraska's decision for one update check (conductor/updates/policy.py), rule by rule."""
from __future__ import annotations

import dataclasses
import datetime

import pytest

from conductor.updates import policy
from conductor.updates.policy import Decision, Policy, Situation, decide

UTC = datetime.UTC
#: A Wednesday, 12:00 UTC.
NOON_WED = datetime.datetime(2026, 12, 9, 12, 0, tzinfo=UTC)


def situation(**values) -> Situation:
    return dataclasses.replace(Situation("m" * 32, "1.0.0", "2.0.0"), **values)


@pytest.mark.parametrize("older, newer", [
    ("1.0.0", "2.0.0"), ("9.9", "10.0"), ("3033.2.0", "3033.2.1"), ("1.0.0-rc1", "1.0.0"),
    ("1.0", "1.0.1"), ("1.0.a", "1.0.b")])
def test_versions_compare_as_dotted_numbers(older, newer):
    assert policy.below(older, newer) and not policy.below(newer, older)
    assert not policy.below(newer, newer)


def test_no_channel_version_is_no_package():
    assert decide(Policy(), situation(channel_version=None), NOON_WED).status == \
        "error-noPackageFound"


def test_up_to_date_or_newer_is_noupdate():
    for version in ("2.0.0", "2.1.0"):
        assert decide(Policy(), situation(version=version), NOON_WED) == \
            Decision("noupdate", reason="up to date")


def test_an_update_is_offered_to_the_channel_version():
    assert decide(Policy(), situation(), NOON_WED) == Decision("ok", "2.0.0")


def test_floors_are_passed_through_in_order():
    floors = Policy(floors=("1.5.0", "1.2.0", "2.0.0", "0.9"))
    assert decide(floors, situation(), NOON_WED).version == "1.2.0"
    assert decide(floors, situation(version="1.2.0"), NOON_WED).version == "1.5.0"
    assert decide(floors, situation(version="1.5.0"), NOON_WED).version == "2.0.0"


@pytest.mark.parametrize("status", sorted(policy.IN_PROGRESS))
def test_an_instance_in_progress_gets_no_second_grant_until_the_timeout(status):
    granted = NOON_WED - datetime.timedelta(minutes=30)
    busy = situation(status=status, granted_at=granted)
    assert decide(Policy(update_timeout=3600), busy, NOON_WED).status == \
        "error-updateInProgressOnInstance"
    assert decide(Policy(update_timeout=600), busy, NOON_WED).grants


def test_a_rolled_back_version_is_not_offered_again_but_the_next_one_is():
    assert decide(Policy(), situation(rolled_back="2.0.0"), NOON_WED).status == "noupdate"
    assert decide(Policy(), situation(rolled_back="2.0.0", channel_version="2.0.1"),
                  NOON_WED).version == "2.0.1"


def test_paused_or_halted_groups_give_nothing():
    assert decide(Policy(updates_enabled=False), situation(), NOON_WED).status == \
        "error-updatesDisabled"
    halted = decide(Policy(halted_reason="rollback on m1"), situation(), NOON_WED)
    assert halted.status == "error-updatesDisabled" and "rollback on m1" in halted.reason


@pytest.mark.parametrize("when, inside", [
    (NOON_WED, True),
    (NOON_WED.replace(hour=8, minute=59), False),
    (NOON_WED.replace(hour=17), False),
    (NOON_WED + datetime.timedelta(days=3), False),     # Saturday
])
def test_office_hours(when, inside):
    assert decide(Policy(office_hours=True), situation(), when).grants is inside


def test_office_hours_are_in_the_group_time_zone():
    # 12:00 UTC is 21:00 in Tokyo: outside; 00:30 UTC Thursday is 09:30 there: inside
    tokyo = Policy(office_hours=True, timezone="Asia/Tokyo")
    assert not decide(tokyo, situation(), NOON_WED).grants
    assert decide(tokyo, situation(), NOON_WED.replace(day=10, hour=0, minute=30)).grants


@pytest.mark.parametrize("start, length, when, inside", [
    ("Thu 04:00", 5400, datetime.datetime(2026, 12, 10, 4, 0, tzinfo=UTC), True),
    ("Thu 04:00", 5400, datetime.datetime(2026, 12, 10, 5, 29, tzinfo=UTC), True),
    ("Thu 04:00", 5400, datetime.datetime(2026, 12, 10, 5, 30, tzinfo=UTC), False),
    ("Thu 04:00", 5400, datetime.datetime(2026, 12, 9, 4, 30, tzinfo=UTC), False),
    ("Sun 23:00", 7200, datetime.datetime(2026, 12, 14, 0, 30, tzinfo=UTC), True),  # Mon
    ("02:00", 3600, datetime.datetime(2026, 12, 12, 2, 59, tzinfo=UTC), True),
    ("02:00", 3600, datetime.datetime(2026, 12, 12, 3, 0, tzinfo=UTC), False),
])
def test_maintenance_window(start, length, when, inside):
    window = Policy(window_start=start, window_length=length)
    decision = decide(window, situation(), when)
    assert decision.grants is inside
    if not inside:
        assert decision.status == "noupdate" and "window" in decision.reason


@pytest.mark.parametrize("text", ["Thu", "25:00", "Thursday 4", "Xyz 04:00", ""])
def test_bad_windows_are_refused(text):
    with pytest.raises(ValueError):
        policy.parse_window(text)


def test_percentage_buckets_are_stable_uniform_and_monotone():
    machines = [f"{n:032x}" for n in range(4000)]
    buckets = [policy.bucket(m, "2.0.0") for m in machines]
    assert buckets == [policy.bucket(m, "2.0.0") for m in machines]      # stable
    assert all(0 <= b < 100 for b in buckets)
    admitted = {p: {m for m in machines
                    if decide(Policy(rollout_percent=p), situation(machineid=m),
                              NOON_WED).grants} for p in (0, 10, 50, 100)}
    assert admitted[0] == set() and admitted[100] == set(machines)
    assert admitted[10] <= admitted[50] <= admitted[100]                  # monotone
    assert 300 < len(admitted[10]) < 500 and 1800 < len(admitted[50]) < 2200
    # a new version reshuffles who goes first
    again = {m for m in machines if policy.bucket(m, "3.0.0") < 10}
    assert again != admitted[10]


def test_safe_mode_lets_one_instance_go_first():
    safe = Policy(safe_mode=True)
    assert decide(safe, situation(), NOON_WED).grants
    assert decide(safe, situation(in_progress=1), NOON_WED).status == \
        "error-maxConcurrentUpdatesLimitReached"
    assert decide(safe, situation(in_progress=1, attempted=1), NOON_WED).grants
    assert decide(Policy(), situation(in_progress=5), NOON_WED).grants


def test_concurrent_updates_are_capped_by_the_per_period_maximum():
    """Nebraska: instances updating within the timeout >= max puts the next on hold,
    in safe mode too once an instance attempted the target."""
    limited = Policy(max_updates_per_period=3)
    assert decide(limited, situation(in_progress=2), NOON_WED).grants
    held = decide(limited, situation(in_progress=3), NOON_WED)
    assert held.status == "error-maxConcurrentUpdatesLimitReached"
    assert "at most 3" in held.reason
    safe = dataclasses.replace(limited, safe_mode=True)
    assert decide(safe, situation(in_progress=3, attempted=1), NOON_WED).status == \
        "error-maxConcurrentUpdatesLimitReached"
    assert not policy.needs_counts(Policy())          # Nebraska's seeded: unlimited
    assert policy.needs_counts(limited) and policy.needs_counts(Policy(safe_mode=True))


def test_timed_out_updates_stop_the_rollout_and_halt_a_safe_mode_group():
    limited = Policy(max_updates_per_period=2)
    assert decide(limited, situation(timed_out=1), NOON_WED).grants
    stopped = decide(limited, situation(timed_out=2), NOON_WED)
    assert stopped.status == "error-maxTimedOutUpdatesLimitReached"
    assert not stopped.halts and "timed out" in stopped.reason
    safe = Policy(safe_mode=True)        # effective max 1 until an attempt
    halted = decide(safe, situation(timed_out=1), NOON_WED)
    assert halted.status == "error-maxTimedOutUpdatesLimitReached" and halted.halts
    # a timed-out update does not count as in progress: the first rule that refuses
    assert decide(safe, situation(timed_out=1, in_progress=1), NOON_WED).status == \
        "error-maxConcurrentUpdatesLimitReached"


def test_updates_per_period():
    limited = Policy(max_updates_per_period=2)
    assert decide(limited, situation(period_grants=1), NOON_WED).grants
    assert decide(limited, situation(period_grants=2), NOON_WED).status == \
        "error-maxUpdatesPerPeriodLimitReached"


def test_rules_apply_in_order():
    everything = Policy(updates_enabled=False, office_hours=True, rollout_percent=0,
                        max_updates_per_period=0)
    assert decide(everything, situation(), NOON_WED).status == "error-updatesDisabled"
    assert decide(dataclasses.replace(everything, updates_enabled=True), situation(),
                  NOON_WED.replace(hour=3)).reason.startswith("outside")
