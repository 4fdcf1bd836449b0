"""Host-agent takeover, and agent tokens at rest, replayed against a running appliance.

The attack: ``GET /v1/lookup?addresses=<MAC>&agent_mode=host`` (or
``node_uuid=<name>``), with no credentials, returned a fresh host-agent token for an
*active* node; a heartbeat with it and ``agent_mode: host`` was accepted with the
attacker's ``callback_url`` and ``patching`` report, the node showed patch-current at
the attacker's address, install commands went to the attacker, and the real agent
was locked out. The tokens were stored in plain text in driver_internal_info.

Replayed over loopback HTTP against an appliance with HTTP basic authentication
(served by werkzeug on 127.0.0.1:0 in this process), with the real host agent
(``ramdisk_agent.hostmode.HostAgent``, its HTTPS command API and heartbeat loop) on a
fake patch engine, its token issued by the operator through the vendor passthru.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import threading
import uuid as uuidlib

import bcrypt
import pytest
import requests
from werkzeug.serving import make_server

from api import create_app
from conductor import config
from conductor.appliance import Appliance
from ramdisk_agent import hostmode, selfsigned
from ramdisk_agent.wire.agent_tokens import host_command_token, token_hash
from tests.waiting import wait_until

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
AGENT = {"X-OpenStack-Ironic-API-Version": "1.68"}
USER, PASSWORD = "operator", f"pw-{uuidlib.uuid4().hex[:12]}"
ISSUE = "/vendor_passthru?method=issue_host_agent_token"
TIMEOUT = 10
ATTACKER_URL = "https://127.0.0.66:9999"
ATTACKER_PEM = selfsigned.certificate("127.0.0.66")[0].decode()
#: What the attacker reports: everything installed, nothing to do.
FAKE_REPORT = {"nodetype": "controller", "subfunctions": ["controller"], "sw_version": "1.0",
               "out_of_date": False, "installed": {}, "to_remove": [], "missing_pkgs": [],
               "duplicated_pkgs": {}, "state": "idle", "node_is_patched": False,
               "patch_failed": False, "install_request": None}


class FakeEngine:
    """The patch engine of the real host agent: out of date until it installs."""

    def __init__(self):
        self.calls, self.out_of_date = [], True

    def report(self):
        return dict(FAKE_REPORT, nodetype="worker", subfunctions=["worker"],
                    out_of_date=self.out_of_date, installed={"tool": "1.0-1@noarch"})

    def install(self, force, locked):
        self.calls.append((force, locked))
        self.out_of_date = False
        return {"status": True, "restart_agent": False}


class Lab:
    """The appliance behind a loopback HTTP server, and the operator's session."""

    def __init__(self, work):
        self.work = work
        data = work / "data"
        (data / "httpboot" / "updates" / "rel-1.0" / "repodata").mkdir(parents=True)
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        (work / "htpasswd").write_text(f"{USER}:{hashed}\n")
        settings = config.from_options({
            "data_dir": str(data), "conductor.host": "security", "pxe.enabled": False,
            "api.auth_strategy": "http_basic", "api.htpasswd_file": str(work / "htpasswd"),
            "agent.command_timeout": 5.0, "agent.max_command_attempts": 1,
            "conductor.sync_power_state_interval": 0})
        self.appliance = Appliance(settings)
        self.appliance.start()
        self.httpd = make_server("127.0.0.1", 0, create_app(self.appliance.service),
                                 threaded=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.operator = requests.Session()
        self.operator.auth = (USER, PASSWORD)
        self.operator.headers.update(LATEST)
        self.agents: list[hostmode.HostAgent] = []

    def api(self, method, path, ok=(200,), **kw):
        response = self.operator.request(method, self.url + path, timeout=TIMEOUT, **kw)
        assert response.status_code in ok, response.text
        return response.json() if response.content else None

    def node(self, name, macs=(), active=True) -> str:
        node = self.api("POST", "/v1/nodes", ok=(201,), json={
            "driver": "fake-hardware", "name": name, "automated_clean": False})
        for mac in macs:
            self.api("POST", "/v1/ports", ok=(201,),
                     json={"node_uuid": node["uuid"], "address": mac})
        targets = (("manage", "manageable"), ("adopt", "active")) if active else ()
        for target, state in targets:
            self.api("PUT", f"/v1/nodes/{node['uuid']}/states/provision", ok=(202,),
                     json={"target": target})
            wait_until(lambda state=state: self.state(node["uuid"]) == state, TIMEOUT,
                       0.05, f"node {name} {state}")
        return node["uuid"]

    def state(self, uuid):
        node = self.api("GET", f"/v1/nodes/{uuid}")
        return node["provision_state"] if node["reservation"] is None else None

    def issue(self, ident) -> dict:
        return self.api("POST", f"/v1/nodes/{ident}{ISSUE}")

    def start_agent(self, name, issued, engine) -> hostmode.HostAgent:
        state = self.work / "agents" / name
        state.mkdir(parents=True)
        token_file = state / "token.json"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(issued, handle)
        args = argparse.Namespace(
            api_url=self.url, insecure=False, ca_file=None, state_dir=str(state),
            node_uuid=None, token_file=str(token_file), advertise_host="127.0.0.1",
            listen_host="127.0.0.1", listen_port=0, heartbeat_interval=600.0)
        agent = hostmode.HostAgent(args, engine)
        threading.Thread(target=agent.run, name=f"host-agent-{name}", daemon=True).start()
        self.agents.append(agent)
        return agent

    def internal(self, uuid) -> dict:
        return self.appliance.store.get_node(uuid).driver_internal_info or {}

    def host_row(self, name):
        rows = [h for h in self.appliance.service.patching.query_hosts()
                if h["hostname"] == name]
        return rows[0] if rows else None

    def close(self):
        for agent in self.agents:
            agent.stop()
        self.httpd.shutdown()
        self.appliance.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("host-agent-token"))
    yield lab
    lab.close()


