"""The image-update server end to end: ``metalcast serve`` as a process, the operator's
``metalcast image|channel|group|instance|lease`` commands as processes, and an Omaha
client speaking the wire code the host agent uses, over loopback HTTP."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from conductor.updates.catalogue import METALCAST_APPID
from ramdisk_agent.wire import image_signature, omaha
from tests.functional.conftest import BIN_DIR, start_server, stop_server
from tests.waiting import wait_until

MACHINE = "5f0c1d2e3a4b5c6d7e8f901a2b3c4d5e"
TIMEOUT = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("updates-cli"))
    yield running
    stop_server(running.process)


def cli(server, *words, ok=True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METALCAST_", "OS_"))}
    done = subprocess.run([str(BIN_DIR / "metalcast"), "--url", server.url, *words],
                          capture_output=True, text=True, timeout=120, env=env)
    if ok:
        assert done.returncode == 0, (words, done.stdout, done.stderr)
    return done


def as_json(server, *words):
    return json.loads(cli(server, *words, "--format", "json").stdout)


def check(server, version, machine=MACHINE, events=(), updatecheck=True, delta=False):
    body = omaha.render_request(omaha.Request((omaha.AppRequest(
        METALCAST_APPID, version, "stable", machineid=machine, delta_okay=delta,
        updatecheck=updatecheck, events=tuple(events)),)))
    reply = requests.post(f"{server.url}/v1/update/", data=body, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return omaha.parse_response(reply.content).apps[0]


def test_operator_and_host_end_to_end(server, tmp_path):
    images = {}
    for n, version in enumerate(("1.0.0", "2.0.0")):
        data = bytearray(2 << 20)
        data[n * 4096:(n + 1) * 4096] = os.urandom(4096)
        images[version] = bytes(data)
        (tmp_path / f"{version}.img").write_bytes(data)
        shown = as_json(server, "image", "upload", str(tmp_path / f"{version}.img"),
                        "--version", version, "--channel", "stable")
        assert shown["sha256"] == hashlib.sha256(data).hexdigest()
    listed = as_json(server, "image", "list")
    assert [(i["version"], i["channels"]) for i in listed] == [("1.0.0", []),
                                                              ("2.0.0", ["stable"])]
    refused = cli(server, "image", "delete", "2.0.0", ok=False)
    assert refused.returncode == 1 and "channel stable" in refused.stderr
    assert "metalcast channel set" in refused.stderr

    # the key the appliance serves is the one `metalcast image pubkey` prints
    pubkey = subprocess.run([str(BIN_DIR / "metalcast"), "image", "pubkey", "--data-dir",
                             str(server.data_dir)], capture_output=True, timeout=60)
    served = requests.get(f"{server.url}/updates/v1/key", timeout=TIMEOUT).content
    assert pubkey.returncode == 0 and served.strip() in pubkey.stdout
    key = serialization.load_pem_public_key(served)

    answer = check(server, "1.0.0").updatecheck
    manifest = answer.manifest
    image_signature.verify(key, manifest.signature, manifest.sha256,
                           manifest.packages[0].size, manifest.version)
    payload = requests.get(answer.payload_urls[0], timeout=TIMEOUT).content
    assert payload == images["2.0.0"]
    for event in ((13, 1), (14, 1), (3, 1)):
        check(server, "1.0.0", events=[omaha.Event(*event)], updatecheck=False)
    check(server, "2.0.0", events=[omaha.Event(3, 2, previous_version="1.0.0")],
          updatecheck=False)
    shown = as_json(server, "instance", "show", MACHINE)
    assert (shown["status"], shown["version"]) == ("complete", "2.0.0")
    assert [h["status"] for h in shown["history"]][-1] == "complete"
    table = cli(server, "instance", "list").stdout
    assert MACHINE in table and "complete" in table

    wait_until(lambda: as_json(server, "image", "show", "2.0.0")["deltas"][0]["state"]
               == "ready", 60, 0.2, "the delta")
    assert check(server, "1.0.0", machine="d" * 32, delta=True).updatecheck.manifest.is_delta

    shown = as_json(server, "group", "set", "stable", "--rollout-percent", "0",
                    "--safe-mode")
    assert (shown["rollout_percent"], shown["safe_mode"]) == (0, True)
    assert check(server, "1.0.0", machine="e" * 32).updatecheck.status == "noupdate"
    assert as_json(server, "group", "set", "stable", "--pause")["updates_enabled"] is False
    assert check(server, "1.0.0", machine="e" * 32).status == "error-updatesDisabled"
    bad = cli(server, "group", "set", "stable", "--window-start", "Thu", ok=False)
    assert bad.returncode == 1 and "Thu 04:00" in bad.stderr

    assert as_json(server, "channel", "set", "stable", "1.0.0")["version"] == "1.0.0"
    assert [c["version"] for c in as_json(server, "channel", "list")] == ["1.0.0"]
    cli(server, "image", "delete", "2.0.0")
    assert [i["version"] for i in as_json(server, "image", "list")] == ["1.0.0"]

    cli(server, "lease", "set-max", "3", "--group", "workers")
    status = as_json(server, "lease", "status")
    assert {"group": "workers", "max": 3, "holders": []} in status


def test_the_host_update_engine_s_clients_against_the_server(server, tmp_path):
    """The agent side's own Omaha and lease clients (ramdisk_agent/host/update/
    client.py) against this server: the contract both sides were built to."""
    from ramdisk_agent.host.update.client import Identity, LeaseClient, OmahaClient
    node, token = host_token(server, tmp_path, "engine-host")

    # the group as the first test left it (paused, 0 %), opened again from the CLI
    cli(server, "group", "set", "stable", "--resume", "--rollout-percent", "100",
        "--no-safe-mode")
    channel = as_json(server, "channel", "show", "stable")["version"]
    client = OmahaClient(f"{server.url}/v1/update/",
                         Identity(METALCAST_APPID, "0.0.1", "stable", node.replace("-", "")))
    offer = client.check(delta_okay=False, interactive=True)
    assert offer.status == "ok" and offer.manifest.version == channel
    client.event(omaha.Event(13, 1))
    assert as_json(server, "instance", "show", node)["status"] == "downloading"

    leases = LeaseClient(f"{server.url}/updates/v1/leases", node, token, "engine")
    held = leases.acquire()
    assert held.held and held.max == 1 and held.holders == 1 and held.expires_at
    assert leases.renew().held
    assert not leases.release().held
    wrong = LeaseClient(f"{server.url}/updates/v1/leases", node, "x" * 43, "engine")
    with pytest.raises(Exception, match="refused this host's agent token"):
        wrong.acquire()


def host_token(server, tmp_path, name: str) -> tuple[str, str]:
    """An adopted active node and its host-agent token (what an installed host has)."""
    latest = {"X-OpenStack-Ironic-API-Version": "latest"}
    node = requests.post(f"{server.url}/v1/nodes", headers=latest, timeout=TIMEOUT, json={
        "driver": "fake-hardware", "name": name}).json()["uuid"]
    for target, state in (("manage", "manageable"), ("adopt", "active")):
        requests.put(f"{server.url}/v1/nodes/{node}/states/provision", headers=latest,
                     json={"target": target}, timeout=TIMEOUT)
        wait_until(lambda s=state: requests.get(
            f"{server.url}/v1/nodes/{node}", headers=latest, timeout=TIMEOUT
        ).json()["provision_state"] == s, 30, 0.1, state)
    cli(server, "host", "token", node, "--output", str(tmp_path / f"{name}.json"))
    return node, json.loads((tmp_path / f"{name}.json").read_text())["token"]


def test_a_held_lease_acquire_is_answered_when_the_holder_releases(server, tmp_path):
    """The agent's LeaseClient asks with ``wait``: the server holds the request (on its
    stream threads) and grants it when the holder releases, not at the next poll."""
    from ramdisk_agent.host.update.client import LeaseClient
    url = f"{server.url}/updates/v1/leases"
    holder = LeaseClient(url, *host_token(server, tmp_path, "hold-a"), "held")
    waiter = LeaseClient(url, *host_token(server, tmp_path, "hold-b"), "held")
    cli(server, "lease", "set-max", "1", "--group", "held")
    assert holder.acquire().held
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(waiter.acquire(wait=50)))
    thread.start()
    thread.join(2.0)
    assert thread.is_alive() and not answers           # held by the server, not refused
    assert not holder.release().held
    thread.join(60)
    assert answers and answers[0].held and answers[0].holders == 1
    status = as_json(server, "lease", "status")
    assert [h["holder"] for g in status for h in g["holders"] if g["group"] == "held"] \
        == [waiter.node]
