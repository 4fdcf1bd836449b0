"""The patch lab (patch_lab.py) driven by ``sw-manager``: what the orchestration tests
share.

* The runner looks at the strategy every 0.2 s and system-stabilize waits nothing
  (``[orchestration] audit_interval``, ``stabilize_factor``): a stage takes the hosts'
  own time. Every host heartbeats every 2 s, so none looks offline.
* A ``gate`` package is in every host's base; its patches (:meth:`gate_patch`) carry a
  restart script that waits while ``/etc/gate-closed`` exists in the host's root and
  fails when ``/etc/fail-restart`` does: a test holds a host ``installing`` as long as
  it needs (no sleeping, no race), or makes its install fail.
* The lab's "BMC": a host the strategy reboots ("host X rebooting" in the server's
  log) is rebooted here the way test_patch_walkthrough.py does it: its agent stops,
  ``/run`` (a tmpfs) empties, the agent starts again.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import requests

from ramdisk_agent.host.convention import SCRIPTS_SOURCE, restart_script_scriptlets
from tests.functional.patch_lab import BIN, Walkthrough, build, hosts, sw_patch, wait_for
from tests.functional.rpm_tools import build_rpm

FAST = {"orchestration": {"audit_interval": 0.2, "stabilize_factor": 0}}
REBOOTING_RE = re.compile(r"Strategy \S+: host (\S+) rebooting")
GATE_SCRIPT = ("#!/bin/sh",
               "while [ -e /etc/gate-closed ]; do /usr/bin/busybox sleep 0.1; done",
               "if [ -e /etc/fail-restart ]; then exit 1; fi",
               "echo restarted >> /var/log/gate.restarts")
FINAL = {"ready-to-apply", "build-failed", "build-timeout", "applied", "apply-failed",
         "apply-timeout", "aborted", "abort-failed", "abort-timeout"}
STRATEGY = "/api/orchestration/sw-patch/strategy"


class OrchestrationLab(Walkthrough):
    """The lab, a gate package on every host, and a reboot watcher."""

    def __init__(self, work: Path, sections: dict | None = None,
                 names: dict[str, str] | None = None, users: bool = False):
        merged = {name: dict(options) for name, options in FAST.items()}
        for name, options in (sections or {}).items():
            merged[name] = {**merged.get(name, {}), **options}
        self.rebooted: list[str] = []
        self._stop, self._reboots_go = threading.Event(), threading.Event()
        self._reboots_go.set()
        super().__init__(work, merged, names, intervals={}, users=users,
                         extra_base=("gate",))
        self._watcher = threading.Thread(target=self._reboots, daemon=True)
        self._watcher.start()

    # -- the gate -------------------------------------------------------------------
    def gate_patch(self, pid: str, version: str, *extra: str) -> Path:
        """A patch of gate ``version`` (its restart script runs on apply and remove)."""
        install = f"mkdir -p %{{buildroot}}{SCRIPTS_SOURCE}\n" + "\n".join(
            f"echo '{line}' >> %{{buildroot}}{SCRIPTS_SOURCE}/gate" for line in GATE_SCRIPT)
        self.patch_rpms[pid] = build_rpm(self.work / "rpms", "gate", version,
                                         scripts=restart_script_scriptlets("gate"),
                                         install=install, files=f"{SCRIPTS_SOURCE}/gate")
        return build(self, pid, pid, "--reboot-required", "N", *extra)

    def hold(self, name: str, held: bool = True) -> None:
        """Hold ``name``'s restart scripts (it stays installing) or let them go."""
        self._flag(name, "gate-closed", held)

    def fail_restart(self, name: str, fail: bool = True) -> None:
        self._flag(name, "fail-restart", fail)

    def _flag(self, name: str, flag: str, on: bool) -> None:
        path = self.root(name) / "etc" / flag
        path.parent.mkdir(exist_ok=True)
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    # -- the reboots ----------------------------------------------------------------
    def reboot(self, name: str) -> None:
        """What a power cycle does to a host: the agent restarts with /run empty."""
        self.stop_agent(name)
        shutil.rmtree(self.root(name) / "run", ignore_errors=True)
        self.start_agent(name)
        self.rebooted.append(name)

    def hold_reboots(self, held: bool = True) -> None:
        """While held, hosts the strategy reboots stay down (their agents run on,
        still requiring the reboot); let go, they come back."""
        if held:
            self._reboots_go.clear()
        else:
            self._reboots_go.set()

    def _reboots(self) -> None:
        server, seen, due = self.server, 0, []
        while not self._stop.wait(0.1):
            if self.server is not server:     # restarted: a new log
                server, seen = self.server, 0
            log = server.log
            due += [m.group(1) for m in map(REBOOTING_RE.search, log[seen:len(log)]) if m]
            seen = len(log)
            while due and self._reboots_go.is_set():
                name = due.pop(0)
                if name in self.agents:
                    self.reboot(name)

    def close(self) -> None:
        self._stop.set()
        self._watcher.join(10)
        super().close()

    # -- the strategy ---------------------------------------------------------------
    def strategy(self) -> dict | None:
        response = requests.get(self.server.url + STRATEGY, auth=self.auth, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["strategy"]

    def wait_strategy(self, what: str, check, timeout: float = 120) -> dict:
        """Poll until ``check(strategy)``; the strategy (or fail with the last one)."""
        seen: list = [None]

        def reached():
            seen[0] = self.strategy()
            return seen[0] if seen[0] is not None and check(seen[0]) else None
        return wait_for(lambda: f"{what}; last: {json.dumps(seen[0])[:3000]}", reached,
                        timeout)

    def wait_state(self, *states: str, timeout: float = 120) -> dict:
        return self.wait_strategy(f"the strategy in {states}",
                                  lambda s: s["state"] in states, timeout)

    def alarms(self) -> set[str]:
        response = requests.get(self.server.url + "/fm/v1/alarms", auth=self.auth,
                                timeout=30)
        assert response.status_code == 200, response.text
        return {alarm["alarm_id"] for alarm in response.json()["alarms"]}

    def wait_for_alarm(self, alarm_id: str) -> None:
        wait_for(f"alarm {alarm_id} raised", lambda: alarm_id in self.alarms())

    def locked(self) -> set[str]:
        nodes = self.api("GET", "/v1/nodes?fields=name,maintenance")["nodes"]
        return {n["name"] for n in nodes if n["maintenance"] and n["name"] in self.names}

    def wait_pending(self) -> None:
        """Every host reports that it has something to install."""
        wait_for("every host Patch Current No", lambda: all(
            row["Patch Current"] == "No" for row in hosts(self).values())
            and len(hosts(self)) == len(self.names))

    def wait_current(self) -> None:
        wait_for("every host Patch Current Yes", lambda: all(
            row["Patch Current"] == "Yes" for row in hosts(self).values())
            and len(hosts(self)) == len(self.names))


def sw_manager(lab: Walkthrough, *argv: str, env: dict | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """metalcast's own ``sw-manager`` with the lab's URL and user (or ``env``)."""
    return subprocess.run([str(BIN / "sw-manager"), *argv], capture_output=True, text=True,
                          env=env or lab.client_env(), timeout=timeout)


class Watch:
    """``sw-manager patch-strategy show --watch`` running in the background, its output
    in files (a pipe read part way loses what its reader buffered)."""

    def __init__(self, lab: Walkthrough, name: str):
        self.out, self.err = lab.work / f"{name}.out", lab.work / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [str(BIN / "sw-manager"), "patch-strategy", "show", "--watch",
                 "--interval", "0.3"], env=lab.client_env(), stdout=out, stderr=err)
        wait_for("sw-manager --watch showing the strategy",
                 lambda: "Strategy Patch Strategy:" in self.out.read_text())

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) once it has ended."""
        code = self.process.wait(timeout)
        return code, self.out.read_text(), self.err.read_text()


def upload_and_apply(lab: Walkthrough, patch: Path) -> str:
    """``sw-patch upload`` and ``apply`` (into the repo): the patch's ID."""
    pid = patch.name.removesuffix(".patch")
    for argv in (("upload", patch), ("apply", pid)):
        proc = sw_patch(lab, *argv)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return pid


def steps_of(strategy: dict, phase: str = "apply-phase") -> list[tuple[str, str, list]]:
    """(stage name, step name, entity names) of every step of a phase, in order."""
    return [(stage["stage-name"], step["step-name"], step["entity-names"])
            for stage in strategy[phase]["stages"] for step in stage["steps"]]
