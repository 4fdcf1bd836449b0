"""A minimal ironic-python-agent protocol peer, built from the spec for the tests.

It does what the protocol section of specs/ironic-api-and-agent-protocol.md says
an agent does: ``GET /`` for the version, lookup by MAC (retrying 404/409), then
heartbeats at heartbeat_timeout x U(0.3, 0.6) and right after an async command
ends; an HTTPS command API (self-signed certificate, sent as ``agent_verify_ca``)
checking ``agent_token`` on every request. Its "disk" is a file. One instance is
one boot of the ramdisk: fake power boots nothing, so a test starts one per boot.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import random
import ssl
import tempfile
import threading
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOKUP_VERSION = {"X-OpenStack-Ironic-API-Version": "1.62"}
HEARTBEAT_VERSION = {"X-OpenStack-Ironic-API-Version": "1.68"}
CLEAN_STEPS = [{"step": "erase_devices_metadata", "priority": 99, "interface": "deploy",
                "reboot_requested": False, "abortable": True},
               {"step": "erase_devices", "priority": 10, "interface": "deploy",
                "reboot_requested": False, "abortable": True}]
DEPLOY_STEPS = [{"step": "write_image", "priority": 80, "interface": "deploy",
                 "reboot_requested": False, "argsinfo": None}]


def self_signed(ip: str = "127.0.0.1") -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) with the IP in subjectAltName, as IPA's auto-TLS."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class Peer:
    """One agent boot: lookup, heartbeats, command API, a file as its disk."""

    def __init__(self, api_url: str, mac: str, disk: Path, stall_write: bool = False,
                 advertise_other_cert: bool = False):
        self.api_url, self.mac, self.disk = api_url, mac, Path(disk)
        self.stall_write = stall_write
        self.commands: list[dict] = []
        self.token: str | None = None
        self.node_uuid: str | None = None
        self.heartbeat_timeout = 300
        self.errors: list[str] = []
        self.beats: list[int] = []
        self.lookups: list = []  # status of each lookup attempt, for failure messages
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        cert, key = self_signed()
        # advertise_other_cert: the heartbeat carries a certificate that is not the one
        # the command API serves (a man in the middle, from the conductor's view).
        self.cert_pem = (self_signed()[0] if advertise_other_cert else cert).decode()
        self._tmp = tempfile.TemporaryDirectory()
        (Path(self._tmp.name) / "c.pem").write_bytes(cert)
        (Path(self._tmp.name) / "k.pem").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Path(self._tmp.name) / "c.pem", Path(self._tmp.name) / "k.pem")
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self._threads = [threading.Thread(target=self.httpd.serve_forever, daemon=True),
                         threading.Thread(target=self._run, daemon=True)]
        for thread in self._threads:
            thread.start()

    def describe(self) -> str:
        """What this agent saw, for assertion messages."""
        return (f"agent {self.url}: lookups {self.lookups[-8:]}, heartbeats "
                f"{self.beats[-8:]}, commands {[c['command_name'] for c in self.commands]}, "
                f"errors {self.errors[-3:]}")

    def stop(self) -> None:
        """The machine powers off: heartbeats and the command API stop."""
        self._stop.set()
        self._wake.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self._threads:
            thread.join(10)
        self._tmp.cleanup()

    # -- ramdisk -> API -----------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self._lookup():
                self._stop.wait(0.2)
            while not self._stop.is_set():
                self._heartbeat()
                self._wake.wait(self.heartbeat_timeout * random.uniform(0.3, 0.6))
                self._wake.clear()
        except Exception as exc:  # noqa: BLE001 - shown by the test on failure
            self.errors.append(f"agent loop died: {type(exc).__name__}: {exc}")

    def _lookup(self) -> bool:
        try:
            response = requests.get(f"{self.api_url}/v1/lookup", params={
                "addresses": self.mac}, headers=LOOKUP_VERSION, timeout=10)
        except requests.RequestException as exc:
            self.lookups.append(type(exc).__name__)
            return False
        self.lookups.append(response.status_code)
        if response.status_code != 200:
            return False  # 404 (not in a lookup state yet) or 409 (locked): retry
        body = response.json()
        self.node_uuid = body["node"]["uuid"]
        self.token = body["config"]["agent_token"]
        self.heartbeat_timeout = body["config"]["heartbeat_timeout"]
        return True

    def _heartbeat(self) -> None:
        body = {"callback_url": self.url, "agent_token": self.token,
                "agent_version": "13.0.0", "agent_verify_ca": self.cert_pem}
        try:
            response = requests.post(f"{self.api_url}/v1/heartbeat/{self.node_uuid}",
                                     json=body, headers=HEARTBEAT_VERSION, timeout=10)
        except requests.RequestException as exc:
            self.errors.append(str(exc))
            return
        self.beats.append(response.status_code)
        if response.status_code not in (202, 409):
            self.errors.append(f"{response.status_code} {response.text}")

    # -- API -> ramdisk -----------------------------------------------------
    def run_command(self, name: str, params: dict, wait: bool) -> dict:
        extension, _, command = name.partition(".")
        entry = {"id": str(uuid.uuid4()), "command_name": command, "command_params": params,
                 "command_status": "RUNNING", "command_error": None, "command_result": None}
        with self._lock:
            if self.commands and self.commands[-1]["command_status"] == "RUNNING":
                raise BusyError()
            self.commands.append(entry)
        work = COMMANDS.get(name)
        if work is None:
            self._finish(entry, error=f"Unknown command: {name}")
            return entry
        thread = threading.Thread(target=self._execute, args=(entry, work, params), daemon=True)
        thread.start()
        if wait:
            thread.join()
        return entry

    def _execute(self, entry: dict, work, params: dict) -> None:
        try:
            self._finish(entry, result=work(self, params))
        except Exception as exc:  # noqa: BLE001 - reported as the command's error
            self._finish(entry, error=str(exc))
        self._wake.set()  # IPA heartbeats right after an async command ends

    def _finish(self, entry: dict, result=None, error=None) -> None:
        with self._lock:
            entry.update(command_status="FAILED" if error else "SUCCEEDED",
                         command_error=error, command_result=result)


class BusyError(Exception):
    pass


def _write_image(peer: Peer, params: dict) -> dict:
    step = params["step"]
    info = step["args"]["image_info"]
    if peer.stall_write:
        peer._stop.wait()
        raise RuntimeError("agent stopped")
    digest = hashlib.new(info["os_hash_algo"])
    with urllib.request.urlopen(info["urls"][0], timeout=30) as src, \
            open(peer.disk, "r+b") as disk:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            disk.write(chunk)
    if digest.hexdigest() != info["os_hash_value"]:
        with open(peer.disk, "r+b") as disk:
            disk.write(b"\0" * (1 << 20))
        raise RuntimeError(f"Image checksum mismatch: expected {info['os_hash_value']}, "
                           f"got {digest.hexdigest()}")
    return {"deploy_result": None, "deploy_step": step}


def _erase_metadata(peer: Peer, params: dict) -> dict:
    with open(peer.disk, "r+b") as disk:
        disk.write(b"\0" * (1 << 20))
    return {"clean_result": None, "clean_step": params["step"]}


COMMANDS = {
    "deploy.get_deploy_steps": lambda p, _: {
        "deploy_steps": {"GenericHardwareManager": DEPLOY_STEPS},
        "hardware_manager_version": {"generic_hardware_manager": "1.2"}},
    "deploy.execute_deploy_step": _write_image,
    "standby.get_partition_uuids": lambda p, _: {"root uuid": "0x1234abcd",
                                                  "partitions": {}},
    "standby.power_off": lambda p, _: None,
    "image.install_bootloader": lambda p, params: {"installed_for": params},
    "clean.get_clean_steps": lambda p, _: {
        "clean_steps": {"GenericHardwareManager": CLEAN_STEPS},
        "hardware_manager_version": {"generic_hardware_manager": "1.2"}},
    "clean.execute_clean_step": _erase_metadata,
}


def _handler(peer: Peer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _reply(self, status: int, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            query = parse_qs(urlparse(self.path).query)
            if query.get("agent_token") != [peer.token]:
                self._reply(401, {"faultcode": "Client", "faultstring": "Token invalid."})
                return False
            return True

        def do_GET(self):
            if urlparse(self.path).path.rstrip("/") != "/v1/commands":
                return self._reply(404, {"faultstring": "Not found"})
            if self._authorised():
                with peer._lock:
                    self._reply(200, {"commands": [dict(c) for c in peer.commands]})

        def do_POST(self):
            if urlparse(self.path).path.rstrip("/") != "/v1/commands":
                return self._reply(404, {"faultstring": "Not found"})
            if not self._authorised():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            wait = parse_qs(urlparse(self.path).query).get("wait") == ["true"]
            try:
                entry = peer.run_command(body["name"], body.get("params") or {}, wait)
            except BusyError:
                return self._reply(409, {"faultstring": "agent is busy"})
            with peer._lock:
                self._reply(200, dict(entry))
    return Handler
