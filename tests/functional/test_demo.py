"""``metalcast demo`` end to end: the README's main-job command, run as a user would.

It starts a real ``metalcast serve`` and a virtual lab (real IPMI BMCs, the real
iPXE scripts over TFTP/HTTP, the real metalcast-agent writing each machine's disk
file), deploys v1 to three machines, delta-updates one to v2, prints a summary
table and must leave no process and (without --data-dir) no files behind.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.functional.ipmi_peers import require
from tests.functional.test_host_patching import require_tools as require_patch_tools
from tests.functional.test_virtlab_machine import require_image_tools

METALCAST = str(Path(sys.executable).with_name("metalcast"))
ROW_RE = re.compile(r"^\| (demo-machine-\d) +\| (\S+) +\| (power \w+) +\| ([^|]+?) +\| (\S+) +\| "
                    r"(\d+\.\d)s +\| ([^|]+?) +\|$", re.M)
STOPPED_RE = re.compile(r"^stopped: (.*)$", re.M)
AB_ROW_RE = re.compile(r"^\| (host-\d) +\| (\d) \((USR-[AB])\) +\| (\S+) +\| (\S+) +\|$", re.M)
AB_LINE_RE = re.compile(r"^  \[ *\d+\.\ds\] (host-\d) +v(\S+) slot (\S+) +(\w+)$", re.M)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _environment() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("METALCAST_", "OS_"))}


def _ab_chapter(out: str) -> None:
    """Three installed hosts move from v1 (slot 2) to v2 (slot 3), one reboot at a time."""
    rows = {m[0]: m[1:] for m in AB_ROW_RE.findall(out)}
    assert sorted(rows) == ["host-1", "host-2", "host-3"], out
    assert set(rows.values()) == {("3", "USR-B", "2", "complete")}, rows
    lines = AB_LINE_RE.findall(out)
    for host in rows:
        seen = [(version, slot, status) for name, version, slot, status in lines
                if name == host]
        # (the steps between are sampled: a fast one may fall between two samples)
        assert ("1", "2", "checking") in seen and seen[-1] == ("2", "3", "complete"), seen
    assert re.search(r"at most [01] host rebooting and [01] lease holder at any of", out), out


def test_demo_deploys_the_lab_updates_one_machine_and_cleans_up(tmp_path):
    require("ipmitool")
    require_image_tools()
    require_patch_tools()
    env = dict(_environment(), TMPDIR=str(tmp_path))   # its temporary dir lands here
    done = subprocess.run([METALCAST, "demo"], capture_output=True, text=True, timeout=240,
                          env=env)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    rows = {m[0]: m[1:] for m in ROW_RE.findall(out)}
    assert sorted(rows) == ["demo-machine-1", "demo-machine-2", "demo-machine-3"], out
    for name, (state, power, pretty, version, _seconds, patching) in rows.items():
        assert (state, power) == ("active", "power on"), rows
        assert patching == "patch-current, demo-app 1.1", rows
        expected = "2" if name == "demo-machine-1" else "1"     # the delta-updated one
        assert version == expected and pretty == f"Metalcast Lab OS {expected}", rows
    assert out.count("VERSION_ID=1") == 3 and out.count("VERSION_ID=2") == 1, out
    assert "delta deploy: applied" in out
    assert "agent: Wrote http://127.0.0.1:" in out          # the real agent's write result
    assert "runs metalcast-agent directly" in out
    # the fleet-patching chapter: one strategy, a stage per host, live step progress
    assert "sw-manager patch-strategy create: ready-to-apply, 3 stages" in out
    for stage, host in enumerate(sorted(rows), 1):
        assert (f"stage {stage}/3 sw-patch-worker-hosts: sw-patch-hosts {host} success"
                in out), out
    assert "strategy applied in " in out
    ab_ran = os.geteuid() == 0        # the chapter's engines need a loop device
    if ab_ran:
        _ab_chapter(out)
    else:
        assert "skipped: missing root (the update engine writes a slot" in out, out
    # Every process it started (appliance, lab, BMCs, agents) is gone; so is its data.
    pids = [int(p) for p in re.findall(r"pid (\d+)", STOPPED_RE.search(out).group(1))]
    # 3 host agents, the A/B chapter's lab and its BMCs
    assert len(pids) == (8 if ab_ran else 6) and not any(_alive(p) for p in pids), out
    leftovers = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True,
                               check=True).stdout
    assert str(tmp_path) not in leftovers, leftovers
    assert not any(tmp_path.glob("metalcast-demo-*"))


def test_demo_keeps_its_data_dir_when_given_one(tmp_path):
    require("ipmitool")
    require_image_tools()
    data = tmp_path / "demo-data"
    done = subprocess.run([METALCAST, "demo", "--nodes", "1", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=240, env=_environment())
    assert done.returncode == 0, done.stdout + done.stderr
    assert (data / "appliance" / "metalcast.sqlite").stat().st_size > 0
    assert (data / "appliance" / "httpboot" / "images" / "lab-v2.delta").exists()
    assert "demo-machine-1" in done.stdout and "VERSION_ID=2" in done.stdout


def test_demo_refuses_a_bad_node_count(tmp_path):
    done = subprocess.run([METALCAST, "demo", "--nodes", "0"], capture_output=True, text=True,
                          timeout=60, env=dict(_environment(), TMPDIR=str(tmp_path)))
    assert done.returncode == 2
    assert "--nodes must be between 1 and 64, not 0" in done.stderr
    assert not any(tmp_path.iterdir())              # nothing started, nothing written
