"""The six-host patch lab of the StarlingX seed walkthrough, shared by the tests that
drive it (test_patch_walkthrough.py with ``sw-patch``, test_orchestration_walkthrough.py
with ``sw-manager``).

A real ``metalcast serve`` (its HTTP boot server on a free port serves the base
feed and the update repo), six fake-hardware nodes adopted into ``active``
(controller-0/1, compute-0/1, storage-0/1), and six real ``metalcast-agent host``
processes, each with its own install root and rpm database (base packages put
there with ``rpm --root``, /bin/sh from busybox, test-lab.md §6). Each agent's token
is issued through the authenticated API (``metalcast host token``); the agents
heartbeat their patching reports over HTTPS and get ``patching.install`` /
``patching.query`` from the conductor. Patches and RPMs (a plain one, a
restart-script one, a reboot-required one) are built by rpmbuild and
``sw-patch-build`` here.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import bcrypt

from ramdisk_agent.host.convention import (
    SCRIPTS_SOURCE,
    reboot_required_scriptlets,
    restart_script_scriptlets,
)
from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import api_call, provision, wait_node
from tests.functional.rpm_tools import build_rpm
from tests.functional.test_host_patching import BASE_INSTALL, BASE_SH
from tests.waiting import wait_until
from virtlab.process import start_ready, stop

BIN = Path(sys.executable).parent
HTTP_RE = re.compile(r"metalcast HTTP boot server on (http://\S+?)/ ")
HOSTS = {"controller-0": "controller", "controller-1": "controller",
         "compute-0": "worker", "compute-1": "worker",
         "storage-0": "storage", "storage-1": "storage"}
WAIT = 90
#: The controllers never heartbeat on their own during the test (only at start, after
#: a command, and on patching.query): their reports after apply/remove prove the
#: conductor's HELLO_AGENT, and after host-install the heartbeat at the end of it.
INTERVALS = {"controller-0": "600", "controller-1": "600"}


def issue_token(url: str, node: str, path: Path, auth: tuple[str, str] | None = None
                ) -> dict:
    """``metalcast host token NODE --output PATH`` (the real client): the token file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    login = ["--username", auth[0], "--password", auth[1]] if auth else []
    proc = subprocess.run([BIN / "metalcast", "--url", url, *login, "host", "token", node,
                           "--output", path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the previous token is revoked" in proc.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return json.loads(path.read_text())


def write_token(path: Path, issued: dict) -> None:
    """Put a token issued by another client where the agent reads it (0600)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"token": issued["token"], "node_uuid": issued["node_uuid"]}, handle)
    os.replace(tmp, path)


class Walkthrough:
    """The server, the RPMs, the nodes and one agent process per host."""

    def __init__(self, work: Path, sections: dict | None = None,
                 names: dict[str, str] | None = None, intervals: dict | None = None,
                 users: bool = False, extra_base: tuple[str, ...] = ()):
        """``sections``: more of the server's INI (merged per section); ``names``:
        hostname -> nodetype of the hosts (default: the six of HOSTS); ``intervals``:
        hostname -> heartbeat seconds (default INTERVALS, else 2); ``users``: an
        htpasswd user (``self.auth``) the API, Identity v3 and the clients use;
        ``extra_base``: more packages (1.0) in the base feed and every host."""
        self.work = work
        self.extra_base = extra_base
        self.names = dict(names or HOSTS)
        self.intervals = INTERVALS if intervals is None else intervals
        self.sections = {"pxe": {"enabled": "true", "tftp_port": 0, "http_port": 0},
                         "patching": {"release": "1.0"}}
        self.auth: tuple[str, str] | None = None
        if users:
            self.auth = ("operator", f"pw-{uuid.uuid4().hex[:12]}")
            htpasswd = work / "htpasswd"
            hashed = bcrypt.hashpw(self.auth[1].encode(), bcrypt.gensalt(rounds=4))
            htpasswd.write_text(f"{self.auth[0]}:{hashed.decode()}\n")
            self.sections["api"] = {"auth_strategy": "http_basic", "htpasswd_file": htpasswd}
        for name, options in (sections or {}).items():
            self.sections[name] = {**self.sections.get(name, {}), **options}
        self.server = start_server(work / "data", self.sections)
        self.http = HTTP_RE.search(self.server.output()).group(1)
        self.agents: dict[str, tuple] = {}
        self.uuids: dict[str, str] = {}
        subprocess.run([BIN / "metalcast", "patch", "keygen", "--data-dir",
                        self.server.data_dir], check=True, capture_output=True)
        self._rpms()
        for name in self.names:
            self._host(name)

    def _rpms(self) -> None:
        b = self.work / "rpms"
        busybox = shutil.which("busybox")
        self.base = [build_rpm(b, "hostbase", extra_tags=BASE_SH,
                               install=BASE_INSTALL.replace("{busybox}", busybox),
                               files="/bin/sh\n/usr/bin/busybox")]
        self.base += [build_rpm(b, name) for name in ("tool", "svc", "kern", "rel",
                                                      *self.extra_base)]
        feed = self.server.data_dir / "httpboot" / "feed" / "rel-1.0"
        (feed / "Packages" / "noarch").mkdir(parents=True)
        for rpm in self.base:
            shutil.copy(rpm, feed / "Packages" / "noarch")
        subprocess.run(["createrepo_c", "-q", str(feed)], check=True)
        script = "\n".join(f"echo '{line}' >> %{{buildroot}}{SCRIPTS_SOURCE}/svc" for line in
                           ("#!/bin/sh", "echo restarted >> /var/log/svc.restarts"))
        self.patch_rpms = {
            "tool": build_rpm(b, "tool", "1.1"),
            "svc": build_rpm(b, "svc", "1.1", scripts=restart_script_scriptlets("svc"),
                             install=f"mkdir -p %{{buildroot}}{SCRIPTS_SOURCE}\n{script}",
                             files=f"{SCRIPTS_SOURCE}/svc"),
            "kern": build_rpm(b, "kern", "1.1", scripts=reboot_required_scriptlets()),
            "rel": build_rpm(b, "rel", "1.1")}

    def _host(self, name: str) -> None:
        root = self.work / "hosts" / name
        (root / "var/lib/rpm").mkdir(parents=True)
        rpm = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--quiet"]
        subprocess.run([*rpm, str(self.base[0])], check=True, capture_output=True)
        subprocess.run([*rpm, *map(str, self.base[1:])], check=True, capture_output=True)
        node = self.api("POST", "/v1/nodes",
                        {"driver": "fake-hardware", "name": name,
                         "properties": {"nodetype": self.names[name]}}, ok=(201,))
        self.uuids[name] = node["uuid"]
        provision(self.server.url, node["uuid"], "manage", "manageable", auth=self.auth)
        provision(self.server.url, node["uuid"], "adopt", "active", auth=self.auth)
        # a host that runs its agent is powered on (a fake node starts off)
        self.api("PUT", f"/v1/nodes/{node['uuid']}/states/power", {"target": "power on"},
                 ok=(202,))
        wait_node(self.server.url, node["uuid"], lambda n: n["power_state"] == "power on"
                  and n["reservation"] is None, "powered on", auth=self.auth)
        assert issue_token(self.server.url, name, self.token_file(name),
                           self.auth)["node_uuid"] == node["uuid"]
        self.start_agent(name)

    def root(self, name: str) -> Path:
        return self.work / "hosts" / name

    def token_file(self, name: str) -> Path:
        """The agent's default token file (under its state dir)."""
        return self.work / "state" / name / "host-agent-token.json"

    def api(self, method: str, path: str, body=None, ok=(200,)):
        """helpers.api_call on this server, with its user if it has one."""
        return api_call(self.server.url, method, path, body, ok, auth=self.auth)

    def info(self, name: str) -> dict:
        return self.api("GET", f"/v1/nodes/{self.uuids[name]}")["driver_internal_info"]

    def client_env(self) -> dict[str, str]:
        return client_env(self)

    def start_agent(self, name: str, *extra) -> None:
        cmd = [str(c) for c in (*self.agent_command(name), *extra)]
        process, ready, log = start_ready(cmd, "METALCAST-AGENT ", 60, f"host agent {name}")
        self.agents[name] = (process, ready, log)

    def agent_command(self, name: str) -> list:
        return [BIN / "metalcast-agent", "host", "--api-url", self.server.url,
               "--node-uuid", self.uuids[name], "--listen", "127.0.0.1:0",
               "--advertise-host", "127.0.0.1", "--state-dir", self.work / "state" / name,
               "--heartbeat-interval", self.intervals.get(name, "2"), "--root", self.root(name),
               "--base-url", f"{self.http}/feed/rel-1.0",
               "--updates-url", f"{self.http}/updates/rel-1.0", "--sw-version", "1.0",
               "--nodetype", self.names[name]]

    def stop_agent(self, name: str) -> None:
        process = self.agents.pop(name)[0]
        stop(process.pid, process)

    def restart_server(self, kill: bool = False) -> None:
        """Stop the server (SIGKILL with ``kill``: no clean shutdown) and start it again
        on its data, port and INI; the agents keep running and find it there again
        (a fixed ``[pxe] http_port`` keeps their repo URLs valid too)."""
        if kill:
            self.server.process.kill()
            self.server.process.wait(30)
        else:
            stop_server(self.server.process)
        port = int(self.server.url.rsplit(":", 1)[1])
        self.server = start_server(self.server.data_dir, self.sections, port=port)

    def close(self) -> None:
        for name in list(self.agents):
            self.stop_agent(name)
        stop_server(self.server.process)


def client_env(lab) -> dict[str, str]:
    """The environment of a metalcast client (sw-patch, sw-manager) of ``lab``: its
    server's URL and, if it has users, its user (any lab with a ``server``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "METALCAST_"))}
    env.update(METALCAST_URL=lab.server.url, SW_PATCH_POLL_INTERVAL="0.2")
    auth = getattr(lab, "auth", None)
    if auth:
        env.update(METALCAST_USERNAME=auth[0], METALCAST_PASSWORD=auth[1])
    return env


def sw_patch(lab, *argv, stdin: str | None = None):
    return subprocess.run([BIN / "sw-patch", *map(str, argv)], capture_output=True,
                          text=True, env=client_env(lab), timeout=180, input=stdin)


def build(lab, pid: str, rpm: str, *extra) -> Path:
    out = lab.work / "patches"
    proc = subprocess.run([BIN / "sw-patch-build", "--id", pid, "--release", "1.0",
                           "--data-dir", lab.server.data_dir, "-o", out, *extra,
                           lab.patch_rpms[rpm]], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out / f"{pid}.patch"


def patch_state(lab, pid: str) -> str:
    rows = [line.split() for line in sw_patch(lab, "query").stdout.splitlines()]
    return next(row[-1] for row in rows if row and row[0] == pid)


def hosts(lab) -> dict[str, dict[str, str]]:
    """query-hosts as printed: hostname -> column -> value."""
    lines = sw_patch(lab, "query-hosts").stdout.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[2:] if line.strip()]
    return {row[0]: dict(zip(header, row)) for row in rows}


def wait_for(what: str, check, timeout: float = WAIT):
    return wait_until(check, timeout, 0.3, what)


def all_hosts(lab, column: str, value: str) -> bool:
    shown = hosts(lab)
    return len(shown) == len(lab.names) and all(h[column] == value for h in shown.values())


def install_all(lab) -> None:
    for name in lab.names:
        proc = sw_patch(lab, "host-install", name)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.endswith("Installation was successful.\n"), proc.stdout


