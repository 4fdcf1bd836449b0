"""Building blocks of ``metalcast demo`` (also used by the lab tests and the fleet
benchmark): a ``metalcast serve`` child with its boot servers, the virtual lab's
config, enrolment of lab machines, and a watcher printing per-node progress.

The appliance runs as a child process (its own PID, stopped with SIGTERM, and
killed with the demo by ``setpriv --pdeathsig`` where util-linux has it) on
127.0.0.1 with ``auth_strategy = none``, SQLite in the data dir, the API and the
TFTP/HTTP boot servers on free high ports: nothing here needs root.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from cli.client import Client
from virtlab import process as vproc
from virtlab.machine import die_with_parent

READY_RE = re.compile(r"metalcast API listening on (http://\S+)")
TFTP_RE = re.compile(r"metalcast TFTP boot server on tftp://(\S+?)/ ")
HTTP_RE = re.compile(r"metalcast HTTP boot server on (http://\S+?)/ ")
USERNAME, PASSWORD = "admin", "password"        # the lab BMCs' (virtual) credentials
#: What the boot config names as the deploy kernel/ramdisk. The virtual lab's firmware
#: downloads them like iPXE would, then runs metalcast-agent itself: placeholders do.
DEPLOY_KERNEL, DEPLOY_RAMDISK = "agent/vmlinuz", "agent/initramfs"

#: Settings of the demo's appliance: fast polling suits a lab of a few machines.
DEMO_SECTIONS = {
    "api": {"auth_strategy": "none"},
    "pxe": {"enabled": "true", "tftp_port": 0, "http_port": 0,
            "deploy_kernel": DEPLOY_KERNEL, "deploy_ramdisk": DEPLOY_RAMDISK,
            # Every simulated machine boots from 127.0.0.1: here one client address is
            # the whole lab, so it may hold what the boot servers allow in total.
            "tftp_sessions_per_client": 256, "http_connections_per_client": 256},
    # Short spacing suits a lab; the timeouts stay generous: 50 machines on a loaded
    # 2-core host made 4 s / 2 s too tight for the virtual BMCs' answers.
    "ipmi": {"min_command_interval": 0.05, "command_timeout": 10,
             "command_retry_timeout": 20, "power_state_timeout": 15},
    "agent": {"post_deploy_power_off_wait": 20, "heartbeat_timeout": 3,
              "command_wait_interval": 0.2},
    "conductor": {"deploy_callback_timeout": 120, "check_provision_state_interval": 1},
    # Free ports only: no patching listener on the fixed 127.0.0.1:5487.
    "patching": {"listen_port": 0},
    # The fleet-patching chapter: a strategy looks every 0.2 s, and system-stabilize
    # waits 5% of StarlingX's 30 s after an install (a demo host has nothing to settle).
    "orchestration": {"audit_interval": 0.2, "stabilize_factor": 0.05},
}


def merged(base: dict, extra: dict | None) -> dict:
    """``base`` sections with ``extra``'s keys laid over them."""
    out = {name: dict(values) for name, values in base.items()}
    for name, values in (extra or {}).items():
        out.setdefault(name, {}).update(values)
    return out


def _metalcast() -> list[str]:
    script = Path(sys.executable).with_name("metalcast")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from cli.main import main; "
                                  "sys.exit(main())"]


