"""The build checks of §6.3 in their order, and the stages of §6.4 (table-driven)."""
from __future__ import annotations

import dataclasses

import pytest

from conductor.alarms import Alarm
from conductor.orchestration import options
from conductor.orchestration.hosts import FleetHost
from conductor.orchestration.patch_build import Snapshot, blocking_alarms, build

PATCHES = {"P1": {"patchstate": "Partial-Apply"}}
BASE = options.parse({"controller-apply-type": "serial", "storage-apply-type": "serial",
                      "worker-apply-type": "serial", "default-instance-action": "migrate"})


def host(name: str, *kinds: str, **fields) -> FleetHost:
    fields.setdefault("patch_current", False)
    return FleetHost(name, f"uuid-{name}", frozenset(kinds or ("worker",)), **fields)


def six(**changes) -> dict[str, FleetHost]:
    """controller-0/1, storage-0/1, compute-0/1, none current; ``changes`` per host."""
    hosts = [host("controller-0", "controller"), host("controller-1", "controller"),
             host("storage-0", "storage"), host("storage-1", "storage"),
             host("compute-0", "worker"), host("compute-1", "worker")]
    return {h.name: dataclasses.replace(h, **changes.get(h.name, {})) for h in hosts}


def run(hosts, patches=PATCHES, alarms=(), local="controller-0", **opts):
    chosen = dict(BASE, **{k.replace("_", "-"): v for k, v in opts.items()})
    return build(chosen, Snapshot(hosts, patches, list(alarms), local))


def stage_hosts(stages):
    return [(s.name, [n for st in s.steps if st.name == "sw-patch-hosts"
                      for n in st.entity_names]) for s in stages]


LOCKED_WORKER = {"administrative": "locked", "operational": "disabled"}


@pytest.mark.parametrize("hosts, patches, alarms, reason", [
    (six(), {}, [], "no software patches found"),
    # no patches is checked before alarms
    (six(), {}, [Alarm("100.101", "host=x", "critical", "hot")], "no software patches found"),
    (six(), PATCHES, [Alarm("100.101", "host=x", "minor", "warm")], "active alarms present"),
    (six(controller_1={}), PATCHES, [Alarm("900.001", "host=controller", "minor", "p"),
                                     Alarm("900.101", "orchestration", "major", "a")], ""),
    (six(**{"compute-0": {"administrative": "unlocked", "operational": "disabled",
                          "availability": "offline"}}), PATCHES, [],
     "all worker hosts must be unlocked-enabled-available, locked-disabled-online or "
     "locked-disabled-offline"),
    (six(**{"compute-0": dict(LOCKED_WORKER, availability="offline")}), PATCHES, [], ""),
    (six(**{"compute-0": dict(LOCKED_WORKER, availability="online")}), PATCHES, [], ""),
    (six(**{"controller-1": dict(LOCKED_WORKER, availability="online")}), PATCHES, [],
     "all controller hosts must be unlocked-enabled-available"),
    (six(**{"storage-0": {"availability": "offline", "operational": "disabled"}}), PATCHES,
     [], "all storage hosts must be unlocked-enabled-available"),
    (six(**{"compute-1": {"in_inventory": False}}), PATCHES, [],
     "host inventory mismatch detected"),
    (six(**{"compute-1": {"interim": True}}), PATCHES, [],
     "at least one host is in pending patch current state"),
    ({n: dataclasses.replace(h, patch_current=True) for n, h in six().items()}, PATCHES, [],
     "no software patches need to be applied"),
])
def test_build_checks_in_order(hosts, patches, alarms, reason):
    hosts = {n.replace("_", "-"): h for n, h in hosts.items()}
    found, stages = run(hosts, patches, alarms)
    assert found == reason
    assert bool(stages) == (not reason)


def test_relaxed_ignores_alarms_that_are_not_management_affecting():
    minor = Alarm("100.101", "host=x", "minor", "warm")
    assert blocking_alarms([minor], "strict") == ["100.101"]
    assert blocking_alarms([minor], "relaxed") == []
    assert blocking_alarms([Alarm("100.101", "host=x", "major", "hot")], "relaxed") == \
        ["100.101"]
    assert run(six(), alarms=[minor], alarm_restrictions="relaxed")[0] == ""


