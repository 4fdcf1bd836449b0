"""The host agent's install decisions (§4.4) on recorded package lists, no rpm needed."""
from __future__ import annotations

from ramdisk_agent.host.plan import compute
from ramdisk_agent.wire.packages import Package

INSTALLED = [Package("base", "0", "1.0", "1", "noarch"),
             Package("up", "0", "1.0", "1", "x86_64"),
             Package("down", "1", "2.0", "1", "x86_64"),
             Package("gone", "0", "1.0", "1", "noarch"),
             Package("gpg-pubkey", "0", "abc", "def", "(none)")]
AVAILABLE = [Package("base", "0", "1.0", "1", "noarch"),
             Package("up", "0", "1.0", "1", "x86_64"),
             Package("up", "0", "1.10", "1", "x86_64"),
             Package("up", "0", "1.9", "1", "x86_64"),
             Package("up", "0", "9.0", "1", "i686"),        # another arch does not count
             Package("down", "1", "1.5", "1", "x86_64"),
             Package("new", "0", "1.0", "1", "noarch")]


def test_latest_per_name_and_arch_decides_upgrade_downgrade_erase_missing():
    plan = compute(INSTALLED, AVAILABLE, ["new", "base"])
    assert plan.summary() == {"upgrade": ["up-1.10-1.x86_64"],
                              "downgrade": ["down-1:1.5-1.x86_64"],
                              "erase": ["gone-1.0-1.noarch"], "install": ["new"]}
    assert plan.installed_report() == {"up": "1.0-1@x86_64", "down": "1:2.0-1@x86_64"}
    assert plan.changes and plan.duplicated == {}
    assert plan.commands() == ["upgrade up-1.10-1.x86_64", "downgrade down-1:1.5-1.x86_64",
                               "remove gone-1.0-1.noarch", "install new"]
    forward = plan.forward_only()
    assert forward.commands() == ["upgrade up-1.10-1.x86_64", "install new"]


def test_current_host_has_nothing_to_do():
    current = [Package("base", "0", "1.0", "1", "noarch")]
    plan = compute(current, AVAILABLE, ["base"])
    assert not plan.changes and plan.commands() == []


def test_duplicates_are_reported():
    twice = INSTALLED + [Package("up", "0", "1.10", "1", "x86_64")]
    assert compute(twice, AVAILABLE, []).duplicated == {"up": {"x86_64": ["1.0-1", "1.10-1"]}}


def test_parse_rpm_query_line():
    assert Package.parse_line("bash\t0\t5.1\t4.el9\tx86_64") == \
        Package("bash", "0", "5.1", "4.el9", "x86_64")
    assert Package.parse_line("x\t(none)\t1\t1\tnoarch").epoch == "0"
