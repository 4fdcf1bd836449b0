"""Pure parts of the host update engine: maintenance windows (incl. the week wrap),
the check schedule (jitter, backoff, cap) and update.conf parsing."""
from __future__ import annotations

import datetime as dt
import random

import pytest

from ramdisk_agent.host.update import config
from ramdisk_agent.host.update.schedule import Schedule
from ramdisk_agent.host.update.window import Window, WindowError, parse_duration

MONDAY = dt.datetime(2026, 12, 7)          # a Monday


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return MONDAY + dt.timedelta(days=day, hours=hour, minutes=minute)


@pytest.mark.parametrize("text,seconds", [("1h30m", 5400), ("90m", 5400), ("45s", 45),
                                          ("2h", 7200), ("1.5h", 5400), ("500ms", 0.5)])
def test_go_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "h", "1h 30m", "-1h", "30m1", "1hh"])
def test_bad_durations_are_refused(text):
    with pytest.raises(WindowError, match="duration"):
        parse_duration(text)


def test_weekly_window():
    window = Window.parse("Thu 04:00", "1h30m")
    assert not window.contains(at(3, 3, 59))
    assert window.contains(at(3, 4, 0)) and window.contains(at(3, 5, 29))
    assert not window.contains(at(3, 5, 30))
    assert window.seconds_until_open(at(3, 3)) == 3600
    assert window.seconds_until_open(at(3, 6)) == 7 * 86400 - 2 * 3600
    assert window.seconds_left(at(3, 5)) == 1800


def test_a_window_wraps_the_week():
    window = Window.parse("Sun 23:00", "2h")
    assert window.contains(at(6, 23, 30))
    assert window.contains(at(7, 0, 59))                 # Monday of the next week
    assert window.contains(at(0, 0, 30))                 # ... and of this one
    assert not window.contains(at(0, 1, 0))
    assert window.seconds_until_open(at(0, 1)) == 6 * 86400 + 22 * 3600


def test_a_daily_window_wraps_midnight():
    window = Window.parse("23:30", "1h")
    assert window.contains(at(2, 23, 45)) and window.contains(at(3, 0, 15))
    assert not window.contains(at(3, 0, 30))
    assert window.seconds_until_open(at(3, 12)) == 11.5 * 3600


@pytest.mark.parametrize("start,length,match", [
    ("Thx 04:00", "1h", "unknown day"), ("Thu 4", "1h", "HH:MM"), ("Thu 24:00", "1h", "HH:MM"),
    ("Thu 04:00", "0s", "more than 0"), ("04:00", "25h", "at most a day"),
    ("Thu 04:00 extra", "1h", "write"), ("Thu 04:00", "8d", "Go duration")])
def test_bad_windows_are_refused(start, length, match):
    with pytest.raises(WindowError, match=match):
        Window.parse(start, length)


def test_schedule_first_check_and_jitter():
    schedule = Schedule()
    firsts = [schedule.first(random.Random(seed)) for seed in range(200)]
    assert min(firsts) >= 300 and max(firsts) <= 900
    assert len({round(f) for f in firsts}) > 50          # hosts do not synchronise
    nexts = [schedule.next(0, random.Random(seed)) for seed in range(200)]
    assert min(nexts) >= 2400 and max(nexts) <= 3000


def test_backoff_doubles_and_is_capped():
    schedule = Schedule(fuzz=0)
    rng = random.Random(1)
    assert [schedule.next(n, rng) for n in range(4)] == [2700, 5400, 10800, 14400]
    assert schedule.next(60, rng) == 14400
    assert schedule.next(0, rng, poll_interval=600) == 600   # the server's PollInterval


def test_update_conf_is_read_like_flatcar():
    text = """# Flatcar's update.conf, with metalcast's keys
GROUP=beta
SERVER="https://appliance.example:8443/v1/update/"
REBOOT_STRATEGY=etcd-lock
REBOOT_WINDOW_START='Thu 04:00'
REBOOT_WINDOW_LENGTH=1h30m
HEALTH_COMMANDS="systemctl is-system-running; test -e /run/ok"
HEALTH_WINDOW=2m
FIRST_CHECK_DELAY=60
SLOTS=3,4
"""
    conf = config.build(config.parse_lines(text, "update.conf"))
    assert conf.group == "beta" and conf.reboot_strategy == "lease"
    assert conf.appliance == "https://appliance.example:8443"
    assert conf.leases_endpoint() == "https://appliance.example:8443/updates/v1/leases"
    assert conf.window == Window(3, 4 * 3600, 5400)
    assert conf.health_commands == ("systemctl is-system-running", "test -e /run/ok")
    assert conf.health_window == 120 and conf.schedule.first_delay == 60
    assert conf.slot_labels == ("3", "4") and conf.appid == config.METALCAST_APPID


def test_defaults_and_disabled_server():
    conf = config.build(config.parse_lines("SERVER=disabled\n", "x"))
    assert not conf.enabled and conf.appliance is None and conf.leases_endpoint() is None
    assert conf.health_window == 45 and conf.reboot_strategy == "reboot"
    assert conf.reboot_required_file == "/run/reboot-required"


@pytest.mark.parametrize("text,match", [
    ("SERVRE=http://x/\n", "unknown update.conf key.*SERVRE"),
    ("REBOOT_STRATEGY=sometimes\n", "REBOOT_STRATEGY.*one of reboot, lease, off"),
    ("SERVER=ftp://x/\n", "SERVER.*not an http"),
    ("REBOOT_WINDOW_START=Thu 04:00\n", "go together"),
    ("HEALTH_NEEDS_APPLIANCE=perhaps\n", "not true or false"),
    ("SLOTS=USR-A\n", "two slots"),
    ("just a line\n", "x:1: expected KEY=value"),
    ('GROUP="unterminated\n', "x:1:"),
])
def test_bad_settings_say_which_and_how(text, match):
    with pytest.raises(config.ConfigError, match=match):
        config.build(config.parse_lines(text, "x"))


def test_files_then_overrides(tmp_path):
    first, second = tmp_path / "a.conf", tmp_path / "b.conf"
    first.write_text("GROUP=alpha\nSERVER=http://a/v1/update/\n")
    second.write_text("GROUP=beta\n")
    conf = config.load([str(first), str(second), str(tmp_path / "missing")],
                       {"reboot_strategy": "off"})
    assert (conf.group, conf.server, conf.reboot_strategy) == ("beta", "http://a/v1/update/",
                                                                "off")
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load([str(tmp_path / "missing")], required=True)
