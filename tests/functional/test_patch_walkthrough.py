"""The StarlingX seed walkthrough with six simulated hosts, end to end.

A real ``metalcast serve`` (its HTTP boot server on a free port serves the base
feed and the update repo), six fake-hardware nodes adopted into ``active``
(controller-0/1, compute-0/1, storage-0/1), and six real ``metalcast-agent host``
processes, each with its own install root and rpm database (base packages put
there with ``rpm --root``, /bin/sh from busybox, test-lab.md §6). The operator
issues each agent's token through the authenticated API (``metalcast host token``;
later ``baremetal node passthru call`` and openstacksdk too); the agents read it
from their token file, heartbeat their patching reports over HTTPS (the first
heartbeat binds the token to the host and its certificate), and get
``patching.install`` / ``patching.query`` from the conductor.
Everything is driven with the real ``sw-patch`` CLI; patches and RPMs (a plain
one, a restart-script one, a reboot-required one) are built by rpmbuild and
``sw-patch-build`` here.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from ramdisk_agent.host.convention import (
    SCRIPTS_SOURCE,
    reboot_required_scriptlets,
    restart_script_scriptlets,
)
from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import HEADERS, api_call, provision
from tests.functional.rpm_tools import build_rpm
from tests.functional.test_baremetal_cli import baremetal
from tests.functional.test_host_patching import BASE_INSTALL, BASE_SH, installed, require_tools
from tests.functional.test_openstacksdk import connect
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


def issue_token(url: str, node: str, path: Path) -> dict:
    """``metalcast host token NODE --output PATH`` (the real client): the token file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([BIN / "metalcast", "--url", url, "host", "token", node,
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

    def __init__(self, work: Path):
        self.work = work
        self.server = start_server(work / "data", {
            "pxe": {"enabled": "true", "tftp_port": 0, "http_port": 0},
            "patching": {"release": "1.0"}})
        self.http = HTTP_RE.search(self.server.output()).group(1)
        self.agents: dict[str, tuple] = {}
        self.uuids: dict[str, str] = {}
        subprocess.run([BIN / "metalcast", "patch", "keygen", "--data-dir",
                        self.server.data_dir], check=True, capture_output=True)
        self._rpms()
        for name in HOSTS:
            self._host(name)

    def _rpms(self) -> None:
        b = self.work / "rpms"
        busybox = shutil.which("busybox")
        self.base = [build_rpm(b, "hostbase", extra_tags=BASE_SH,
                               install=BASE_INSTALL.replace("{busybox}", busybox),
                               files="/bin/sh\n/usr/bin/busybox")]
        self.base += [build_rpm(b, name) for name in ("tool", "svc", "kern", "rel")]
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
        node = api_call(self.server.url, "POST", "/v1/nodes",
                        {"driver": "fake-hardware", "name": name,
                         "properties": {"nodetype": HOSTS[name]}}, ok=(201,))
        self.uuids[name] = node["uuid"]
        provision(self.server.url, node["uuid"], "manage", "manageable")
        provision(self.server.url, node["uuid"], "adopt", "active")
        assert issue_token(self.server.url, name, self.token_file(name))["node_uuid"] == \
            node["uuid"]
        self.start_agent(name)

    def root(self, name: str) -> Path:
        return self.work / "hosts" / name

    def token_file(self, name: str) -> Path:
        """The agent's default token file (under its state dir)."""
        return self.work / "state" / name / "host-agent-token.json"

    def info(self, name: str) -> dict:
        return api_call(self.server.url, "GET", f"/v1/nodes/{self.uuids[name]}")[
            "driver_internal_info"]

    def start_agent(self, name: str, *extra) -> None:
        cmd = [str(c) for c in (*self.agent_command(name), *extra)]
        process, ready, log = start_ready(cmd, "METALCAST-AGENT ", 60, f"host agent {name}")
        self.agents[name] = (process, ready, log)

    def agent_command(self, name: str) -> list:
        return [BIN / "metalcast-agent", "host", "--api-url", self.server.url,
               "--node-uuid", self.uuids[name], "--listen", "127.0.0.1:0",
               "--advertise-host", "127.0.0.1", "--state-dir", self.work / "state" / name,
               "--heartbeat-interval", INTERVALS.get(name, "2"), "--root", self.root(name),
               "--base-url", f"{self.http}/feed/rel-1.0",
               "--updates-url", f"{self.http}/updates/rel-1.0", "--sw-version", "1.0",
               "--nodetype", HOSTS[name]]

    def stop_agent(self, name: str) -> None:
        process = self.agents.pop(name)[0]
        stop(process.pid, process)

    def close(self) -> None:
        for name in list(self.agents):
            self.stop_agent(name)
        stop_server(self.server.process)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_tools()
    lab = Walkthrough(tmp_path_factory.mktemp("walkthrough"))
    yield lab
    lab.close()


def sw_patch(lab, *argv, stdin: str | None = None):
    env = dict(os.environ, METALCAST_URL=lab.server.url, SW_PATCH_POLL_INTERVAL="0.2")
    return subprocess.run([BIN / "sw-patch", *map(str, argv)], capture_output=True,
                          text=True, env=env, timeout=180, input=stdin)


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
    return len(shown) == len(HOSTS) and all(h[column] == value for h in shown.values())


def install_all(lab) -> None:
    for name in HOSTS:
        proc = sw_patch(lab, "host-install", name)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.endswith("Installation was successful.\n"), proc.stdout


def test_seed_walkthrough(lab):
    wait_for("six hosts reporting", lambda: all_hosts(lab, "Patch Current", "Yes"))
    shown = hosts(lab)
    assert shown["compute-0"]["IP Address"] == "127.0.0.1"
    assert shown["storage-1"]["Release"] == "1.0" and shown["storage-1"]["State"] == "idle"

    patch = build(lab, "WALK_0001", "svc", "--reboot-required", "N")
    proc = sw_patch(lab, "upload", patch)
    assert proc.stdout == "WALK_0001 is now available\n\n", proc.stdout
    assert patch_state(lab, "WALK_0001") == "Available"

    assert sw_patch(lab, "apply", "WALK_0001").stdout == "WALK_0001 is now in the repo\n\n"
    assert patch_state(lab, "WALK_0001") == "Partial-Apply"
    wait_for("every host Patch Current No", lambda: all_hosts(lab, "Patch Current", "No"))
    for name in HOSTS:
        assert patch_state(lab, "WALK_0001") == "Partial-Apply"
        proc = sw_patch(lab, "host-install", name)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.endswith("Installation was successful.\n"), proc.stdout
        assert installed(lab.root(name))["svc"] == "1.1-1"
        # the restart script ran, chrooted in the host's root
        assert (lab.root(name) / "var/log/svc.restarts").read_text() == "restarted\n"
    assert patch_state(lab, "WALK_0001") == "Applied"
    assert all_hosts(lab, "Patch Current", "Yes") and all_hosts(lab, "Reboot Required", "No")

    assert sw_patch(lab, "remove", "WALK_0001").returncode == 0
    assert patch_state(lab, "WALK_0001") == "Partial-Remove"
    wait_for("every host Patch Current No", lambda: all_hosts(lab, "Patch Current", "No"))
    install_all(lab)
    assert patch_state(lab, "WALK_0001") == "Available"
    assert installed(lab.root("storage-0"))["svc"] == "1.0-1"
    # the restart script runs again when the patch is removed (its %preun copies it)
    assert (lab.root("storage-0") / "var/log/svc.restarts").read_text().count("restarted") == 2
    proc = sw_patch(lab, "delete", "WALK_0001")
    assert proc.returncode == 0 and "WALK_0001 has been deleted" in proc.stdout, proc.stdout

    rel = build(lab, "WALK_0002", "rel", "--reboot-required", "N", "--status", "REL")
    assert sw_patch(lab, "upload", rel).returncode == 0
    assert sw_patch(lab, "apply", "WALK_0002").returncode == 0
    wait_for("every host Patch Current No", lambda: all_hosts(lab, "Patch Current", "No"))
    install_all(lab)
    assert patch_state(lab, "WALK_0002") == "Applied"
    proc = sw_patch(lab, "commit", "WALK_0002", stdin="y\n")
    assert proc.returncode == 0, proc.stdout
    assert patch_state(lab, "WALK_0002") == "Committed"


def test_reboot_required_needs_a_locked_host(lab):
    wait_for("six idle hosts", lambda: all_hosts(lab, "Patch Current", "Yes"))
    patch = build(lab, "WALK_0003", "kern", "--reboot-required", "Y")
    assert sw_patch(lab, "upload", patch).returncode == 0
    assert sw_patch(lab, "apply", "WALK_0003").returncode == 0
    wait_for("every host Patch Current No", lambda: all_hosts(lab, "Patch Current", "No"))
    proc = sw_patch(lab, "host-install", "compute-1")
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout.endswith("Installation rejected. Node must be locked\n"), proc.stdout
    assert installed(lab.root("compute-1"))["kern"] == "1.0-1"

    uuid = lab.uuids["compute-1"]     # "host-lock": maintenance mode
    api_call(lab.server.url, "PUT", f"/v1/nodes/{uuid}/maintenance", {"reason": "patching"},
             ok=(202,))
    proc = sw_patch(lab, "host-install", "compute-1")
    assert proc.returncode == 0 and proc.stdout.endswith("Installation was successful.\n"), \
        proc.stdout
    assert installed(lab.root("compute-1"))["kern"] == "1.1-1"
    shown = hosts(lab)["compute-1"]
    assert shown["Patch Current"] == "Yes" and shown["Reboot Required"] == "Yes", shown
    # a forced install works on an unlocked host too
    proc = sw_patch(lab, "host-install", "--force", "compute-0")
    assert proc.returncode == 0, proc.stdout
    assert hosts(lab)["compute-0"]["Reboot Required"] == "Yes"

    # The reboot: the agent stops, /run (a tmpfs) is empty, the agent starts again
    # with its token file, a new port and the certificate its token is bound to.
    old_url = lab.agents["compute-1"][1]["callback_url"]
    bound_to = lab.info("compute-1")["host_agent_verify_ca"]
    lab.stop_agent("compute-1")
    shutil.rmtree(lab.root("compute-1") / "run")
    lab.start_agent("compute-1")
    new_url = lab.agents["compute-1"][1]["callback_url"]
    assert new_url != old_url
    wait_for("compute-1 heartbeating from its new port",
             lambda: lab.info("compute-1")["host_agent_url"] == new_url)
    assert lab.info("compute-1")["host_agent_verify_ca"] == bound_to
    wait_for("compute-1 no longer requiring a reboot",
             lambda: hosts(lab)["compute-1"]["Reboot Required"] == "No")
    assert hosts(lab)["compute-0"]["Reboot Required"] == "Yes"
    api_call(lab.server.url, "DELETE", f"/v1/nodes/{uuid}/maintenance", ok=(202,))


def test_boot_install_reboots_once_then_serves(lab):
    """storage-1 boots with the reboot-required patch pending (applied in the test above)."""
    if patch_state(lab, "WALK_0003") == "Available":
        pytest.fail("run with test_reboot_required_needs_a_locked_host (WALK_0003 applied)")
    lab.stop_agent("storage-1")
    state_file = lab.work / "storage-1.state"
    cmd = [str(c) for c in lab.agent_command("storage-1")] + [
        "--boot-install", "--state-file", str(state_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr       # reboot now
    assert json.loads(state_file.read_text())["event"] == "reboot"
    assert installed(lab.root("storage-1"))["kern"] == "1.1-1"
    shutil.rmtree(lab.root("storage-1") / "run")                  # the reboot
    state_file.unlink()
    lab.start_agent("storage-1", "--boot-install", "--state-file", state_file)
    assert not state_file.exists()                                # no second reboot
    wait_for("storage-1 current without a reboot pending", lambda: (
        hosts(lab)["storage-1"]["Patch Current"], hosts(lab)["storage-1"]["Reboot Required"])
        == ("Yes", "No"))


def _beat(lab, name: str, **body) -> requests.Response:
    """A heartbeat as if from the agent's own host, with its certificate (the token is
    bound to both)."""
    pem = (lab.work / "state" / name / "tls" / "agent.crt").read_text()
    base = {"callback_url": lab.agents[name][1]["callback_url"], "agent_version": "1",
            "agent_mode": "host", "agent_verify_ca": pem}
    return requests.post(f"{lab.server.url}/v1/heartbeat/{lab.uuids[name]}",
                         json=dict(base, **body), headers=HEADERS, timeout=10)


def test_bad_input(lab):
    before = hosts(lab)["storage-0"]
    fake = {"out_of_date": True, "state": "install-failed", "patch_failed": True,
            "installed": {}, "sw_version": "1.0"}
    response = _beat(lab, "storage-0", agent_token="wrong", patching=fake)
    assert response.status_code == 400
    assert "Invalid or missing agent token" in response.json()["error_message"]
    response = _beat(lab, "storage-0", patching=fake)      # no token at all
    assert response.status_code == 400
    assert hosts(lab)["storage-0"] == before

    token = json.loads(lab.token_file("storage-0").read_text())
    response = _beat(lab, "storage-0", agent_token=token["token"],
                     patching=dict(fake, installed=["not", "a", "dict"]))
    assert response.status_code == 400 and "installed" in response.json()["error_message"]
    response = _beat(lab, "storage-0", agent_token=token["token"],
                     callback_url="http://127.0.0.1:1", patching=fake)
    assert response.status_code == 400 and "require_tls" in response.json()["error_message"]
    assert hosts(lab)["storage-0"] == before

    node = api_call(lab.server.url, "GET", f"/v1/nodes/{lab.uuids['storage-0']}")
    assert node["driver_internal_info"]["host_agent_token_hash"] == "******"
    stored = (lab.server.data_dir / "metalcast.sqlite").read_bytes()
    assert token["token"].encode() not in stored
    # No host-mode lookup: an active node is answered as an unknown one, in every form.
    unknown = requests.get(f"{lab.server.url}/v1/lookup?node_uuid=nope", headers=HEADERS,
                           timeout=10)
    for query in (f"node_uuid={lab.uuids['storage-0']}&agent_mode=host",
                  "node_uuid=storage-0&agent_mode=host", "node_uuid=storage-0",
                  f"node_uuid={lab.uuids['storage-0']}&agent_mode=guest"):
        response = requests.get(f"{lab.server.url}/v1/lookup?{query}", headers=HEADERS,
                                timeout=10)
        assert (response.status_code, response.content) == (404, unknown.content), query

    enrolled = api_call(lab.server.url, "POST", "/v1/nodes",
                        {"driver": "fake-hardware", "name": "compute-9"}, ok=(201,))
    refused = requests.post(f"{lab.server.url}/v1/nodes/{enrolled['uuid']}/vendor_passthru"
                            "?method=issue_host_agent_token", headers=HEADERS, timeout=10)
    assert refused.status_code == 409 and "active nodes only" in refused.text
    proc = sw_patch(lab, "host-install", "compute-9")
    assert proc.returncode == 1 and "Unknown host specified: compute-9" in proc.stdout
    # The client command: clear errors, and a file it cannot write revokes nothing.
    for node, extra, named in (("compute-9", [], "active nodes only"),
                               ("nope", [], "could not be found"),
                               ("storage-0", ["--output", lab.work / "no-dir" / "t.json"],
                                "cannot write")):
        proc = subprocess.run([BIN / "metalcast", "--url", lab.server.url, "host", "token",
                               node, *extra], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and named in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    response = _beat(lab, "storage-0", agent_token=token["token"],
                     patching=dict(fake, installed=["still", "the", "token"]))
    assert response.status_code == 400 and "installed" in response.json()["error_message"]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")   # openstacksdk's own
def test_revocation_and_new_tokens_from_the_peer_clients(lab):
    path = lab.token_file("compute-1")
    proc = subprocess.run([BIN / "metalcast", "--url", lab.server.url, "host", "revoke",
                           "compute-1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not any(key.startswith("host_agent") for key in lab.info("compute-1"))
    proc = sw_patch(lab, "host-install", "--force", "compute-1")
    assert proc.returncode == 1 and "no host agent yet" in proc.stdout, proc.stdout
    # The baremetal CLI issues the next token (Ironic's node vendor passthru); it prints
    # the method's answer as a Python dict. The agent reads its file again when its
    # token is refused, and its first heartbeat with the new token binds it.
    listed = baremetal(lab.server, "node", "passthru", "list", "compute-1").stdout
    assert "issue_host_agent_token" in listed
    call = baremetal(lab.server, "node", "passthru", "call", "compute-1",
                     "issue_host_agent_token")
    issued = ast.literal_eval(call.stdout.strip())
    assert issued["node_uuid"] == lab.uuids["compute-1"]
    write_token(path, issued)
    wait_for("compute-1 heartbeating with the token from baremetal",
             lambda: "host_agent_url" in lab.info("compute-1"))
    proc = sw_patch(lab, "host-install", "--force", "compute-1")  # uses the new binding
    assert proc.returncode == 0 and proc.stdout.endswith("Installation was successful.\n"), \
        proc.stdout
    # openstacksdk: a new token for compute-0 revokes the one its agent runs with.
    response = connect(lab.server.url).baremetal.call_node_vendor_passthru(
        "compute-0", "POST", "issue_host_agent_token")
    assert response.status_code == 200
    assert response.json()["node_uuid"] == lab.uuids["compute-0"]
    wait_for("compute-0 unbound by the new token",
             lambda: "host_agent_url" not in lab.info("compute-0"))
    write_token(lab.token_file("compute-0"), response.json())
    wait_for("compute-0 heartbeating with the token from openstacksdk",
             lambda: "host_agent_url" in lab.info("compute-0"))
