"""The demo's fleet-patching chapter: the lab's machines, as hosts running
``metalcast-agent host``, get one in-service patch through one ``sw-manager
patch-strategy create`` and ``apply`` (the calls sw-manager makes, through its own
client code), with live stage and step progress, ending patch-current.

Each host's agent works on an install root of its own (an rpm database holding the
demo's base packages, /bin/sh from busybox): a booted lab machine's disk is an image
file the demo cannot mount without root. The patch (``demo-app`` 1.1 with a restart
script) is built with rpmbuild and ``sw-patch-build``, uploaded and applied to the
repo through the patch API, and the strategy does the rest, one host per stage.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cli.client import Client
from cli.sw_manager_api import OrchestrationApi
from virtlab import process as vproc
from virtlab.demo.lab import ApplianceProcess

#: tool -> the Debian package that has it
TOOLS = {"rpmbuild": "rpm", "rpm": "rpm", "createrepo_c": "createrepo-c", "dnf": "dnf",
         "busybox": "busybox-static"}
RELEASE = "1.0"
PATCH_ID = "DEMO_0001"
SCRIPTS = "/usr/share/patching/patch-scripts"     # ramdisk_agent/host/convention.py
SPEC = """Name: {name}
Version: {version}
Release: 1
Summary: metalcast demo package {name}
License: MIT
BuildArch: noarch
AutoReqProv: no
{tags}
%description
metalcast demo package.
%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo "{name} {version}" > %{{buildroot}}/usr/share/{name}/version
{install}
%files
/usr/share/{name}
{files}
{scripts}
"""
BUSYBOX_TAGS = "Provides: /bin/sh\n%global _binaries_in_noarch_packages_terminate_build 0"
BUSYBOX_INSTALL = ("mkdir -p %{{buildroot}}/bin %{{buildroot}}/usr/bin\n"
                   "cp {busybox} %{{buildroot}}/usr/bin/busybox\n"
                   "ln -s ../usr/bin/busybox %{{buildroot}}/bin/sh")
#: %post/%preun of a restart-script RPM (convention.restart_script_scriptlets)
RESTART = (f"%post\nmkdir -p /run/patching/patch-scripts\ncp {SCRIPTS}/demo-app "
           "/run/patching/patch-scripts/demo-app\nchmod 700 /run/patching/patch-scripts/"
           "demo-app\n")


def missing_tools() -> list[str]:
    return [f"{tool} (Debian package {package})" for tool, package in TOOLS.items()
            if not shutil.which(tool)]


def _say(text: str) -> None:
    print(text, flush=True)


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def build_rpm(work: Path, name: str, version: str, tags: str = "", install: str = "",
              files: str = "", scripts: str = "") -> Path:
    top = work / "rpmbuild"
    spec = top / "SPECS" / f"{name}-{version}.spec"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(SPEC.format(name=name, version=version, tags=tags, install=install,
                                files=files, scripts=scripts))
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}",
                    "--define", "__strip /bin/true", "--define", "_build_id_links none",
                    str(spec)], check=True, capture_output=True, timeout=120)
    return top / "RPMS" / "noarch" / f"{name}-{version}-1.noarch.rpm"


class FleetPatch:
    """The hosts' roots and agents, the patch, and the strategy that installs it."""

    def __init__(self, appliance: ApplianceProcess, client: Client, nodes: dict[str, str],
                 work: Path, on_start: Callable[[str, subprocess.Popen], None]):
        """``on_start(name, process)`` is told of each host agent started (the demo
        stops it by PID with the rest)."""
        self.appliance, self.client, self.work = appliance, client, work
        self.nodes = nodes                       #: uuid -> node name (the hostname)
        self.on_start = on_start
        self.api = OrchestrationApi(client.url, client.session)

    # -- the hosts ------------------------------------------------------------------
    def start_hosts(self) -> None:
        started = time.monotonic()
        rpms = self.work / "rpms"
        busybox = shutil.which("busybox") or "/bin/busybox"
        base = [build_rpm(rpms, "hostbase", "1.0", BUSYBOX_TAGS,
                          BUSYBOX_INSTALL.format(busybox=busybox), "/bin/sh\n/usr/bin/busybox"),
                build_rpm(rpms, "demo-app", "1.0")]
        feed = self.appliance.httpboot / "feed" / f"rel-{RELEASE}"
        (feed / "Packages").mkdir(parents=True, exist_ok=True)
        for rpm in base:
            shutil.copy(rpm, feed / "Packages")
        subprocess.run(["createrepo_c", "-q", str(feed)], check=True, capture_output=True)
        for uuid, name in self.nodes.items():
            self._start_host(uuid, name, base)
        _say(f"   {len(self.nodes)} hosts, each metalcast-agent host on its own rpm root "
             f"(base: hostbase, demo-app 1.0), in {time.monotonic() - started:.1f}s")

    def _start_host(self, uuid: str, name: str, base: list[Path]) -> None:
        root, state = self.work / "hosts" / name, self.work / "state" / name
        (root / "var/lib/rpm").mkdir(parents=True)
        rpm = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--quiet"]
        for package in base:     # /bin/sh first: the next one's scriptlets need it
            subprocess.run([*rpm, str(package)], check=True, capture_output=True)
        state.mkdir(parents=True)
        issued = self.client.issue_host_agent_token(uuid)
        token = state / "host-agent-token.json"
        token.write_text(json.dumps({"token": issued["token"], "node_uuid": uuid}))
        os.chmod(token, 0o600)
        http = self.appliance.http
        process, _, _ = vproc.start_ready(
            [_bin("metalcast-agent"), "host", "--api-url", self.appliance.url,
             "--node-uuid", uuid, "--listen", "127.0.0.1:0", "--advertise-host", "127.0.0.1",
             "--state-dir", str(state), "--heartbeat-interval", "2", "--root", str(root),
             "--base-url", f"{http}/feed/rel-{RELEASE}",
             "--updates-url", f"{http}/updates/rel-{RELEASE}", "--sw-version", RELEASE,
             "--nodetype", "worker"], "METALCAST-AGENT ", 60, f"host agent of {name}")
        self.on_start(name, process)

    # -- the patch ------------------------------------------------------------------
    def publish_patch(self) -> None:
        """demo-app 1.1 (a restart script) as a signed patch, uploaded and applied."""
        install = (f"mkdir -p %{{buildroot}}{SCRIPTS}\n"
                   f"echo '#!/bin/sh' > %{{buildroot}}{SCRIPTS}/demo-app\n"
                   f"echo 'echo restarted >> /var/log/demo-app.log' >> "
                   f"%{{buildroot}}{SCRIPTS}/demo-app")
        rpm = build_rpm(self.work / "rpms", "demo-app", "1.1", install=install,
                        files=f"{SCRIPTS}/demo-app", scripts=RESTART)
        data = str(self.appliance.data_dir)
        subprocess.run([_bin("metalcast"), "patch", "keygen", "--data-dir", data],
                       check=True, capture_output=True)
        out = self.work / "patches"
        subprocess.run([_bin("sw-patch-build"), "--id", PATCH_ID, "--release", RELEASE,
                        "--reboot-required", "N", "--data-dir", data, "-o", str(out),
                        str(rpm)], check=True, capture_output=True, timeout=120)
        with open(out / f"{PATCH_ID}.patch", "rb") as stream:
            self._patch_call("POST", "upload", files={"file": (f"{PATCH_ID}.patch", stream)})
        self._patch_call("POST", f"apply/{PATCH_ID}")
        self._wait(lambda hosts: all(not h["patch_current"] for h in hosts),
                   "every host to see the patch")
        _say(f"   {PATCH_ID} (demo-app 1.1, in-service, a restart script) uploaded and "
             "applied to the repo: every host reports Patch Current: No")

    def _patch_call(self, method: str, path: str, **kwargs) -> dict:
        response = self.client.session.request(method, f"{self.client.url}/patch/{path}",
                                               timeout=120, **kwargs)
        data = response.json()
        if response.status_code != 200 or data.get("error"):
            raise RuntimeError(f"patch API {path}: {data.get('error') or response.text}")
        return data

    def hosts(self) -> list[dict]:
        return self._patch_call("GET", "query_hosts")["data"]

    def _wait(self, done, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            hosts = self.hosts()
            if len(hosts) == len(self.nodes) and done(hosts):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}: {hosts}")
            time.sleep(0.3)

    # -- the strategy ---------------------------------------------------------------
    def orchestrate(self) -> float:
        """create + apply, printing each step as it starts and ends; seconds taken."""
        started = time.monotonic()
        strategy = self.api.create("sw-patch", {
            "controller-apply-type": "serial", "swift-apply-type": "ignore",
            "default-instance-action": "stop-start", "storage-apply-type": "serial",
            "worker-apply-type": "serial", "alarm-restrictions": "strict"})
        stages = strategy["apply-phase"]["stages"]
        _say(f"   sw-manager patch-strategy create: {strategy['state']}, "
             f"{len(stages)} stages (workers serial: one host each)")
        self.api.action("sw-patch", {"action": "apply-all"})
        _say("   sw-manager patch-strategy apply:")
        shown: dict[tuple[int, int], str] = {}
        while True:
            strategy = self.api.show("sw-patch") or {}
            for stage in strategy["apply-phase"]["stages"]:
                for step in stage["steps"]:
                    self._progress(shown, strategy, stage, step)
            if strategy["state"] not in ("applying", "aborting"):
                break
            time.sleep(0.2)
        if strategy["state"] != "applied":
            raise RuntimeError(f"the strategy ended {strategy['state']}: "
                               f"{strategy['apply-phase']['reason']}")
        self.api.delete("sw-patch", False)
        seconds = time.monotonic() - started
        _say(f"   strategy applied in {seconds:.1f}s "
             f"({strategy['current-phase-completion-percentage']}%), then deleted")
        return seconds

    @staticmethod
    def _progress(shown: dict, strategy: dict, stage: dict, step: dict) -> None:
        key, result = (stage["stage-id"], step["step-id"]), step["result"]
        if result == "initial" or shown.get(key) == result:
            return
        shown[key] = result
        hosts = ", ".join(step["entity-names"])
        _say(f"     [{strategy['current-phase-completion-percentage']:3}%] stage "
             f"{stage['stage-id'] + 1}/{len(strategy['apply-phase']['stages'])} "
             f"{stage['stage-name']}: {step['step-name']}{' ' + hosts if hosts else ''} "
             f"{result}")

    def patch_states(self) -> dict[str, str]:
        """node name -> its patch state (query_hosts) and the demo-app its root holds."""
        states = {}
        for host in self.hosts():
            name = host["hostname"]
            app = self.work / "hosts" / name / "usr/share/demo-app/version"
            version = app.read_text().split()[-1] if app.exists() else "?"
            current = "patch-current" if host["patch_current"] else "not current"
            states[name] = f"{current}, demo-app {version}"
        return states
