"""Nebraska's decision for one update check, as a pure function (spec §2.4).

:func:`decide` takes the group's policy, the instance, the channel's version and the
rollout figures the caller read, and says what to answer: ``noupdate``, an update to
one version (the next mandatory floor first, pain point 4), or one of Nebraska's
``error-…`` app statuses. No I/O and no clock of its own (``now`` is passed in), so
the whole table is unit-tested.

Rules, in order (each a row of :data:`RULES`):

1. no version on the channel                        -> error-noPackageFound
2. instance not below the target                    -> noupdate
3. instance already downloading/downloaded/installed
   within the update timeout                        -> error-updateInProgressOnInstance
3b. the instance rolled back from the target       -> noupdate (never the same
                                                       broken version again)
4. updates disabled (paused) or group halted        -> error-updatesDisabled
5. outside office hours / the maintenance window    -> noupdate (come back later)
6. percentage rollout: the instance's stable bucket
   (SHA-256 of machine id + target version, CoreUpdate style) above the percentage
                                                    -> noupdate
7. instances updating within the timeout >= the effective maximum (the per-period
   maximum; 1 in safe mode while no instance attempted the target)
                                                    -> error-maxConcurrentUpdatesLimitReached
8. instances whose update of the target timed out (granted, never finished within
   the timeout) >= the effective maximum             -> error-maxTimedOutUpdatesLimitReached,
   and in safe mode the group halts (``Decision.halts``: the caller writes it)
9. grants in the current period >= the maximum      -> error-maxUpdatesPerPeriodLimitReached

Rules 7 and 8 need counts over the group's instances: the caller reads them only when
the rules before would grant and :func:`needs_counts` says the policy limits anything
(Nebraska's seeded groups, 999,999 per period, do not).
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re
from collections.abc import Callable, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Instance states during which a new grant is refused (Nebraska's rule 2).
IN_PROGRESS = frozenset({"downloading", "downloaded", "installed"})
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"(?:(mon|tue|wed|thu|fri|sat|sun)[a-z]*\s+)?([01]?\d|2[0-3]):([0-5]\d)",
                     re.IGNORECASE)
#: Nebraska's office hours: Monday to Friday, 09:00-17:00 in the group's time zone.
OFFICE_DAYS, OFFICE_START, OFFICE_END = range(5), 9, 17
BUCKETS = 10000
#: Nebraska's seeded public groups allow 999,999 updates per period: no limit at all.
UNLIMITED = 999999


def version_key(version: str) -> tuple:
    """A sortable key: dotted numbers compare as numbers ("10.0" > "9.9"), other parts
    as text after numbers; a pre-release suffix ("-rc1") sorts before the release."""
    main, _, pre = version.partition("-")
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in main.split("."))
    return (parts, (0 if pre else 1, pre))


def below(version: str, other: str) -> bool:
    return version_key(version) < version_key(other)


def bucket(machineid: str, version: str) -> float:
    """The instance's place in a rollout of ``version``, 0 <= b < 100: stable for one
    machine and version, uniform over machines; an instance is in at percentage p when
    b < p, so raising p never takes an instance out."""
    digest = hashlib.sha256(f"{machineid}\0{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS * 100 / BUCKETS


@dataclasses.dataclass(frozen=True)
class Policy:
    """A group's rollout policy (the update_groups columns)."""

    updates_enabled: bool = True
    safe_mode: bool = False
    max_updates_per_period: int = 999999
    period_interval: int = 60              # seconds
    update_timeout: int = 3600             # seconds an in-progress update holds
    office_hours: bool = False
    window_start: str | None = None        # "Thu 04:00" (weekly) or "04:00" (daily)
    window_length: int | None = None       # seconds
    timezone: str = "UTC"
    rollout_percent: int = 100
    floors: tuple[str, ...] = ()
    halted_reason: str | None = None


@dataclasses.dataclass(frozen=True)
class Situation:
    """What one check knows besides the policy."""

    machineid: str
    version: str                           # the instance's running version
    channel_version: str | None
    status: str = "new"                    # the instance's status
    granted_at: datetime.datetime | None = None
    attempted: int = 0                     # instances that attempted the target so far
    in_progress: int = 0                   # instances updating within the timeout
    timed_out: int = 0                     # instances whose update of the target timed out
    period_grants: int = 0                 # grants of the current period
    rolled_back: str | None = None         # a version this instance rolled back from


@dataclasses.dataclass(frozen=True)
class Decision:
    status: str                            # "ok", "noupdate" or an error-… app status
    version: str | None = None             # the version to offer when "ok"
    reason: str = ""
    halts: bool = False                    # the caller must halt the group (safe mode)

    @property
    def grants(self) -> bool:
        return self.status == "ok"


def target(policy: Policy, version: str, channel_version: str) -> str:
    """The version to offer: the lowest floor above ``version`` and below the channel's
    version, else the channel's version."""
    floors = sorted((f for f in policy.floors
                     if below(version, f) and below(f, channel_version)), key=version_key)
    return floors[0] if floors else channel_version


