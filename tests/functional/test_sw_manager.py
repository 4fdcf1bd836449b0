"""StarlingX's own ``sw-manager`` (nfv-client 6.0.0, unchanged, in its venv:
stx_peers.py) and metalcast's, against one real ``metalcast serve`` with two worker
hosts running real host agents (orchestration_lab.py).

The peer logs in with an openrc (Identity v3, catalog ``vim``/``nfv``), ours with the
same openrc or with --url and basic credentials; both print the same lines for the
same strategy, and exit as StarlingX's does. A test holds a host's install (its
restart script waits on a gate) when it needs the strategy to stay in a step.
"""
from __future__ import annotations

import signal

import pytest
import requests

from tests.functional.orchestration_lab import (
    STRATEGY,
    OrchestrationLab,
    Watch,
    steps_of,
    sw_manager,
    upload_and_apply,
)
from tests.functional.patch_lab import hosts, patch_state, sw_patch, wait_for
from tests.functional.stx_peers import openrc, peer_python, require_peers
from tests.functional.stx_peers import sw_manager as stx_sw_manager
from tests.functional.test_host_patching import require_tools

NAMES = {"compute-0": "worker", "compute-1": "worker"}
PATCH = "SWM_0001"
SHOW_FLAGS = ([], ["--details"], ["--active"], ["--details", "--active"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_tools()
    require_peers()
    lab = OrchestrationLab(tmp_path_factory.mktemp("sw-manager"), names=NAMES, users=True)
    yield lab
    lab.close()


@pytest.fixture(autouse=True)
def clean(lab):
    """Each test starts and ends with no strategy and every gate open."""
    yield
    for name in NAMES:
        lab.hold(name, False)
        lab.fail_restart(name, False)
    if lab.strategy() is not None:
        response = requests.delete(lab.server.url + STRATEGY, json={"force": True},
                                   auth=lab.auth, timeout=30)
        assert response.status_code == 200, response.text
    # A force-deleted strategy leaves a host's install running on its agent (the gate
    # just opened lets it finish); the next test's strategy would find that agent busy.
    wait_for("no host installing", lambda: all(
        row["State"] != "installing" for row in hosts(lab).values()))


def env(lab, password: str | None = None) -> dict[str, str]:
    return openrc(f"{lab.server.url}/v3", lab.auth[0], password or lab.auth[1],
                  OS_REGION_NAME="RegionOne", OS_INTERFACE="internal")


def peer(lab, *argv: str, password: str | None = None):
    return stx_sw_manager(env(lab, password), "patch-strategy", *argv)


def ours(lab, *argv: str, openrc_login: bool = False):
    return sw_manager(lab, "patch-strategy", *argv, env=env(lab) if openrc_login else None)


def pending(lab) -> None:
    """Give every host something to install: the gate patch applied, or removed."""
    shown = hosts(lab)
    if len(shown) == len(NAMES) and all(r["Patch Current"] == "No" for r in shown.values()):
        return
    for name, row in shown.items():      # left half-done by a test: finish it first
        if row["Patch Current"] == "No":
            proc = sw_patch(lab, "host-install", "--force", name)
            assert proc.returncode == 0, proc.stdout + proc.stderr
    if PATCH not in lab.patch_rpms:
        upload_and_apply(lab, lab.gate_patch(PATCH, "1.1"))
    else:
        verb = "remove" if patch_state(lab, PATCH) == "Applied" else "apply"
        proc = sw_patch(lab, verb, PATCH)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    lab.wait_pending()


def same_everywhere(lab, *flags: str) -> str:
    """``show`` by the peer, ours with basic credentials and ours with the openrc:
    the same stdout, exit 0; that stdout."""
    shown = [peer(lab, "show", *flags), ours(lab, "show", *flags),
             ours(lab, "show", *flags, openrc_login=True)]
    for proc in shown:
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert shown[0].stdout == shown[1].stdout == shown[2].stdout, \
        [p.stdout for p in shown]
    return shown[0].stdout


def watch_then_interrupt(lab) -> tuple[int, str, str]:
    """``show --watch`` until it has printed the strategy once, then Ctrl-C (SIGINT)."""
    watching = Watch(lab, "watch-interrupted")
    watching.process.send_signal(signal.SIGINT)
    return watching.wait(60)


def field(text: str, name: str) -> list[str]:
    """The values of ``name:`` lines, in order."""
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.strip().startswith(name + ":")]


# -- no strategy --------------------------------------------------------------------
def test_without_a_strategy(lab):
    assert peer(lab, "show").stdout == "No strategy available\n"
    assert (ours(lab, "show").returncode, ours(lab, "show").stdout) == \
        (0, "No strategy available\n")
    proc = peer(lab, "delete")
    assert (proc.returncode, proc.stdout) == (1, "Strategy delete failed\n")
    proc = ours(lab, "delete")
    assert proc.returncode == 1 and "there is nothing to delete" in proc.stderr, proc.stderr
    proc = peer(lab, "apply")
    assert (proc.returncode, proc.stdout) == (1, "Strategy apply failed\n")
    proc = ours(lab, "apply")
    assert proc.returncode == 1 and "create one first" in proc.stderr, proc.stderr


def test_a_wrong_password_is_refused_by_both(lab):
    proc = peer(lab, "show", password="wrong")
    assert proc.returncode == 1 and "HTTP Error 401" in proc.stdout
    proc = sw_manager(lab, "patch-strategy", "show", env=env(lab, "wrong"))
    assert proc.returncode == 1 and "refused the login of 'operator'" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- create, show, conflict, delete -------------------------------------------------
def test_create_with_defaults_show_everywhere_conflict_and_delete(lab):
    pending(lab)
    created = peer(lab, "create")
    assert created.returncode == 0, created.stdout
    strategy = lab.wait_state("ready-to-apply")
    uuid = strategy["uuid"]
    for flags in SHOW_FLAGS:
        same_everywhere(lab, *flags)
    shown = same_everywhere(lab)
    assert created.stdout == shown            # create prints what show prints
    assert shown.splitlines()[0] == "Strategy Patch Strategy:"
    for name, value in (("strategy-uuid", uuid), ("controller-apply-type", "serial"),
                        ("storage-apply-type", "serial"), ("worker-apply-type", "serial"),
                        ("default-instance-action", "stop-start"),
                        ("alarm-restrictions", "strict"), ("current-phase", "build"),
                        ("current-phase-completion", "100%"), ("state", "ready-to-apply"),
                        ("build-result", "success")):
        assert field(shown, name) == [value], (name, shown)
    assert "max-parallel-worker-hosts" not in shown          # serial workers
    # serial workers: one stage per host, each query-alarms, install, stabilize
    assert steps_of(strategy) == [
        (stage, step, names) for host in sorted(NAMES) for stage, step, names in (
            ("sw-patch-worker-hosts", "query-alarms", []),
            ("sw-patch-worker-hosts", "sw-patch-hosts", [host]),
            ("sw-patch-worker-hosts", "system-stabilize", []))]

    again = peer(lab, "create")
    assert (again.returncode, again.stdout) == (1, "Operation failed: conflict detected\n")
    again = ours(lab, "create", "--worker-apply-type", "parallel")
    assert again.returncode == 1 and again.stdout == ""
    assert uuid in again.stderr and "ready-to-apply" in again.stderr      # LP 1989485
    assert "delete it first: sw-manager patch-strategy delete" in again.stderr
    assert lab.strategy()["uuid"] == uuid and lab.strategy()["worker-apply-type"] == "serial"

    by_uuid = requests.get(f"{lab.server.url}{STRATEGY}/{uuid}", auth=lab.auth, timeout=30)
    assert by_uuid.status_code == 200 and by_uuid.json()["strategy"]["uuid"] == uuid
    for other, status in (("not-a-uuid", 400), ("0" * 8 + "-0000-4000-8000-" + "0" * 12, 404)):
        response = requests.get(f"{lab.server.url}{STRATEGY}/{other}", auth=lab.auth,
                                timeout=30)
        assert response.status_code == status and response.json()["faultstring"]

    deleted = peer(lab, "delete")
    assert (deleted.returncode, deleted.stdout) == (0, "Strategy deleted\n")
    assert lab.strategy() is None


def test_create_with_every_option(lab):
    pending(lab)
    options = ["--controller-apply-type", "ignore", "--storage-apply-type", "parallel",
               "--worker-apply-type", "parallel", "--max-parallel-worker-hosts", "100",
               "--instance-action", "migrate", "--alarm-restrictions", "relaxed"]
    created = ours(lab, "create", *options)
    assert created.returncode == 0, created.stderr
    strategy = lab.strategy()
    assert {k: strategy[k] for k in ("controller-apply-type", "storage-apply-type",
                                     "swift-apply-type", "worker-apply-type",
                                     "max-parallel-worker-hosts", "default-instance-action",
                                     "alarm-restrictions")} == {
        "controller-apply-type": "ignore", "storage-apply-type": "parallel",
        "swift-apply-type": "ignore", "worker-apply-type": "parallel",
        "max-parallel-worker-hosts": 100, "default-instance-action": "migrate",
        "alarm-restrictions": "relaxed"}
    for flags in SHOW_FLAGS:
        same_everywhere(lab, *flags)
    shown = same_everywhere(lab, "--details")
    assert field(same_everywhere(lab), "max-parallel-worker-hosts") == ["100"]
    assert created.stdout == same_everywhere(lab)
    # parallel workers: both hosts in one stage
    assert [(s["stage-name"], s["steps"][1]["entity-names"])
            for s in strategy["apply-phase"]["stages"]] == [
        ("sw-patch-worker-hosts", sorted(NAMES))]
    assert "entity-names:                 ['compute-0', 'compute-1'] " in shown
    deleted = ours(lab, "delete")
    assert (deleted.returncode, deleted.stdout) == (0, "Strategy deleted\n")

    created = peer(lab, "create", *options)          # the peer sends the same body
    assert created.returncode == 0, created.stdout
    assert field(created.stdout, "max-parallel-worker-hosts") == ["100"]
    assert created.stdout == same_everywhere(lab)


CREATE = ("import sys; from nfv_client.openstack import openstack as o, sw_update as s; "
          "t = o.get_token(*sys.argv[1:7]); "
          "url = t.get_service_url('RegionOne', 'vim', 'nfv', 'internal'); "
          "s.create_strategy(t.get_id(), url, 'sw-patch', 'serial', 'serial', 'ignore', "
          "sys.argv[7], int(sys.argv[8]), 'stop-start', 'strict')")


@pytest.mark.parametrize("worker,parallel", [("parallel", 1), ("parallel", 101),
                                             ("sideways", 2)])
def test_bad_values_are_400_and_create_nothing(lab, worker, parallel):
    """The peer's parser refuses these itself: its REST layer sends them here."""
    login = [f"{lab.server.url}/v3", "admin", "Default", lab.auth[0], lab.auth[1], "Default"]
    code = CREATE.replace("sys.argv[1:7]", repr(login)).replace(
        "sys.argv[7]", repr(worker)).replace("int(sys.argv[8])", str(parallel))
    proc = peer_python(env(lab), code)
    assert proc.returncode == 1 and "HTTPError: HTTP Error 400" in proc.stderr, proc.stderr
    assert "Rest-API status=400" in proc.stdout and "Operation failed: " in proc.stdout
    assert lab.strategy() is None


@pytest.mark.parametrize("argv,peer_says,ours_says", [
    (["--max-parallel-worker-hosts", "1"], "invalid choice: 1", "from 2 to 100, got 1"),
    (["--max-parallel-worker-hosts", "101"], "invalid choice: 101", "from 2 to 100, got 101"),
    (["--worker-apply-type", "sideways"], "invalid choice: 'sideways'",
     "invalid choice: 'sideways'")])
def test_both_clients_refuse_bad_values_before_sending(lab, argv, peer_says, ours_says):
    proc = peer(lab, "create", *argv)
    assert proc.returncode == 2 and peer_says in proc.stderr, proc.stderr
    proc = ours(lab, "create", *argv)
    assert proc.returncode == 2 and ours_says in proc.stderr, proc.stderr
    assert lab.strategy() is None


def test_bad_bodies_are_400_with_the_reason(lab):
    base = {"controller-apply-type": "serial", "storage-apply-type": "serial",
            "worker-apply-type": "serial", "default-instance-action": "stop-start"}
    for body, says in ((dict(base, **{"max-parallel-worker-hosts": "lots"}), "max-parallel"),
                       (dict(base, colour="blue"), "colour"),
                       ({k: v for k, v in base.items() if k != "worker-apply-type"},
                        "worker-apply-type"),
                       ([], ""), ("x" * 200_000, "")):
        response = requests.post(lab.server.url + STRATEGY, json=body, auth=lab.auth,
                                 timeout=30)
        assert response.status_code in (400, 413), (body, response.text)
        assert says in response.text
    assert lab.strategy() is None


# -- apply, abort, delete -----------------------------------------------------------
def test_apply_stage_by_stage_then_abort_between_stages(lab):
    pending(lab)
    assert ours(lab, "create").returncode == 0
    proc = ours(lab, "apply", "--stage-id", "1")      # from ready-to-apply: stage 0 only
    assert proc.returncode == 1 and "invalid stage id 1" in proc.stderr, proc.stderr
    applied = ours(lab, "apply", "--stage-id", "0")
    assert applied.returncode == 0, applied.stderr
    assert field(applied.stdout, "state") == ["applying"]
    lab.wait_strategy("stage 0 applied", lambda s: s["apply-phase"]["current-stage"] == 1
                      and not s["apply-phase"]["stages"][0]["inprogress"])
    for stage, says in (("0", "apply already complete for stage id 0"),
                        ("2", "invalid stage id 2")):
        proc = ours(lab, "apply", "--stage-id", stage)
        assert proc.returncode == 1 and says in proc.stderr, proc.stderr
    rows = {name: row["Patch Current"] for name, row in hosts(lab).items()}
    assert rows == {"compute-0": "Yes", "compute-1": "No"}
    aborted = peer(lab, "abort")               # idle between stages: aborted at once
    assert aborted.returncode == 0, aborted.stdout
    assert field(aborted.stdout, "state") == ["aborted"]
    shown = same_everywhere(lab, "--details")
    assert field(shown, "state") == ["aborted"]
    assert lab.strategy()["apply-phase"]["stages"][1]["steps"][1]["result"] == "initial"
    proc = ours(lab, "apply")
    assert proc.returncode == 1 and "apply" in proc.stderr, proc.stderr


# StarlingX's client sends --stage-id as a string ("0"): the VIM's wsme converts it.
def test_the_peer_applies_one_stage(lab):
    pending(lab)
    assert ours(lab, "create").returncode == 0
    applied = peer(lab, "apply", "--stage-id", "0")
    assert applied.returncode == 0, applied.stdout
    assert field(applied.stdout, "state") == ["applying"]


def test_apply_all_watched_to_the_end(lab):
    pending(lab)
    assert peer(lab, "create", "--worker-apply-type", "parallel").returncode == 0
    lab.hold("compute-1")
    applied = ours(lab, "apply")
    assert applied.returncode == 0, applied.stderr
    assert field(applied.stdout, "state") == ["applying"]
    lab.wait_strategy("the install step running", lambda s: any(
        step["step-name"] == "sw-patch-hosts" and step["result"] == "inprogress"
        for stage in s["apply-phase"]["stages"] for step in stage["steps"]))
    active = same_everywhere(lab, "--active")
    assert field(active, "step-name") == ["sw-patch-hosts"]
    assert field(active, "inprogress") == ["true", "true"]       # the phase, the stage
    assert "900.101" in lab.alarms()
    proc = peer(lab, "delete")                     # busy: delete needs force
    assert (proc.returncode, proc.stdout) == (1, "Operation failed: conflict detected\n")
    proc = ours(lab, "delete")
    assert proc.returncode == 1 and "abort it first" in proc.stderr, proc.stderr
    code, stdout, stderr = watch_then_interrupt(lab)
    assert code == 130 and "Traceback" not in stderr, stderr
    assert stdout.startswith("Strategy Patch Strategy:\n")
    assert field(stdout, "state") == ["applying"]
    lab.hold("compute-1", False)
    watched = ours(lab, "show", "--watch", "--interval", "0.2")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert watched.stdout.count("Strategy Patch Strategy:") >= 1
    assert field(watched.stdout, "state")[-1] == "applied"
    lab.wait_current()
    assert "900.101" not in lab.alarms()
    shown = same_everywhere(lab, "--details")
    assert field(shown, "completion-percentage") == ["100%", "100%"]
    assert peer(lab, "delete").stdout == "Strategy deleted\n"


def test_abort_lets_the_running_step_finish(lab):
    pending(lab)
    assert ours(lab, "create", "--worker-apply-type", "parallel").returncode == 0
    lab.hold("compute-0")
    assert peer(lab, "apply").returncode == 0
    lab.wait_strategy("the install step running", lambda s: s["apply-phase"]["stages"][0][
        "current-step"] == 1)
    proc = ours(lab, "abort", "--stage-id", "1")
    assert proc.returncode == 1 and "apply not inprogress for stage id 1" in proc.stderr
    aborting = peer(lab, "abort")                 # StarlingX sends abort-stage, stage null
    assert aborting.returncode == 0, aborting.stdout
    assert field(aborting.stdout, "state") == ["aborting"]
    assert "900.102" in lab.alarms()
    step = lab.strategy()["apply-phase"]["stages"][0]["steps"][1]
    assert (step["step-name"], step["result"]) == ("sw-patch-hosts", "inprogress")
    lab.hold("compute-0", False)
    done = lab.wait_state("aborted")
    assert done["apply-phase"]["stages"][0]["steps"][1]["result"] == "success"
    assert done["apply-phase"]["stages"][0]["steps"][2]["result"] in ("initial", "aborted")
    lab.wait_current()                            # installed patches are not rolled back
    shown = same_everywhere(lab)
    assert field(shown, "abort-result") == ["success"]
    assert {"900.101", "900.102"}.isdisjoint(lab.alarms())


def test_force_delete_while_applying(lab):
    pending(lab)
    assert ours(lab, "create", "--worker-apply-type", "parallel").returncode == 0
    lab.hold("compute-0")
    assert ours(lab, "apply").returncode == 0
    lab.wait_state("applying")
    proc = peer(lab, "delete", "--force")         # hidden in both clients' help
    assert (proc.returncode, proc.stdout) == (0, "Strategy deleted\n")
    assert lab.strategy() is None and ours(lab, "show").stdout == "No strategy available\n"
    lab.hold("compute-0", False)
    assert not lab.locked()