def test_serial_stage_order_no_reboot_before_reboot_and_active_controller_last():
    hosts = six(**{"controller-0": {"requires_reboot": True},
                   "compute-1": {"requires_reboot": True},
                   "storage-1": {"patch_current": True}})
    reason, stages = run(hosts, local="controller-0")
    assert reason == ""
    assert stage_hosts(stages) == [
        ("sw-patch-controllers", ["controller-1"]),
        ("sw-patch-controllers", ["controller-0"]),
        ("sw-patch-storage-hosts", ["storage-0"]),
        ("sw-patch-worker-hosts", ["compute-0"]),
        ("sw-patch-worker-hosts", ["compute-1"])]
    names = [[st.name for st in s.steps] for s in stages]
    assert names[0] == ["query-alarms", "sw-patch-hosts", "system-stabilize"]
    assert names[1] == ["query-alarms", "swact-hosts", "lock-hosts", "sw-patch-hosts",
                        "system-stabilize", "unlock-hosts", "wait-alarms-clear"]
    assert names[4] == ["query-alarms", "lock-hosts", "sw-patch-hosts", "system-stabilize",
                        "unlock-hosts", "system-stabilize"]
    assert [st.timeout for st in stages[1].steps] == [60, 900, 900, 1800, 15, 1800, 1800]
    assert stages[1].timeout == sum(st.timeout for st in stages[1].steps) + 1
    assert stages[0].steps[-1].timeout == 30 and stages[4].steps[-1].timeout == 60


def test_active_controller_is_last_only_when_it_is_a_patch_host():
    _, stages = run(six(), local="elsewhere")
    assert stage_hosts(stages)[:2] == [("sw-patch-controllers", ["controller-0"]),
                                       ("sw-patch-controllers", ["controller-1"])]
    _, stages = run(six(), local="controller-0")
    assert stage_hosts(stages)[:2] == [("sw-patch-controllers", ["controller-1"]),
                                       ("sw-patch-controllers", ["controller-0"])]


@pytest.mark.parametrize("worker_apply_type, max_parallel, reboot, groups", [
    ("serial", 2, True, [["w0"], ["w1"], ["w2"], ["w3"], ["w4"]]),
    ("parallel", 2, True, [["w0", "w1"], ["w2", "w3"], ["w4"]]),
    ("parallel", 3, False, [["w0", "w1", "w2"], ["w3", "w4"]]),
    ("parallel", 100, True, [["w0", "w1", "w2", "w3", "w4"]]),
    ("ignore", 2, True, []),
])
def test_worker_groups(worker_apply_type, max_parallel, reboot, groups):
    hosts = {f"w{i}": host(f"w{i}", "worker", requires_reboot=reboot) for i in range(5)}
    hosts["c0"] = host("c0", "controller", patch_current=True)
    reason, stages = run(hosts, worker_apply_type=worker_apply_type,
                         max_parallel_worker_hosts=max_parallel)
    assert reason == ("" if groups else "no software patches need to be applied")
    assert [h for _, h in stage_hosts(stages)] == groups
    for stage in stages:
        assert ("lock-hosts" in [st.name for st in stage.steps]) == reboot


def test_aio_hosts_are_workers_first_each_alone_and_not_controller_stages():
    hosts = {"aio-0": host("aio-0", "controller", "worker", requires_reboot=True),
             "aio-1": host("aio-1", "controller", "worker", requires_reboot=True),
             "w0": host("w0", "worker", requires_reboot=True),
             "w1": host("w1", "worker", requires_reboot=True)}
    reason, stages = run(hosts, worker_apply_type="parallel", local="aio-0")
    assert reason == ""
    assert stage_hosts(stages) == [("sw-patch-worker-hosts", ["aio-0"]),
                                   ("sw-patch-worker-hosts", ["aio-1"]),
                                   ("sw-patch-worker-hosts", ["w0", "w1"])]
    first = [st.name for st in stages[0].steps]
    assert first[:3] == ["query-alarms", "swact-hosts", "lock-hosts"]
    assert first[-1] == "wait-alarms-clear"


def test_single_aio_controller_needs_stop_start():
    hosts = {"aio-0": host("aio-0", "controller", "worker")}
    assert run(hosts)[0] == "cannot migrate instances in a single controller configuration"
    reason, stages = run(hosts, default_instance_action="stop-start")
    assert reason == "" and stage_hosts(stages) == [("sw-patch-worker-hosts", ["aio-0"])]


def test_controller_and_storage_refusals():
    assert run(six(), controller_apply_type="parallel")[0] == \
        "parallel apply type not allowed for controllers"
    alone = {n: h for n, h in six().items() if n != "storage-1"}
    assert run(alone)[0] == "not enough storage hosts to apply software patches"
    reason, stages = run(alone, storage_apply_type="ignore")
    assert reason == "" and all(s.name != "sw-patch-storage-hosts" for s in stages)


def test_locked_workers_are_rebooted_not_unlocked_and_offline_ones_skipped():
    hosts = {"c0": host("c0", "controller", patch_current=True),
             "w0": host("w0", "worker", requires_reboot=True, **LOCKED_WORKER,
                        availability="online"),
             "w1": host("w1", "worker", requires_reboot=True, **LOCKED_WORKER,
                        availability="offline")}
    reason, stages = run(hosts)
    assert reason == "" and stage_hosts(stages) == [("sw-patch-worker-hosts", ["w0"])]
    assert [st.name for st in stages[0].steps] == [
        "query-alarms", "sw-patch-hosts", "system-stabilize", "reboot-hosts",
        "system-stabilize"]