@dataclasses.dataclass
class ApplianceProcess:
    """A running ``metalcast serve``: URLs of its API and boot servers, its output."""

    process: subprocess.Popen
    url: str
    tftp: str            #: host:port of the TFTP boot server
    http: str            #: http://host:port of the HTTP boot server (DATA_DIR/httpboot)
    data_dir: Path
    log: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def httpboot(self) -> Path:
        return self.data_dir / "httpboot"

    def output(self) -> str:
        return "".join(self.log)

    def cpu_seconds(self) -> float:
        """User + system CPU the server process used so far (from /proc)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        vproc.stop(self.pid, self.process)


def write_config(path: Path, sections: dict) -> Path:
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items())
                            for name, opts in sections.items()))
    return path


def start_appliance(data_dir: Path, extra: dict | None = None,
                    timeout: float = 60) -> ApplianceProcess:
    """Start ``metalcast serve`` on 127.0.0.1 (free ports) and wait for its ready line."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    config = write_config(data_dir / "demo.conf", merged(DEMO_SECTIONS, extra))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METALCAST_", "OS_"))}
    cmd = [*die_with_parent(), *_metalcast(), "serve", "--host", "127.0.0.1", "--port", "0",
           "--data-dir", str(data_dir), "--config-file", str(config)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    log: list[str] = []
    ready = threading.Event()

    def pump():
        for line in process.stdout:
            log.append(line)
            del log[:-2000]            # every node event is logged: keep the tail
            if READY_RE.search(line):
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True, name="serve-output").start()
    ready.wait(timeout)
    text = "".join(log)
    found = [regex.search(text) for regex in (READY_RE, TFTP_RE, HTTP_RE)]
    if not all(found):
        vproc.stop(process.pid, process)
        raise RuntimeError(f"metalcast serve did not start (or has no boot servers) "
                           f"within {timeout}s; output:\n{''.join(log)}")
    api_url, tftp, http = (m.group(1) for m in found if m is not None)
    appliance = ApplianceProcess(process, api_url, tftp, http, data_dir, log)
    write_placeholder_agent(appliance.httpboot)
    return appliance


def write_placeholder_agent(httpboot: Path) -> None:
    """Deploy kernel/ramdisk stand-ins: the lab's firmware fetches them, then runs
    ``metalcast-agent`` directly (no kernel boots in the virtual lab)."""
    for name, text in ((DEPLOY_KERNEL, "virtual lab: placeholder deploy kernel\n"),
                       (DEPLOY_RAMDISK, "virtual lab: placeholder deploy ramdisk\n")):
        path = httpboot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text * 64)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def image_fields(url: str, digest: str) -> dict:
    return {"image_source": url, "image_os_hash_algo": "sha256",
            "image_os_hash_value": digest}


def lab_config(root: Path, appliance: ApplianceProcess, machines: list[dict],
               **extra) -> dict:
    """lab.json for ``machines`` ({name, mac, disk, disk_size_mib}) PXE-booting from
    ``appliance``; BMCs in one child process of the lab."""
    return {"status_dir": str(root / "status"),
            "bmc": {"state_dir": str(root / "bmc"), "username": USERNAME,
                    "password": PASSWORD},
            "pxe": {"tftp": appliance.tftp, "loader": "undionly.kpxe", "script": "boot.ipxe"},
            "machines": machines, "tick": 0.05, **extra}


def lab_mac(index: int) -> str:
    return f"52:54:00:6d:{(index >> 8) & 0xff:02x}:{index & 0xff:02x}"


def enrol(client: Client, name: str, bmc_port: int, mac: str, instance_info: dict,
          **fields) -> str:
    """One lab machine as a node (ipmi driver, ipxe boot, direct deploy) + its port."""
    node = client.create_node({
        "name": name, "driver": "ipmi", "boot_interface": "ipxe",
        "deploy_interface": "direct", "instance_info": instance_info,
        "driver_info": {"ipmi_address": "127.0.0.1", "ipmi_port": bmc_port,
                        "ipmi_username": USERNAME, "ipmi_password": PASSWORD},
        **fields})
    client.create_port({"node_uuid": node["uuid"], "address": mac})
    return node["uuid"]


def wait_all(client: Client, uuids: list[str], states: tuple[str, ...],
             timeout: float) -> dict[str, dict]:
    """Poll until every node is in one of ``states`` with its lock released."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = {n["uuid"]: n for n in client.list_nodes(detail=True)}
        pending = [u for u in uuids if nodes[u]["provision_state"] not in states
                   or nodes[u]["reservation"]]
        if not pending:
            return {u: nodes[u] for u in uuids}
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} node(s) not {'/'.join(states)} after "
                               f"{timeout}s: " + ", ".join(
                                   f"{nodes[u]['name']}={nodes[u]['provision_state']}"
                                   for u in pending))
        time.sleep(0.25)