def parse_window(text: str) -> tuple[int | None, int]:
    """``"Thu 04:00"`` -> (3, 240), ``"04:00"`` -> (None, 240): weekday (None: every
    day) and minute of the day; ValueError for anything else."""
    match = _WINDOW.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"maintenance window start {text!r}: use 'Thu 04:00' or '04:00'")
    day, hour, minute = match.groups()
    return (None if day is None else DAYS.index(day[:3].lower()),
            int(hour) * 60 + int(minute))


def zone(name: str) -> datetime.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def in_window(policy: Policy, now: datetime.datetime) -> bool:
    """Whether ``now`` is inside the office hours and the maintenance window (each only
    when set)."""
    local = now.astimezone(zone(policy.timezone))
    if policy.office_hours and not (local.weekday() in OFFICE_DAYS
                                    and OFFICE_START <= local.hour < OFFICE_END):
        return False
    if not policy.window_start or not policy.window_length:
        return True
    day, minute = parse_window(policy.window_start)
    for back in range(0, 8):      # the window may have opened on an earlier day
        opened = (local - datetime.timedelta(days=back)).replace(
            hour=minute // 60, minute=minute % 60, second=0, microsecond=0)
        if day is not None and opened.weekday() != day:
            continue
        if opened <= local < opened + datetime.timedelta(seconds=policy.window_length):
            return True
    return False


Rule = Callable[[Policy, Situation, str, datetime.datetime], Decision | None]


def _in_progress(policy: Policy, s: Situation, goal: str, now: datetime.datetime):
    if s.status in IN_PROGRESS and s.granted_at is not None and \
            now - s.granted_at < datetime.timedelta(seconds=policy.update_timeout):
        return Decision("error-updateInProgressOnInstance", reason=f"already {s.status}")
    return None


def _rolled_back(policy: Policy, s: Situation, goal: str, now: datetime.datetime):
    if s.rolled_back == goal:
        return Decision("noupdate", reason=f"the instance rolled back from {goal}")
    return None


def _disabled(policy: Policy, s: Situation, goal: str, now: datetime.datetime):
    if policy.halted_reason:
        return Decision("error-updatesDisabled", reason=f"halted: {policy.halted_reason}")
    if not policy.updates_enabled:
        return Decision("error-updatesDisabled", reason="updates are paused")
    return None


def _window(policy: Policy, s: Situation, goal: str, now: datetime.datetime):
    return None if in_window(policy, now) else \
        Decision("noupdate", reason="outside office hours / maintenance window")


def _rollout(policy: Policy, s: Situation, goal: str, now: datetime.datetime):
    if bucket(s.machineid, goal) < policy.rollout_percent:
        return None
    return Decision("noupdate", reason=f"not yet in the {policy.rollout_percent}% rollout")


def needs_counts(policy: Policy) -> bool:
    """Whether rules 7 and 8 can refuse anything under ``policy``."""
    return policy.safe_mode or policy.max_updates_per_period < UNLIMITED


def effective_max(policy: Policy, s: Situation) -> int:
    """Nebraska's effective maximum: 1 in safe mode until an instance attempted the
    target, else the group's per-period maximum."""
    return 1 if policy.safe_mode and s.attempted == 0 else policy.max_updates_per_period


def _concurrency(policy: Policy, s: Situation, goal: str, now: datetime.datetime):
    limit = effective_max(policy, s)
    if s.in_progress >= limit:
        first = policy.safe_mode and s.attempted == 0
        return Decision("error-maxConcurrentUpdatesLimitReached", reason=(
            "safe mode: the first instance is still updating" if first else
            f"{s.in_progress} instances updating (at most {limit} at once)"))
    return None


def _timed_out(policy: Policy, s: Situation, goal: str, now: datetime.datetime):
    limit = effective_max(policy, s)
    if s.timed_out >= limit:
        return Decision("error-maxTimedOutUpdatesLimitReached", halts=policy.safe_mode,
                        reason=f"{s.timed_out} updates to {goal} timed out "
                               f"(no report within {policy.update_timeout} s)")
    return None


def _period(policy: Policy, s: Situation, goal: str, now: datetime.datetime):
    if s.period_grants >= policy.max_updates_per_period:
        return Decision("error-maxUpdatesPerPeriodLimitReached",
                        reason=f"{s.period_grants} updates this period")
    return None


RULES: Sequence[Rule] = (_in_progress, _rolled_back, _disabled, _window, _rollout,
                         _concurrency, _timed_out, _period)


def decide(policy: Policy, situation: Situation, now: datetime.datetime) -> Decision:
    """What to answer one update check (the rules of this module's docstring)."""
    if not situation.channel_version:
        return Decision("error-noPackageFound", reason="the channel has no version")
    if not below(situation.version, situation.channel_version):
        return Decision("noupdate", reason="up to date")
    goal = target(policy, situation.version, situation.channel_version)
    for rule in RULES:
        decision = rule(policy, situation, goal, now)
        if decision is not None:
            return decision
    return Decision("ok", goal)
