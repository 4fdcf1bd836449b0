"""Reboot maintenance windows: ``REBOOT_WINDOW_START="Thu 04:00"`` plus
``REBOOT_WINDOW_LENGTH="1h30m"`` (locksmith's settings, spec §4.1).

A start without a day ("04:00") is a daily window. Times are the host's local wall
clock, as locksmith reads them. Windows may wrap the week (Sun 23:00 for 2h ends on
Monday 01:00) and a daily window may wrap midnight. Pure: callers pass the time.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK = 7 * 24 * 3600
DAY = 24 * 3600
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class WindowError(ValueError):
    """A window setting that cannot be read; the message says which and how."""


def parse_duration(text: str) -> float:
    """A Go duration ("1h30m", "90m", "45s") in seconds."""
    raw = text.strip().lower()
    if not raw:
        raise WindowError("empty duration: write it as Go does, e.g. 1h30m")
    position, total = 0, 0.0
    for match in _DURATION.finditer(raw):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT[match.group(2)]
        position = match.end()
    if position != len(raw):
        raise WindowError(f"duration {text!r} is not a Go duration such as 1h30m or 45m")
    return total


@dataclasses.dataclass(frozen=True)
class Window:
    """A weekly (``day`` 0-6, Monday first) or daily (``day`` None) window."""

    day: int | None
    start: int          #: seconds after midnight
    length: float       #: seconds

    @classmethod
    def parse(cls, start: str, length: str) -> Window:
        parts = start.strip().split()
        if len(parts) not in (1, 2):
            raise WindowError(f"REBOOT_WINDOW_START {start!r}: write 'Thu 04:00' or '04:00'")
        day = None
        if len(parts) == 2:
            name = parts[0][:3].lower()
            if name not in DAYS:
                raise WindowError(f"REBOOT_WINDOW_START {start!r}: unknown day "
                                  f"{parts[0]!r} (Mon..Sun)")
            day = DAYS.index(name)
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", parts[-1])
        if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise WindowError(f"REBOOT_WINDOW_START {start!r}: the time must be HH:MM")
        seconds = parse_duration(length)
        period = DAY if day is None else WEEK
        if not 0 < seconds <= period:
            raise WindowError(f"REBOOT_WINDOW_LENGTH {length!r} must be more than 0 and at "
                              f"most a {'day' if day is None else 'week'}")
        return cls(day, int(match.group(1)) * 3600 + int(match.group(2)) * 60, seconds)

    @property
    def period(self) -> int:
        return DAY if self.day is None else WEEK

    def _since_start(self, now: dt.datetime) -> float:
        """Seconds since the most recent start of the window (0 <= x < period)."""
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        of_day = (now - midnight).total_seconds()
        position = of_day if self.day is None else now.weekday() * DAY + of_day
        start = self.start if self.day is None else self.day * DAY + self.start
        return (position - start) % self.period

    def contains(self, now: dt.datetime) -> bool:
        return self._since_start(now) < self.length

    def seconds_until_open(self, now: dt.datetime) -> float:
        """0 inside the window, else the seconds until it next opens."""
        since = self._since_start(now)
        return 0.0 if since < self.length else self.period - since

    def seconds_left(self, now: dt.datetime) -> float:
        """Seconds until the window closes (0 outside it)."""
        since = self._since_start(now)
        return max(self.length - since, 0.0)

    def describe(self) -> str:
        day = "daily" if self.day is None else DAYS[self.day].capitalize()
        return (f"{day} {self.start // 3600:02d}:{self.start % 3600 // 60:02d} "
                f"for {self.length / 60:g} min")