def anonymous(method, url, **kw):
    return requests.request(method, url, timeout=TIMEOUT, **kw)


def attacker_beat(lab, uuid, token, **extra):
    body = {"callback_url": ATTACKER_URL, "agent_version": "13.0.0", "agent_mode": "host",
            "agent_verify_ca": ATTACKER_PEM, "patching": FAKE_REPORT, **extra}
    if token is not None:
        body["agent_token"] = token
    return anonymous("POST", f"{lab.url}/v1/heartbeat/{uuid}", json=body, headers=AGENT)


def test_anonymous_host_lookup_and_heartbeat_take_nothing_over(lab):
    mac = "52:54:00:5e:c0:01"
    uuid = lab.node("victim-0", macs=[mac])
    engine = FakeEngine()
    agent = lab.start_agent("victim-0", lab.issue("victim-0"), engine)
    wait_until(lambda: lab.host_row("victim-0"), TIMEOUT, 0.05, "the real agent reporting")
    real_url = agent.callback_url
    before = (lab.internal(uuid), lab.host_row("victim-0"))
    assert before[0]["host_agent_url"] == real_url and before[1]["patch_current"] is False

    # 1. The lookups: every form answers exactly as for a node that does not exist.
    unknown = anonymous("GET", f"{lab.url}/v1/lookup?node_uuid={uuidlib.uuid4()}",
                        headers=AGENT)
    assert unknown.status_code == 404
    for query in (f"addresses={mac}&agent_mode=host", "node_uuid=victim-0&agent_mode=host",
                  f"node_uuid={uuid}&agent_mode=host", f"addresses={mac}",
                  f"node_uuid={uuid}"):
        response = anonymous("GET", f"{lab.url}/v1/lookup?{query}", headers=AGENT)
        assert (response.status_code, response.content) == (404, unknown.content), query
    # 2. The token issue needs credentials.
    for auth in (None, (USER, "wrong"), ("attacker", PASSWORD)):
        response = anonymous("POST", f"{lab.url}/v1/nodes/{uuid}{ISSUE}", auth=auth,
                             headers=LATEST)
        assert response.status_code == 401, response.text
    # 3. Heartbeats with whatever the attacker can put in agent_token.
    stored_hash = token_hash(json.loads((lab.work / "agents" / "victim-0" / "token.json")
                                        .read_text())["token"])
    for token in (None, "", "******", "x" * 43, stored_hash, stored_hash[7:]):
        response = attacker_beat(lab, uuid, token)
        assert response.status_code == 400, (token, response.text)
        assert "Invalid or missing agent token" in response.text
    after = (lab.internal(uuid), lab.host_row("victim-0"))
    assert after == before                 # driver_internal_info, patch state, URL
    assert lab.host_row("victim-0")["ip"] == "127.0.0.1"

    # 4. The real agent keeps working: an install reaches it, and its report is taken.
    result = lab.appliance.service.patching.host_install_async("victim-0", force=True)
    assert not result.error, result.error
    wait_until(lambda: engine.calls and lab.host_row("victim-0")["patch_current"],
               TIMEOUT, 0.05, "the real agent installing and reporting patch-current")
    assert engine.calls == [(True, False)]
    assert lab.internal(uuid)["host_agent_url"] == real_url


