"""The host update engine against the real appliance: ``metalcast serve`` (its Omaha
endpoint, content-addressed payloads with Range, the background delta builder, the
instance records) and ``metalcast-agent update ...`` as real processes. The responder
in omaha_peer.py stays for the faults it can inject; this is the same protocol with
the real peer."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import urllib.parse
import urllib.request
import uuid

import pytest

from tests.functional.ab_host import MIB, Host, cgpt_bits, change, make_image
from tests.functional.helpers import api_call
from tests.functional.tools import require_all
from tests.waiting import wait_until

SLOT = 8 * MIB
BASE = "/updates/v1"


@pytest.fixture(autouse=True)
def tools():
    require_all(["cgpt", "sgdisk", "losetup"])


def upload(url: str, path, version: str, channel: str, appid: str) -> dict:
    query = urllib.parse.urlencode({"version": version, "channel": channel, "appid": appid})
    request = urllib.request.Request(
        f"{url}{BASE}/images?{query}", data=path.read_bytes(),
        method="POST", headers={"Content-Type": "application/octet-stream",
                                "X-OpenStack-Ironic-API-Version": "latest"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())


def instance(url: str, host: Host) -> dict:
    machine = (host.root / "machine-id").read_text().strip()
    return api_call(url, "GET", f"{BASE}/instances/{machine}")


@pytest.fixture
def fleet(server, tmp_path):
    """An application id of its own on the shared appliance (its versions are its own),
    a channel with 1.0.0, and a host running it."""
    channel, appid = "ab", "{" + str(uuid.uuid4()) + "}"
    v1 = make_image(tmp_path / "v1.img", SLOT, 1)
    upload(server.url, v1, "1.0.0", channel, appid)
    with urllib.request.urlopen(f"{server.url}{BASE}/key", timeout=30) as reply:
        key_pem = reply.read()
    host = Host(tmp_path / "host", server.url, SLOT, v1, "1.0.0", key_pem)
    host.conf(GROUP=channel, APPID=appid)
    yield server.url, channel, appid, host, v1
    host.detach_loops()


def test_update_complete_and_rollback_seen_by_the_appliance(fleet, tmp_path):
    url, channel, appid, host, v1 = fleet
    v2 = change(v1, tmp_path / "v2.img", 2)
    upload(url, v2, "2.0.0", channel, appid)
    host.know(v2, "2.0.0")
    done = host.run("check")
    assert "Update succeeded -- reboot needed." in done.stdout, done.stdout + done.stderr
    assert instance(url, host)["status"] == "installed"
    assert cgpt_bits(host.disk, 4)[:3] == (2, 1, 0)
    assert host.reboot() == 4
    host.run("mark-good")
    seen = instance(url, host)
    assert (seen["status"], seen["version"]) == ("complete", "2.0.0"), seen

    v3 = change(v2, tmp_path / "v3.img", 3)                 # a version that breaks
    upload(url, v3, "3.0.0", channel, appid)
    host.know(v3, "3.0.0")
    host.run("check")
    assert host.reboot() == 3
    (host.root / "healthy").unlink()
    assert host.run("mark-good", check=False).returncode == 1
    assert host.reboot() == 4 and host.running == "2.0.0"    # gptprio fell back
    host.run("check")
    seen = instance(url, host)
    assert seen["status"] == "error" and "44" in json.dumps(seen), seen


def test_delta_from_the_background_builder(fleet, tmp_path):
    url, channel, appid, host, v1 = fleet
    v2 = change(v1, tmp_path / "v2.img", 2)
    upload(url, v2, "2.0.0", channel, appid)
    shown = f"{BASE}/images/2.0.0?appid={urllib.parse.quote(appid)}"
    wait_until(lambda: any(d.get("state") == "ready"
                           for d in api_call(url, "GET", shown).get("deltas", [])),
               timeout=120, message="the appliance never built the delta")
    host.know(v2, "2.0.0")
    done = host.run("check")
    assert "Update succeeded -- reboot needed." in done.stdout, done.stderr
    assert host.slot_bytes(4) == v2.read_bytes()
    assert "Delta 2.0.0 applied" in done.stderr              # slotdelta's log line


def test_killed_mid_write_resumes_against_the_appliance(server, tmp_path):
    """The appliance counts the interrupted download as in progress (Nebraska's rule:
    error-updateInProgressOnInstance); the engine resumes the offer it was granted."""
    channel, appid = "ab", "{" + str(uuid.uuid4()) + "}"
    size = 384 * MIB           # ~5 checkpoints: time to see one and kill before the end
    v1 = make_image(tmp_path / "v1.img", size, 1)
    v2 = make_image(tmp_path / "v2.img", size, 2)
    upload(server.url, v1, "1.0.0", channel, appid)
    with urllib.request.urlopen(f"{server.url}{BASE}/key", timeout=30) as reply:
        host = Host(tmp_path / "host", server.url, size, v1, "1.0.0", reply.read())
    try:
        host.conf(GROUP=channel, APPID=appid, DELTA_OKAY="false")   # full: checkpoints
        upload(server.url, v2, "2.0.0", channel, appid)
        host.know(v2, "2.0.0")
        state = host.root / "state" / "state.json"
        agent = subprocess.Popen(host.command("check"), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        try:
            wait_until(lambda: state.exists() and json.loads(state.read_text())["checkpoint"],
                       timeout=120, interval=0.005, ignore=ValueError,
                       message=lambda: f"a checkpoint (agent exit {agent.poll()}, state "
                                       f"{state.read_text() if state.exists() else None})")
        finally:
            agent.send_signal(signal.SIGKILL)
            agent.communicate()
        assert agent.returncode == -signal.SIGKILL
        assert cgpt_bits(host.disk, 4)[:3] == (0, 0, 0)
        assert instance(server.url, host)["status"] == "downloading"
        done = host.run("check")
        assert "Update succeeded -- reboot needed." in done.stdout, done.stderr
        assert "resuming" in done.stderr
        assert hashlib.sha256(host.slot_bytes(4)).digest() == hashlib.sha256(
            v2.read_bytes()).digest()
    finally:
        host.detach_loops()


def active_node_with_token(url: str) -> tuple[str, str]:
    """An active node (fake hardware, adopted) and its host agent token, issued through
    the API as 'metalcast host token' does."""
    node = api_call(url, "POST", "/v1/nodes", {"driver": "fake-hardware",
                                               "name": "ab-" + uuid.uuid4().hex[:8],
                                               "automated_clean": False}, ok=(201,))["uuid"]
    for target, state in (("manage", "manageable"), ("adopt", "active")):
        api_call(url, "PUT", f"/v1/nodes/{node}/states/provision", {"target": target},
                 ok=(202,))
        wait_until(lambda s=state: (n := api_call(url, "GET", f"/v1/nodes/{node}"))
                   ["provision_state"] == s and n["reservation"] is None, 30, 0.1, state)
    issued = api_call(url, "POST",
                      f"/v1/nodes/{node}/vendor_passthru?method=issue_host_agent_token",
                      ok=(200,))
    return node, issued["token"]


def test_lease_strategy_with_the_appliance(fleet, tmp_path):
    """REBOOT_STRATEGY=lease against the appliance's semaphore: no lease (max 0), no
    reboot; with one, the reboot, and the lease released once the host is healthy."""
    url, channel, appid, host, v1 = fleet
    node, token = active_node_with_token(url)
    group = "ab-" + uuid.uuid4().hex[:8]
    host.token(node, token)
    host.conf(REBOOT_STRATEGY="lease", LEASE_GROUP=group)
    v2 = change(v1, tmp_path / "v2.img", 2)
    upload(url, v2, "2.0.0", channel, appid)
    host.know(v2, "2.0.0")
    host.run("check")
    api_call(url, "PUT", f"{BASE}/leases/{group}", {"max": 0})
    assert "REBOOT=lease-busy" in host.run("reboot").stdout
    assert not host.marker.exists()
    api_call(url, "PUT", f"{BASE}/leases/{group}", {"max": 1})
    assert "REBOOT=rebooting" in host.run("reboot").stdout and host.marker.exists()

    def holders() -> list[str]:
        groups = api_call(url, "GET", f"{BASE}/leases")["groups"]
        return [h["holder"] for g in groups if g["group"] == group for h in g["holders"]]
    assert holders() == [node]
    assert host.reboot() == 4
    host.run("mark-good")
    assert holders() == []


def deltas_ready(url: str, appid: str, version: str, count: int) -> None:
    shown = f"{BASE}/images/{version}?appid={urllib.parse.quote(appid)}"
    wait_until(lambda: sum(d.get("state") == "ready" for d in api_call(
        url, "GET", shown).get("deltas", [])) >= count, timeout=180,
        message=f"the appliance never built the deltas to {version}")


def test_a_delta_from_the_passive_slot_s_version_is_applied_in_place(fleet, tmp_path):
    """After one update the passive slot holds the version before last; the engine names
    it and the appliance offers the delta from it, applied onto that slot in place."""
    url, channel, appid, host, v1 = fleet
    host.conf(GROUP=channel, APPID=appid, DELTA_IN_PLACE="true")
    v2 = change(v1, tmp_path / "v2.img", 2)
    upload(url, v2, "2.0.0", channel, appid)
    deltas_ready(url, appid, "2.0.0", 1)
    host.know(v2, "2.0.0")
    first = host.run("check")
    assert "Delta 2.0.0 applied into" in first.stderr           # from the active slot
    assert host.reboot() == 4
    host.run("mark-good")
    v3 = change(v2, tmp_path / "v3.img", 3)
    upload(url, v3, "3.0.0", channel, appid)
    deltas_ready(url, appid, "3.0.0", 2)                      # from 1.0.0 and 2.0.0
    host.know(v3, "3.0.0")
    done = host.run("check")
    assert "Update succeeded -- reboot needed." in done.stdout, done.stderr
    assert "Delta 3.0.0 applied in place" in done.stderr      # onto slot 3, holding 1.0.0
    assert host.slot_bytes(3) == v3.read_bytes()
    assert host.slot_bytes(4) == v2.read_bytes()              # the running slot untouched
    assert host.reboot() == 3 and host.running == "3.0.0"
