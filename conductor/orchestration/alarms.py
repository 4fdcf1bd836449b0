"""The orchestration alarms (StarlingX's VIM): 900.101 while a patch strategy's
apply runs, 900.102 while it aborts, 900.103 once an apply ended unsuccessfully,
kept while some host is not patch-current and still requires a reboot (§6.2)."""
from __future__ import annotations

from collections.abc import Iterable

from conductor.alarms import Alarm
from conductor.orchestration.hosts import FleetHost
from conductor.orchestration.model import State, Strategy

IDS = ("900.101", "900.102", "900.103")
ENTITY = "orchestration=sw-patch"


def evaluate(strategy: Strategy | None, hosts: Iterable[FleetHost] = ()) -> list[Alarm]:
    """The orchestration alarms that should be active now."""
    if strategy is None or strategy.name != "sw-patch":
        return []
    wanted = []
    if strategy.state == State.APPLYING:
        wanted.append(Alarm("900.101", ENTITY, "major",
                            "Software patch auto-apply inprogress"))
    if strategy.state == State.ABORTING:
        wanted.append(Alarm("900.102", ENTITY, "major",
                            "Software patch auto-apply aborting"))
    if strategy.data.get("apply_failed") and any(
            not h.patch_current and h.requires_reboot for h in hosts):
        wanted.append(Alarm("900.103", ENTITY, "critical",
                            "Software patch auto-apply failed"))
    return wanted
