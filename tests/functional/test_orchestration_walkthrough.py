"""The six-host walkthrough (patch_lab.py: controller-0/1, storage-0/1, compute-0/1,
each a real ``metalcast-agent host``), driven by ``sw-manager patch-strategy create``
and ``apply`` alone: no ``sw-patch host-install``, no manual lock or unlock.

One server and fleet for the module; the scenarios run in order, each leaving every
host patch-current and unlocked: an in-service patch; a reboot-required patch with
workers two at a time (the hosts are locked, installed, rebooted by the lab's "BMC",
unlocked); a restart script failing on one host (the step fails, the strategy
aborts, later stages never run); an alarm raised mid-apply under strict (the next
stage's query-alarms fails); the server killed with SIGKILL mid-apply and started
again (the strategy resumes, no host is left locked).
"""
from __future__ import annotations

import pytest

from ramdisk_agent.host.convention import reboot_required_scriptlets
from tests.functional.orchestration_lab import (
    OrchestrationLab,
    Watch,
    steps_of,
    sw_manager,
    upload_and_apply,
)
from tests.functional.patch_lab import HOSTS, build, hosts, patch_state, sw_patch, wait_for
from tests.functional.rpm_tools import build_rpm
from tests.functional.stx_peers import free_tcp_port
from tests.functional.test_host_patching import installed, require_tools

CONTROLLERS, STORAGE, WORKERS = ("sw-patch-controllers", "sw-patch-storage-hosts",
                                 "sw-patch-worker-hosts")
