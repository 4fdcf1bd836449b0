"""A real ``metalcast serve`` inside a NetLab, as the PXE boot test and benchmark need it.

The appliance runs in the namespace (``ip netns exec``) and listens on the bridge
address: API on :6385 (HTTP basic auth, since it is not loopback), TFTP on :69,
boot HTTP on :8080, and its managed dnsmasq serves DHCP on br0. The deploy kernel
and the lookup initramfs are copied into the HTTP boot root. The test process is
outside the namespace, so API calls go through the real ``curl`` run inside it
(credentials on curl's stdin, never on a command line).

``--debug`` makes the boot HTTP server log each request; every output line is
stamped as it arrives (virtlab.netlab.TimedLog), so the server log doubles as a
timeline (DHCP lines come from dnsmasq, which metalcast relays; they arrive in
batches, so the console is the better clock for them).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bcrypt

from virtlab.netlab import NetLab, TimedLog

API_PORT, HTTP_PORT, TFTP_PORT = 6385, 8080, 69
START_TIMEOUT = 60.0
KERNEL_NAME, RAMDISK_NAME = "lookup-vmlinuz", "lookup-initrd.img"
#: Kernel parameters for the lab's guest: serial console, and a panic ends QEMU
#: (-no-reboot) instead of hanging it. ipa-api-url and BOOTIF come from metalcast.
KERNEL_PARAMS = "console=ttyS0 panic=-1 quiet"
HEADERS = {"X-OpenStack-Ironic-API-Version": "1.62", "Content-Type": "application/json"}


class ApiError(AssertionError):
    """The API answered with a status the caller did not expect."""


class ApplianceLab:
    """``with ApplianceLab(lab, work, vmlinuz, initrd) as appliance:``; stopped by PID."""

    def __init__(self, lab: NetLab, work: Path, vmlinuz: Path, initrd: Path):
        self.lab = lab
        self.data = Path(work) / "metalcast"
        self.vmlinuz, self.initrd = Path(vmlinuz), Path(initrd)
        self.url = f"http://{lab.address}:{API_PORT}"
        self.username, self.password = "operator", secrets.token_urlsafe(12)
        self.process: subprocess.Popen | None = None
        self.log: TimedLog | None = None

    def __enter__(self) -> ApplianceLab:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def config(self) -> dict[str, dict[str, object]]:
        """The INI sections of the lab's appliance."""
        address = self.lab.address
        return {
            "api": {"auth_strategy": "http_basic", "htpasswd_file": self.data / "htpasswd"},
            "pxe": {"tftp_host": address, "tftp_port": TFTP_PORT, "http_host": address,
                    "http_port": HTTP_PORT, "http_root": self.data / "httpboot",
                    "tftp_root": self.data / "tftpboot", "deploy_kernel": KERNEL_NAME,
                    "deploy_ramdisk": RAMDISK_NAME, "kernel_append_params": KERNEL_PARAMS},
            "dhcp": {"mode": "managed", "interface": self.lab.bridge,
                     "range": "10.77.0.100,10.77.0.150,255.255.255.0,10m", "log_dhcp": "true",
                     # boot.ipxe over TFTP, the first small file (issue 4's boot path);
                     # everything large then comes over HTTP.
                     "ipxe_url": f"tftp://{address}/boot.ipxe"},
        }

    def _prepare(self) -> Path:
        self.data.mkdir(parents=True, exist_ok=True)
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (self.data / "htpasswd").write_text(f"{self.username}:{hashed}\n")
        http_root = self.data / "httpboot"
        http_root.mkdir(exist_ok=True)
        shutil.copyfile(self.vmlinuz, http_root / KERNEL_NAME)
        shutil.copyfile(self.initrd, http_root / RAMDISK_NAME)
        lines = []
        for section, options in self.config().items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {value}" for key, value in options.items())
        path = self.data / "metalcast.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        """Start ``metalcast serve`` in the namespace and wait for its ready line."""
        config = self._prepare()
        metalcast = Path(sys.executable).with_name("metalcast")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("METALCAST_", "OS_"))}
        self.process = self.lab.start(
            [str(metalcast), "--debug", "serve", "--host", self.lab.address,
             "--port", str(API_PORT), "--data-dir", str(self.data), "--config-file", str(config)],
            env=env)
        self.log = TimedLog(self.process.stdout)
        if not self.log.wait_for(r"metalcast API listening on", START_TIMEOUT):
            self.stop()
            raise RuntimeError("metalcast serve did not become ready in the lab:\n"
                               + self.log.text())

    def stop(self) -> None:
        if self.process is not None:
            self.lab.stop(self.process)
            self.process = None

    def api(self, method: str, path: str, body=None, auth: bool = True,
            ok: tuple[int, ...] = (200,), headers: dict | None = None):
        """One API call with curl inside the namespace; (status, JSON or None)."""
        config = [f'request = "{method}"', f'url = "{self.url}{path}"', "silent",
                  'write-out = "\\n%{http_code}"', "max-time = 30"]
        config += [f'header = "{k}: {v}"' for k, v in (headers or HEADERS).items()]
        if auth:
            config.append(f'user = "{self.username}:{self.password}"')
        if body is not None:
            config.append(f"data = {json.dumps(json.dumps(body))}")
        result = self.lab.run(["curl", "--config", "-"], input="\n".join(config) + "\n")
        text, _, status = result.stdout.rpartition("\n")
        if result.returncode != 0 or not status.isdigit():
            raise ApiError(f"curl {method} {path} failed ({result.returncode}): "
                           f"{result.stderr.strip()}")
        if int(status) not in ok:
            raise ApiError(f"{method} {path}: HTTP {status}, expected {ok}: {text}")
        return int(status), (json.loads(text) if text.strip() else None)

    def node(self, uuid: str) -> dict:
        return self.api("GET", f"/v1/nodes/{uuid}")[1]

    def enrol(self, mac: str, name: str) -> dict:
        """A fake-hardware node that network-boots with iPXE into the ``direct`` agent
        ramdisk, and a port with the VM's MAC."""
        _, node = self.api("POST", "/v1/nodes", {
            "name": name, "driver": "fake-hardware", "boot_interface": "ipxe",
            "deploy_interface": "direct", "automated_clean": True}, ok=(201,))
        self.api("POST", "/v1/ports", {"node_uuid": node["uuid"], "address": mac,
                                       "pxe_enabled": True}, ok=(201,))
        return node

    def provision(self, uuid: str, target: str, state: str, timeout: float = 90) -> dict:
        """PUT a provision target and wait until the node is in ``state``, unlocked."""
        self.api("PUT", f"/v1/nodes/{uuid}/states/provision", {"target": target},
                 ok=(202,))
        deadline = time.monotonic() + timeout
        while True:
            node = self.node(uuid)
            if node["provision_state"] == state and node["reservation"] is None:
                return node
            if time.monotonic() > deadline or node["provision_state"].endswith("failed"):
                raise ApiError(f"node {uuid} did not reach {state!r} after {target!r}: "
                               f"{node['provision_state']} ({node.get('last_error')})")
            time.sleep(0.2)

    def boot_into_cleaning(self, mac: str, name: str) -> dict:
        """Enrol, manage and provide a node: automated cleaning renders its iPXE
        script and leaves it in "clean wait", where the ramdisk's lookup is answered."""
        node = self.enrol(mac, name)
        self.provision(node["uuid"], "manage", "manageable")
        return self.provision(node["uuid"], "provide", "clean wait")
