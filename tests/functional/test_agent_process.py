"""The real ``metalcast-agent`` process against a small ramdisk API written here.

The fake API answers ``GET /``, ``/v1/lookup`` (404 first, then the node with a
token; a repeat lookup would get ``******``) and ``/v1/heartbeat`` (409 once, then
202), recording everything. The test then drives the agent's HTTPS command API,
pinning the certificate the agent sent as ``agent_verify_ca``: token checks, 409
while busy, write_image from ``virtlab.imageserver`` onto a disk image file, a
wrong checksum, cleaning, and power_off ending the process in ``exit`` mode.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.waiting import wait_until
from virtlab.imageserver import ImageServer
from virtlab.process import start_ready, stop

MIB = 1 << 20
NODE_UUID = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
MAC = "52:54:00:12:34:56"
TOKEN = "agent-token-for-tests"
HEARTBEAT_TIMEOUT = 2.0           # heartbeats every 0.6-1.2 s


class FakeApi(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeApiHandler)
        self.lookups: list[tuple[dict, str]] = []
        self.heartbeats: list[tuple[float, dict, str]] = []
        self.root_disk_hint: dict | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeApiHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeApi

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body=None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        parts = urllib.parse.urlsplit(self.path)
        if parts.path == "/":
            self._reply(200, {"default_version": {"id": "v1", "version": "1.99"}})
            return
        query = dict(urllib.parse.parse_qsl(parts.query))
        self.server.lookups.append((query, self.headers.get("X-OpenStack-Ironic-API-Version")))
        if len(self.server.lookups) == 1:
            self._reply(404, {"error_message": "not found"})
            return
        token = TOKEN if len(self.server.lookups) == 2 else "******"
        self._reply(200, {"node": {"uuid": NODE_UUID, "properties": {
            "root_device": {"serial": "WANTED"}}, "instance_info": {}},
            "config": {"heartbeat_timeout": HEARTBEAT_TIMEOUT, "agent_token": token,
                       "agent_token_required": True}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.heartbeats.append((time.monotonic(), body,
                                       self.headers.get("X-OpenStack-Ironic-API-Version")))
        if self.path != f"/v1/heartbeat/{NODE_UUID}":
            self._reply(404)
        elif len(self.server.heartbeats) == 1:
            self._reply(409, {"error_message": "locked"})
        else:
            self._reply(202)


def agent_call(agent, method, path, body=None, token=TOKEN):
    """(status, JSON) from the agent's command API, TLS pinned to agent_verify_ca."""
    sep = "&" if "?" in path else "?"
    req = urllib.request.Request(f"{agent['url']}{path}{sep}agent_token={token}",
                                 data=json.dumps(body).encode() if body else None,
                                 method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=agent["tls"], timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_done(agent, timeout=30.0) -> dict:
    def ended():
        last = agent_call(agent, "GET", "/v1/commands/")[1]["commands"][-1]
        return last if last["command_status"] != "RUNNING" else None
    return wait_until(ended, timeout, 0.05, "the last command to end (still RUNNING)")


def write_step(url, digest):
    return {"interface": "deploy", "step": "write_image", "priority": 80,
            "args": {"image_info": {"id": "img", "urls": [url], "disk_format": "raw",
                                    "container_format": "bare", "stream_raw_images": True,
                                    "os_hash_algo": "sha256", "os_hash_value": digest,
                                    "node_uuid": NODE_UUID}, "configdrive": None}}


@pytest.fixture()
def lab(tmp_path, request):
    extra = getattr(request, "param", [])
    api = FakeApi()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    (tmp_path / "srv").mkdir()
    image = os.urandom(6 * MIB + 999)
    (tmp_path / "srv" / "image.raw").write_bytes(image)
    images = ImageServer(str(tmp_path / "srv"), drop_after=MIB)  # 1st GET cut: ~1 s resume
    images.start_background()
    other = tmp_path / "other.img"
    other.write_bytes(b"\x11" * 8 * MIB)
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\x22" * 16 * MIB)
    state = tmp_path / "state.json"
    cmd = [sys.executable, "-m", "ramdisk_agent.cli", "--cmdline-file", "",
           "--api-url", api.url, "--mac", MAC, "--listen", "127.0.0.1:0",
           "--advertise-host", "127.0.0.1", "--disk", f"{other},serial=OTHER",
           "--disk", f"{disk},serial=WANTED", "--power-action", "exit",
           "--state-file", str(state), *extra]
    process, ready, log = start_ready(cmd, "METALCAST-AGENT ", 60, "metalcast-agent")
    try:
        yield {"api": api, "images": images, "image": image, "disk": disk, "other": other,
               "state": state, "process": process, "ready": ready, "log": log}
    finally:
        stop(process.pid, process)
        for server in (api, images):
            server.shutdown()
            server.server_close()


def test_agent_lookup_heartbeat_and_commands(lab):
    api, ready = lab["api"], lab["ready"]
    assert ready["node_uuid"] == NODE_UUID
    assert [q for q, _ in api.lookups] == [{"addresses": MAC}] * 2
    assert {v for _, v in api.lookups} == {"1.62"}          # min(1.99, 1.62)

    wait_until(lambda: len(api.heartbeats) >= 5, 20, 0.1,
               lambda: "five heartbeats; agent log:\n" + "".join(lab["log"]))
    beats = api.heartbeats[:4]
    assert len(beats) == 4, "".join(lab["log"])
    _, body, version = beats[1]
    assert version == "1.68" and body["agent_token"] == TOKEN
    assert body["callback_url"] == ready["callback_url"]
    assert body["callback_url"].startswith("https://127.0.0.1:")
    assert body["agent_verify_ca"].startswith("-----BEGIN CERTIFICATE-----")
    assert "agent_version" in body
    gaps = [b[0] - a[0] for a, b in zip(beats, beats[1:])]
    assert 0.5 < gaps[0] < 3.0                               # 409: retried after 1-2 s
    assert all(g > 0.55 for g in gaps[1:]), gaps             # never early
    def scheduled():  # the agent's own schedule, logged just after each heartbeat answer
        return [float(m.group(1)) for line in list(lab["log"])
                if (m := re.search(r"Heartbeat for node \S+ sent; next in ([\d.]+)s", line))]
    # The 4th log line can trail the 4th request under load.
    wait_until(lambda: len(scheduled()) >= 4, 20, 0.1, "four scheduled heartbeats logged")
    planned = scheduled()
    assert len(planned) >= 4 and all(0.6 <= p <= 1.2 for p in planned), planned
    assert len(set(planned)) > 1                             # 2 s x U(0.3, 0.6): jitter

    agent = {"url": ready["callback_url"],
             "tls": ssl.create_default_context(cadata=body["agent_verify_ca"])}
    assert agent_call(agent, "GET", "/v1/commands/", token="bad") == (
        401, {"faultcode": "Client", "faultstring": "Token invalid."})

    url = lab["images"].url + "/image.raw"
    good = hashlib.sha256(lab["image"]).hexdigest()
    status, started = agent_call(agent, "POST", "/v1/commands/?wait=false", {
        "name": "deploy.execute_deploy_step",
        "params": {"step": write_step(url, good), "node": None, "ports": []}})
    assert status == 200 and started["command_status"] == "RUNNING"
    assert started["command_name"] == "execute_deploy_step"
    status, busy = agent_call(agent, "POST", "/v1/commands/", {"name": "standby.sync"})
    assert status == 409 and "busy" in busy["faultstring"]
    done = wait_done(agent)
    assert done["command_status"] == "SUCCEEDED", done
    assert done["command_result"]["deploy_step"] == write_step(url, good)
    assert done["command_result"]["deploy_result"]["disk"] == str(lab["disk"])  # hint
    assert done["command_result"]["deploy_result"]["resumes"] == 1
    assert lab["disk"].read_bytes()[:len(lab["image"])] == lab["image"]
    assert lab["other"].read_bytes() == b"\x11" * 8 * MIB

    status, failed = agent_call(agent, "POST", "/v1/commands/?wait=true", {
        "name": "deploy.execute_deploy_step",
        "params": {"step": write_step(url, "0" * 64), "node": None, "ports": []}})
    assert failed["command_status"] == "FAILED"
    assert failed["command_error"]["type"] == "ImageChecksumError"
    assert lab["disk"].read_bytes()[:MIB] == bytes(MIB)       # never booted half-checked
    status, again = agent_call(agent, "POST", "/v1/commands/?wait=true", {
        "name": "deploy.execute_deploy_step",
        "params": {"step": write_step(url, good), "node": None, "ports": []}})
    assert again["command_status"] == "SUCCEEDED"              # deployable again

    status, parts = agent_call(agent, "POST", "/v1/commands/?wait=true",
                               {"name": "standby.get_partition_uuids", "params": {}})
    assert parts["command_result"] == {"root uuid": None, "efi system partition uuid": None,
                                       "partitions": {}}
    clean_step = {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy",
                  "reboot_requested": False, "abortable": True}
    status, cleaned = agent_call(agent, "POST", "/v1/commands/?wait=true", {
        "name": "clean.execute_clean_step",
        "params": {"step": clean_step, "node": {}, "ports": [], "clean_version": {}}})
    assert cleaned["command_result"] == {"clean_result": None, "clean_step": clean_step}
    data = lab["disk"].read_bytes()
    assert data[:MIB] == bytes(MIB) and data[-MIB:] == bytes(MIB)

    status, off = agent_call(agent, "POST", "/v1/commands/?wait=false",
                             {"name": "standby.power_off", "params": {}})
    assert status == 200
    assert lab["process"].wait(timeout=15) == 0
    state = json.loads(lab["state"].read_text())
    assert state["event"] == "power_off" and state["node_uuid"] == NODE_UUID
    assert len(api.lookups) == 2                              # never looked up again


@pytest.mark.parametrize("lab", [["--heartbeat-timeout", "40"]], indirect=True)
def test_heartbeat_forced_when_a_command_ends(lab):
    """Regular heartbeats are 12-24 s apart here: one before the agent's own schedule
    must be the forced one."""
    api, ready = lab["api"], lab["ready"]
    agent = {"url": ready["callback_url"], "tls": None}
    wait_until(lambda: len(api.heartbeats) >= 2, 30, 0.05,   # 409, then 202
               lambda: "two heartbeats; agent log:\n" + "".join(lab["log"]))
    assert len(api.heartbeats) == 2, "".join(lab["log"])
    # The agent's own schedule after the 202: the next regular heartbeat leaves no
    # sooner than this after the 2nd was answered (so arrives no sooner after it came).
    planned = wait_until(lambda: [
        float(m.group(1)) for line in list(lab["log"])
        if (m := re.search(r"Heartbeat for node \S+ sent; next in ([\d.]+)s", line))],
        30, 0.05, "the 2nd heartbeat's schedule logged")[0]
    agent["tls"] = ssl.create_default_context(cadata=api.heartbeats[-1][1]["agent_verify_ca"])
    step = {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy"}
    status, body = agent_call(agent, "POST", "/v1/commands/?wait=false", {
        "name": "clean.execute_clean_step", "params": {"step": step, "node": {}, "ports": []}})
    assert status == 200
    wait_until(lambda: len(api.heartbeats) > 2, 60, 0.02, "the forced heartbeat")
    # Ahead of that schedule, so the forced one: a comparison of two events, not a
    # duration against a bound that a loaded machine can stretch.
    assert len(api.heartbeats) == 3, "".join(lab["log"])
    assert api.heartbeats[2][0] < api.heartbeats[1][0] + planned, (planned, api.heartbeats)
    assert wait_done(agent)["command_status"] == "SUCCEEDED"
    # A power action is the end: the agent exits without the forced heartbeat (a real
    # ramdisk is off by then; the conductor watches the power state, not the agent).
    status, _ = agent_call(agent, "POST", "/v1/commands/?wait=false",
                           {"name": "standby.power_off", "params": {}})
    assert status == 200
    assert lab["process"].wait(timeout=15) == 0
    assert json.loads(lab["state"].read_text())["event"] == "power_off"
    assert len(api.heartbeats) == 3, "".join(lab["log"])


def test_agent_bad_arguments(tmp_path):
    base = [sys.executable, "-m", "ramdisk_agent.cli", "--cmdline-file", ""]
    for args, message in (([], "no API URL"),
                          (["--api-url", "http://127.0.0.1:1", "--disk", str(tmp_path / "x")],
                           "does not exist"),
                          (["--api-url", "http://127.0.0.1:1", "--mac", "zz"], "not a MAC")):
        done = subprocess.run(base + args, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_agent_lookup_timeout(tmp_path):
    api = FakeApi()
    api.lookups.extend([({}, "")] * 5)     # past the 404 and the token: lookups get "******"
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        done = subprocess.run([sys.executable, "-m", "ramdisk_agent.cli", "--cmdline-file", "",
                               "--api-url", api.url, "--mac", MAC, "--lookup-timeout", "5"],
                              capture_output=True, text=True, timeout=30)
    finally:
        api.shutdown()
        api.server_close()
    assert done.returncode == 1
    assert "no usable agent token" in done.stderr