#: Hosts in the order StarlingX patches them (no active controller among them).
ORDER = ["controller-0", "controller-1", "storage-0", "storage-1", "compute-0", "compute-1"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_tools()
    # Fixed boot-server port: the agents' repo URLs stay valid across a server restart.
    lab = OrchestrationLab(tmp_path_factory.mktemp("orchestration"), sections={
        "pxe": {"http_port": free_tcp_port()}, "orchestration": {"lease": 2}})
    yield lab
    lab.close()


def manager(lab, *argv: str):
    proc = sw_manager(lab, "patch-strategy", *argv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def run_strategy(lab, *options: str) -> dict:
    """create, apply, and watch until it ends: the strategy as it ended."""
    manager(lab, "create", *options)
    manager(lab, "apply")
    watched = sw_manager(lab, "patch-strategy", "show", "--watch", "--interval", "0.3")
    strategy = lab.strategy()
    assert strategy is not None and "state:" in watched.stdout, watched.stderr
    return strategy


def all_current(lab) -> bool:
    shown = hosts(lab)
    return len(shown) == len(HOSTS) and all(
        (row["Patch Current"], row["Reboot Required"]) == ("Yes", "No")
        for row in shown.values())


def finish(lab) -> None:
    """The scenario's end: delete the strategy; every host current and unlocked."""
    manager(lab, "delete")
    lab.wait_current()
    assert all_current(lab), hosts(lab)
    assert not lab.locked()
    assert {"900.101", "900.102"}.isdisjoint(lab.alarms())


def field_of(text: str, name: str) -> str:
    """The value of the ``name:`` line of sw-manager's output."""
    return next(line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.strip().startswith(name + ":"))


def stage_hosts(strategy: dict) -> list[tuple[str, list[str]]]:
    """(stage name, hosts it installs) of every apply stage."""
    return [(stage, names) for stage, step, names in steps_of(strategy)
            if step == "sw-patch-hosts"]


def test_in_service_patch(lab):
    lab.wait_current()
    rebooted = len(lab.rebooted)
    upload_and_apply(lab, lab.gate_patch("ORCH_0001", "1.1"))
    lab.wait_pending()
    strategy = run_strategy(lab)
    assert strategy["state"] == "applied", strategy["apply-phase"]["reason"]
    assert stage_hosts(strategy) == [
        (CONTROLLERS, ["controller-0"]), (CONTROLLERS, ["controller-1"]),
        (STORAGE, ["storage-0"]), (STORAGE, ["storage-1"]), (WORKERS, ["compute-0"]),
        (WORKERS, ["compute-1"])]
    assert "lock-hosts" not in {step for _, step, _ in steps_of(strategy)}
    for name in HOSTS:
        assert installed(lab.root(name))["gate"] == "1.1-1"
        assert (lab.root(name) / "var/log/gate.restarts").read_text() == "restarted\n"
    assert len(lab.rebooted) == rebooted and patch_state(lab, "ORCH_0001") == "Applied"
    finish(lab)


def test_reboot_required_patch_workers_two_at_a_time(lab):
    upload_and_apply(lab, build(lab, "ORCH_0002", "kern", "--reboot-required", "Y"))
    lab.wait_pending()
    rebooted = len(lab.rebooted)
    strategy = run_strategy(lab, "--worker-apply-type", "parallel",
                            "--max-parallel-worker-hosts", "2")
    assert strategy["state"] == "applied", strategy["apply-phase"]["reason"]
    assert stage_hosts(strategy) == [
        (CONTROLLERS, ["controller-0"]), (CONTROLLERS, ["controller-1"]),
        (STORAGE, ["storage-0"]), (STORAGE, ["storage-1"]),
        (WORKERS, ["compute-0", "compute-1"])]
    workers = [step for stage, step, names in steps_of(strategy) if stage == WORKERS]
    assert workers == ["query-alarms", "lock-hosts", "sw-patch-hosts", "system-stabilize",
                       "unlock-hosts", "system-stabilize"]
    assert sorted(lab.rebooted[rebooted:]) == sorted(HOSTS)    # each host rebooted once
    for name in HOSTS:
        assert installed(lab.root(name))["kern"] == "1.1-1"
    finish(lab)


def test_a_failing_restart_script_fails_the_step_and_aborts(lab):
    lab.fail_restart("storage-0")
    upload_and_apply(lab, lab.gate_patch("ORCH_0003", "1.2"))
    lab.wait_pending()
    strategy = run_strategy(lab)
    assert strategy["state"] == "aborted"
    apply = strategy["apply-phase"]
    assert apply["result"] == "failed"
    assert apply["reason"] == "software update failed to apply on host storage-0"
    results = [(stage["stage-name"], stage["result"]) for stage in apply["stages"]]
    assert results == [(CONTROLLERS, "success"), (CONTROLLERS, "success"),
                       (STORAGE, "failed"), (STORAGE, "initial"), (WORKERS, "initial"),
                       (WORKERS, "initial")]
    shown = sw_manager(lab, "patch-strategy", "show").stdout
    assert "apply-result:                           failed " in shown
    assert "abort-result:                           success " in shown
    assert not lab.locked()
    rows = hosts(lab)
    assert [rows[n]["Patch Current"] for n in ORDER] == ["Yes", "Yes", "Failed"] + ["No"] * 3
    manager(lab, "delete")
    # the operator's fix (the script, then a reboot), then a new strategy does the rest
    lab.fail_restart("storage-0", False)
    lab.reboot("storage-0")
    wait_for("storage-0 back without a pending reboot",
             lambda: hosts(lab)["storage-0"]["Reboot Required"] == "No")
    strategy = run_strategy(lab)
    assert strategy["state"] == "applied", strategy["apply-phase"]["reason"]
    assert [names for _, names in stage_hosts(strategy)] == \
        [["storage-1"], ["compute-0"], ["compute-1"]]
    finish(lab)


def test_an_alarm_raised_mid_apply_fails_the_next_stage(lab):
    upload_and_apply(lab, lab.gate_patch("ORCH_0004", "1.3"))
    lab.wait_pending()
    lab.hold("controller-0")
    manager(lab, "create")                               # strict, the default
    manager(lab, "apply")
    lab.wait_strategy("controller-0 installing", lambda s: s["apply-phase"]["stages"][0][
        "current-step"] == 1 and s["apply-phase"]["stages"][0]["steps"][1]["result"]
        == "inprogress")
    obsolete = build(lab, "ORCH_OBS", "rel", "--reboot-required", "N", "--status", "OBS")
    assert sw_patch(lab, "upload", obsolete).returncode == 0
    lab.wait_for_alarm("900.003")
    lab.hold("controller-0", False)
    strategy = lab.wait_state("aborted")
    stages = strategy["apply-phase"]["stages"]
    assert stages[0]["result"] == "success"               # the running stage finished
    query = stages[1]["steps"][0]
    assert (query["step-name"], query["result"]) == ("query-alarms", "failed")
    assert "900.003" in query["reason"] and query["reason"].startswith("active alarms")
    assert strategy["apply-phase"]["reason"] == query["reason"]
    assert not lab.locked()
    manager(lab, "delete")
    assert sw_patch(lab, "delete", "ORCH_OBS").returncode == 0
    strategy = run_strategy(lab)
    assert strategy["state"] == "applied", strategy["apply-phase"]["reason"]
    finish(lab)


def test_server_killed_mid_apply_resumes_and_unlocks(lab):
    kern = build_rpm(lab.work / "rpms-1.2", "kern", "1.2", scripts=reboot_required_scriptlets())
    lab.patch_rpms["kern-1.2"] = kern
    upload_and_apply(lab, build(lab, "ORCH_0005", "kern-1.2", "--reboot-required", "Y"))
    lab.wait_pending()
    lab.hold_reboots()
    manager(lab, "create", "--controller-apply-type", "ignore", "--storage-apply-type",
            "ignore", "--worker-apply-type", "parallel")
    manager(lab, "apply")
    lab.wait_strategy("the workers locked and waiting for their reboot", lambda s: any(
        step["step-name"] == "unlock-hosts" and step["result"] == "inprogress"
        for stage in s["apply-phase"]["stages"] for step in stage["steps"]))
    assert lab.locked() == {"compute-0", "compute-1"}
    watching = Watch(lab, "watch-restart")       # an operator's --watch across it
    lab.restart_server(kill=True)
    lab.hold_reboots(False)                               # the hosts come back up
    strategy = lab.wait_state("applied", "apply-failed", "aborted", "abort-failed",
                              timeout=180)
    assert strategy["state"] == "applied", strategy["apply-phase"]["reason"]
    code, stdout, stderr = watching.wait()
    assert code == 0, stdout[-2000:] + stderr
    states = [line.split(":", 1)[1].strip() for line in stdout.splitlines()
              if line.startswith("  state:")]
    assert states[0] == "applying" and states[-1] == "applied", stdout
    assert "cannot reach the orchestration API" in stderr and "retrying" in stderr
    assert not lab.locked()
    for name in ("compute-0", "compute-1"):
        assert installed(lab.root(name))["kern"] == "1.2-1"
    manager(lab, "delete")
    # controllers and storage were ignored: a second strategy patches them
    strategy = run_strategy(lab)
    assert strategy["state"] == "applied", strategy["apply-phase"]["reason"]
    finish(lab)


def test_a_reboot_required_install_failing_on_a_locked_host(lab):
    """The install fails on compute-1 (a %pre scriptlet refuses), both workers locked:
    the step fails, the abort unlocks both (the lab reboots them), 900.103 stays raised
    while compute-1 is behind and requires a reboot, and blocks a new strategy until
    the operator has fixed compute-1 by hand."""
    pre = "%pre\nif [ -e /etc/fail-install ]; then exit 1; fi\n"
    lab.patch_rpms["kern-1.3"] = build_rpm(lab.work / "rpms-1.3", "kern", "1.3",
                                           scripts=reboot_required_scriptlets() + pre)
    (lab.root("compute-1") / "etc" / "fail-install").touch()
    upload_and_apply(lab, build(lab, "ORCH_0006", "kern-1.3", "--reboot-required", "Y"))
    lab.wait_pending()
    options = ("--controller-apply-type", "ignore", "--storage-apply-type", "ignore",
               "--worker-apply-type", "parallel")
    manager(lab, "create", *options)
    manager(lab, "apply")
    strategy = lab.wait_state("aborted", "abort-failed", "abort-timeout", timeout=60)
    assert strategy["state"] == "aborted", strategy["abort-phase"]
    assert strategy["apply-phase"]["reason"] == \
        "software update failed to apply on host compute-1"
    assert steps_of(strategy, "abort-phase") == [
        (WORKERS, "unlock-hosts", ["compute-0", "compute-1"])]
    assert not lab.locked()
    assert "900.103" in lab.alarms()
    manager(lab, "delete")
    blocked = sw_manager(lab, "patch-strategy", "create")      # strict: 900.103 blocks
    assert field_of(blocked.stdout, "build-reason") == "active alarms present"
    manager(lab, "delete")
    # the operator's fix: lock compute-1, install, reboot, unlock
    (lab.root("compute-1") / "etc" / "fail-install").unlink()
    node = f"/v1/nodes/{lab.uuids['compute-1']}/maintenance"
    lab.api("PUT", node, {"reason": "fixing compute-1"}, ok=(202,))
    proc = sw_patch(lab, "host-install", "compute-1")
    assert proc.stdout.endswith("Installation was successful.\n"), proc.stdout
    lab.reboot("compute-1")
    wait_for("compute-1 back without a pending reboot",
             lambda: hosts(lab)["compute-1"]["Reboot Required"] == "No")
    lab.api("DELETE", node, ok=(202,))
    wait_for("900.103 and 900.002 cleared",
             lambda: {"900.103", "900.002"}.isdisjoint(lab.alarms()))
    strategy = run_strategy(lab)               # controllers and storage
    assert strategy["state"] == "applied", strategy["apply-phase"]["reason"]
    finish(lab)