def test_stolen_token_is_useless_elsewhere(lab):
    """A token works for its node, from its host, with its certificate; nowhere else."""
    a, b = lab.node("host-a"), lab.node("host-b")
    token_a, token_b = lab.issue(a)["token"], lab.issue(b)["token"]
    before_b = lab.internal(b)
    for node, token in ((b, token_a), (a, token_b)):
        response = attacker_beat(lab, node, token)
        assert response.status_code == 400 and "Invalid or missing agent token" in \
            response.text
    assert lab.internal(b) == before_b and lab.host_row("host-b") is None
    # A host agent's token is no ramdisk token either (no agent_mode).
    response = anonymous("POST", f"{lab.url}/v1/heartbeat/{a}", headers=AGENT, json={
        "callback_url": ATTACKER_URL, "agent_token": token_a, "agent_version": "13.0.0"})
    assert response.status_code == 400
    # The real agent of host-a heartbeats first: the token is bound to it. The same
    # token from another host, or with another certificate, is refused afterwards.
    real_pem = selfsigned.certificate("127.0.0.1")[0].decode()
    body = {"callback_url": "https://127.0.0.1:9999", "agent_token": token_a,
            "agent_version": "1", "agent_mode": "host", "agent_verify_ca": real_pem,
            "patching": dict(FAKE_REPORT, out_of_date=True)}
    assert anonymous("POST", f"{lab.url}/v1/heartbeat/{a}", json=body,
                     headers=AGENT).status_code == 202
    bound = (lab.internal(a), lab.host_row("host-a"))
    for change in ({}, {"callback_url": "https://127.0.0.1:9999"},
                   {"agent_verify_ca": real_pem}):
        response = attacker_beat(lab, a, token_a, **change)
        assert response.status_code == 400 and "Detected change" in response.text, change
    assert (lab.internal(a), lab.host_row("host-a")) == bound
    assert bound[1]["patch_current"] is False


def test_no_agent_token_is_stored_in_plain_text(lab):
    """Grep the database files for every token and command credential handed out."""
    mac = "52:54:00:5e:c0:02"
    uuid = lab.node("deploying-0", macs=[mac], active=False)
    lab.api("PATCH", f"/v1/nodes/{uuid}", json=[
        {"op": "add", "path": "/deploy_interface", "value": "direct"},
        {"op": "add", "path": "/instance_info", "value": {
            "image_source": "file:///srv/image.raw", "image_os_hash_algo": "sha256",
            "image_os_hash_value": "ab" * 32}}])
    for target, state in (("manage", "manageable"), ("provide", "available"),
                          ("active", "wait call-back")):
        lab.api("PUT", f"/v1/nodes/{uuid}/states/provision", ok=(202,),
                json={"target": target})
        wait_until(lambda state=state: lab.state(uuid) == state, TIMEOUT, 0.05, state)
    lookup = anonymous("GET", f"{lab.url}/v1/lookup?addresses={mac}", headers=AGENT)
    ramdisk_token = lookup.json()["config"]["agent_token"]
    assert len(ramdisk_token) >= 43
    active = lab.node("at-rest-0")
    host_token = lab.issue(active)["token"]
    secrets = {"ramdisk token": ramdisk_token, "host token": host_token,
               "host command credential": host_command_token(host_token)}
    for text in list(secrets.values()):
        secrets[f"{text} (base64)"] = base64.b64encode(text.encode()).decode()
    files = [p for p in (lab.work / "data").iterdir() if p.name.startswith("metalcast.sqlite")]
    assert files, list((lab.work / "data").iterdir())
    for path in files:
        raw = path.read_bytes()
        for what, text in secrets.items():
            assert text.encode() not in raw, f"{what} in plain text in {path.name}"
    for uuid_ in (uuid, active):
        shown = json.dumps(lab.api("GET", f"/v1/nodes/{uuid_}"))
        assert not any(text in shown for text in secrets.values())


def test_plain_text_tokens_of_an_older_version_are_replaced_at_start(tmp_path):
    """A database an older version wrote: a ramdisk token and a host-agent token (the
    latter possibly from the anonymous lookup) in plain text. After a start neither is
    stored; the ramdisk agent keeps working, the host-agent token is revoked."""
    settings = config.from_options({"data_dir": str(tmp_path / "data"), "pxe.enabled": False,
                                    "conductor.host": "security",
                                    "conductor.sync_power_state_interval": 0})
    old = Appliance(settings)
    ramdisk_token, host_token = "r" * 43, "h" * 43
    deploying = old.store.create_node({
        "driver": "fake-hardware", "name": "old-deploying", "provision_state": "wait call-back",
        "maintenance": True, "driver_internal_info": {"agent_secret_token": ramdisk_token}})
    active = old.store.create_node({
        "driver": "fake-hardware", "name": "old-active", "provision_state": "active",
        "driver_internal_info": {"host_agent_token": host_token,
                                 "host_agent_url": ATTACKER_URL, "host_agent_since": "x"}})
    old.stop()
    appliance = Appliance(settings)
    appliance.start()
    try:
        client = create_app(appliance.service).test_client()
        for node in (deploying, active):
            stored = json.dumps(appliance.store.get_node(node.uuid).driver_internal_info)
            assert ramdisk_token not in stored and host_token not in stored
        assert not any(key.startswith("host_agent")
                       for key in appliance.store.get_node(active.uuid).driver_internal_info)
        beat = {"callback_url": "https://127.0.0.1:9999", "agent_version": "13.0.0"}
        response = client.post(f"/v1/heartbeat/{deploying.uuid}", headers=AGENT,
                               json=dict(beat, agent_token=ramdisk_token))
        assert response.status_code == 202, response.get_json()
        response = client.post(f"/v1/heartbeat/{active.uuid}", headers=AGENT, json=dict(
            beat, agent_token=host_token, agent_mode="host", patching=FAKE_REPORT))
        assert response.status_code == 400
    finally:
        appliance.stop()
