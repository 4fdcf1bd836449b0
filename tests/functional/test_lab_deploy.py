"""Deploys in the virtual lab: real ``metalcast serve``, real IPMI to the lab's BMCs,
real iPXE scripts over TFTP/HTTP, the real ``metalcast-agent`` writing each
machine's disk file, and the machine then booting what is on that disk.

* three machines cleaned, deployed and undeployed at once;
* the agent killed (SIGKILL, like a power cut) in the middle of write_image: the
  node fails cleanly on the callback timeout, a redeploy succeeds;
* the HTTP connection cut mid-download: the agent resumes with a Range request;
* a tampered image (content that does not match the checksum): deploy failed with
  the checksum error, the disk left unbootable; the right image then deploys;
* a heartbeat with a wrong agent token (400, node unchanged) and a command to the
  agent's API with a wrong token (401, nothing done).

A tampered delta manifest (signature failure) is covered in test_delta_deploy.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest

from cli.client import Client
from tests.functional.helpers import mac
from tests.functional.ipmi_peers import require
from tests.functional.test_virtlab_machine import require_image_tools
from tests.waiting import wait_until
from virtlab import images
from virtlab.demo import lab as demo_lab
from virtlab.imageserver import ImageServer
from virtlab.lab import start_lab, stop_lab

IMAGE_MIB = 32
DISK_MIB = 40
WAIT = 180          # generous for a loaded 2-core machine, never a timing assertion
CALLBACK_TIMEOUT = 20


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    require("ipmitool")
    require_image_tools()
    running = demo_lab.start_appliance(tmp_path_factory.mktemp("lab-deploy"), {
        "conductor": {"deploy_callback_timeout": CALLBACK_TIMEOUT}})
    v1 = images.build_image(running.httpboot / "lab-v1.img", "1", IMAGE_MIB)
    running.v1 = v1
    running.v1_sha256 = demo_lab.sha256_of(v1)
    yield running
    running.stop()
    assert not _alive(running.pid)


@pytest.fixture
def lab(appliance, tmp_path):
    """A lab of machines named by the test; stopped by PID, its agents checked dead."""
    labs = []

    def start(count: int):
        machines = [{"name": f"m{i}", "mac": mac(),
                     "disk": str(tmp_path / f"m{i}.img"), "disk_size_mib": DISK_MIB}
                    for i in range(count)]
        labs.append(start_lab(demo_lab.lab_config(tmp_path, appliance, machines),
                              tmp_path / "lab.json"))
        return labs[-1]

    yield start
    for running in labs:
        agents = [s["agent"]["pid"] for s in map(running.status, running.machines)
                  if s["agent"]]
        stop_lab(running)
        assert not any(_alive(pid) for pid in agents), "an agent outlived the lab"


def _enrol(client: Client, lab, name: str, image_url: str, digest: str, **fields) -> str:
    info = lab.machines[name]
    return demo_lab.enrol(client, f"{name}-{os.urandom(3).hex()}", info["bmc_port"],
                          info["mac"], demo_lab.image_fields(image_url, digest), **fields)


def _move(client: Client, uuids: list[str], target: str, expected: str) -> dict:
    for uuid in uuids:
        client.set_provision_state(uuid, target)
    return demo_lab.wait_all(client, uuids, (expected, "deploy failed", "clean failed"), WAIT)


def _available(client: Client, lab, name: str, image_url: str, digest: str) -> str:
    uuid = _enrol(client, lab, name, image_url, digest, automated_clean=False)
    _move(client, [uuid], "manage", "manageable")
    _move(client, [uuid], "provide", "available")
    return uuid


def _booted_v1(lab, name: str) -> dict:
    return lab.wait(name, lambda s: s["phase"] == "booted-disk"
                    and (s["booted_os"] or {}).get("version_id") == "1", "booted v1", WAIT)


@pytest.fixture
def image_server(appliance, tmp_path):
    """Serves v1 (and a tampered copy) from tmp_path/www; request log in .requests."""
    servers = []

    def start(**options):
        www = tmp_path / "www"
        www.mkdir(exist_ok=True)
        shutil.copyfile(appliance.v1, www / "lab-v1.img")
        server = ImageServer(str(www), **options)
        servers.append((server, server.start_background()))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_three_machines_deploy_and_undeploy_at_once(appliance, lab):
    running = lab(3)
    client = Client(appliance.url)
    url = f"{appliance.http}/lab-v1.img"
    uuids = {_enrol(client, running, name, url, appliance.v1_sha256): name
             for name in running.machines}
    assert all(n["provision_state"] == "manageable" for n in
               _move(client, list(uuids), "manage", "manageable").values())
    cleaned = _move(client, list(uuids), "provide", "available")   # cleaning by the agent
    assert {n["provision_state"] for n in cleaned.values()} == {"available"}, cleaned
    deployed = _move(client, list(uuids), "active", "active")
    assert {n["provision_state"] for n in deployed.values()} == {"active"}, \
        {n["name"]: n["last_error"] for n in deployed.values()}
    for uuid, name in uuids.items():
        status = _booted_v1(running, name)
        assert status["boots"] == 3 and status["last_agent"]["power_event"] == "power_off"
        assert deployed[uuid]["power_state"] == "power on"
    undeployed = _move(client, list(uuids), "deleted", "available")
    assert {n["provision_state"] for n in undeployed.values()} == {"available"}, undeployed
    for uuid, name in uuids.items():
        assert undeployed[uuid]["instance_info"] == {} or \
            "image_source" not in undeployed[uuid]["instance_info"]
        off = running.wait(name, lambda s: s["phase"] == "off", "off", WAIT)
        assert off["boots"] == 4                           # teardown cleaning by the agent
        with open(running.machines[name]["disk"], "rb") as disk:
            assert disk.read(1 << 20) == bytes(1 << 20)     # metadata erased: unbootable


def _heartbeat(appliance, uuid: str, body: dict) -> tuple[int, str]:
    done = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST",
         "-H", "Content-Type: application/json",
         "-H", "X-OpenStack-Ironic-API-Version: 1.68", "--data", json.dumps(body),
         f"{appliance.url}/v1/heartbeat/{uuid}"], capture_output=True, text=True, timeout=30)
    text, _, code = done.stdout.rpartition("\n")
    return int(code), text


def _agent_command(agent_url: str, token: str) -> int:
    done = subprocess.run(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
         "-H", "Content-Type: application/json",
         "--data", '{"name": "standby.power_off", "params": {}}',
         f"{agent_url}/v1/commands/?agent_token={token}"],
        capture_output=True, text=True, timeout=30)
    return int(done.stdout)


def test_agent_killed_mid_write_then_redeploy_and_wrong_tokens(appliance, lab,
                                                                 image_server):
    require("curl")
    running = lab(1)
    # Each download is held after 4 MiB until the agent is killed: write_image is in
    # progress for as long as the test's steps before the kill take, however loaded.
    held = image_server(hold_after=4 << 20)
    client = Client(appliance.url)
    uuid = _available(client, running, "m0", f"{held.url}/lab-v1.img", appliance.v1_sha256)
    client.set_provision_state(uuid, "active")
    # The step is recorded ("deploying", write_image) just before the agent is asked to
    # run it; the node is back in "wait call-back" once the agent has taken it.
    writing = wait_until(lambda: (node := client.get_node(uuid)) and (
        node.get("deploy_step") or {}).get("step") == "write_image" and
        node["provision_state"] == "wait call-back" and node, WAIT, 0.2,
        lambda: f"write_image to start: {client.get_node(uuid)}")
    agent_url = writing["driver_internal_info"]["agent_url"]
    agent = running.status("m0")["agent"]
    assert running.status("m0")["phase"] == "agent"

    # A heartbeat with the callback URL but a wrong token: 400, nothing changes.
    code, text = _heartbeat(appliance, uuid, {"callback_url": agent_url,
                                              "agent_token": "not-the-token",
                                              "agent_version": "10.0.0"})
    assert code == 400 and "Invalid or missing agent token" in text, (code, text)
    after = client.get_node(uuid)
    assert (after["provision_state"], after["deploy_step"]) == \
        ("wait call-back", writing["deploy_step"])
    assert after["driver_internal_info"]["agent_url"] == agent_url
    # The agent's own API refuses a wrong token; the machine keeps running the agent.
    assert _agent_command(agent_url, "not-the-token") == 401
    assert _agent_command(agent_url, "") == 401
    # The agent goes on: the conductor accepts its next heartbeat after the refusals.
    beat = after["driver_internal_info"].get("agent_last_heartbeat")
    wait_until(lambda: client.get_node(uuid)["driver_internal_info"].get(
        "agent_last_heartbeat") != beat, 30, 0.2, "a heartbeat after the refused ones")
    status = running.status("m0")
    assert status["phase"] == "agent" and status["agent"]["pid"] == agent["pid"]

    os.kill(agent["pid"], signal.SIGKILL)                    # dies mid-write
    held.release()
    failed = demo_lab.wait_all(client, [uuid], ("deploy failed", "active"), WAIT)[uuid]
    assert failed["provision_state"] == "deploy failed", failed
    assert "timed out" in failed["last_error"] or "timeout" in failed["last_error"], \
        failed["last_error"]
    assert not _alive(agent["pid"])
    # Redeploy from the appliance's own HTTP server: it works.
    client.update_node(uuid, [{"op": "add", "path": "/instance_info/image_source",
                               "value": f"{appliance.http}/lab-v1.img"}])
    redeployed = _move(client, [uuid], "active", "active")[uuid]
    assert redeployed["provision_state"] == "active", redeployed["last_error"]
    assert redeployed["last_error"] is None
    _booted_v1(running, "m0")


def test_dropped_connection_is_resumed(appliance, lab, image_server):
    running = lab(1)
    dropping = image_server(drop_after=5 << 20)      # the first GET is cut after 5 MiB
    client = Client(appliance.url)
    uuid = _available(client, running, "m0", f"{dropping.url}/lab-v1.img",
                      appliance.v1_sha256)
    node = _move(client, [uuid], "active", "active")[uuid]
    assert node["provision_state"] == "active", node["last_error"]
    gets = [r for r in dropping.requests if r[0] == "GET" and r[1] == "/lab-v1.img"]
    assert len(gets) == 2 and gets[0][2] is None, gets
    assert gets[1][2] == f"bytes={5 << 20}-", gets            # resumed where it was cut
    _booted_v1(running, "m0")


def test_tampered_image_fails_the_checksum_then_the_right_one_deploys(appliance, lab,
                                                                      image_server):
    running = lab(1)
    server = image_server()
    www = server.root
    tampered = bytearray(appliance.v1.read_bytes())
    tampered[(IMAGE_MIB << 20) // 2] ^= 0xFF
    with open(os.path.join(www, "tampered.img"), "wb") as f:
        f.write(tampered)
    client = Client(appliance.url)
    uuid = _available(client, running, "m0", f"{server.url}/tampered.img",
                      appliance.v1_sha256)
    failed = _move(client, [uuid], "active", "active")[uuid]
    assert failed["provision_state"] == "deploy failed"
    assert "checksum" in failed["last_error"].lower(), failed["last_error"]
    assert appliance.v1_sha256 in failed["last_error"], failed["last_error"]
    with open(running.machines["m0"]["disk"], "rb") as disk:
        assert disk.read(1 << 20) == bytes(1 << 20)          # never left bootable
    client.update_node(uuid, [{"op": "add", "path": "/instance_info/image_source",
                               "value": f"{server.url}/lab-v1.img"}])
    node = _move(client, [uuid], "active", "active")[uuid]
    assert node["provision_state"] == "active", node["last_error"]
    _booted_v1(running, "m0")
