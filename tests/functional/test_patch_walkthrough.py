"""The StarlingX seed walkthrough with six simulated hosts, end to end, driven host
by host with the real ``sw-patch`` CLI (the lab: patch_lab.py).

The operator issues each agent's token through the authenticated API (``metalcast
host token``; later ``baremetal node passthru call`` and openstacksdk too); the
agents read it from their token file, heartbeat their patching reports over HTTPS
(the first heartbeat binds the token to the host and its certificate).
"""
from __future__ import annotations

import ast
import json
import shutil
import subprocess

import pytest
import requests

from tests.functional.helpers import HEADERS, api_call
from tests.functional.patch_lab import (
    BIN,
    HOSTS,
    Walkthrough,
    all_hosts,
    build,
    hosts,
    install_all,
    patch_state,
    sw_patch,
    wait_for,
    write_token,
)
from tests.functional.test_baremetal_cli import baremetal
from tests.functional.test_host_patching import installed, require_tools
from tests.functional.test_openstacksdk import connect


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_tools()
    lab = Walkthrough(tmp_path_factory.mktemp("walkthrough"))
    yield lab
    lab.close()



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
