"""The demo's A/B chapter (issue 16 item 8), also the lab test's fleet (item 6).

Three lab machines are INSTALLED HOSTS (virtlab.machine: an ``update_conf`` in their
spec): an A/B disk (virtlab.images.build_ab_image, tiny slots) with v1's payload byte
for byte in USR-A, marked proven. Powered on over their real IPMI BMCs, the firmware
picks USR-A from the GPT bits and each machine runs the real ``metalcast-agent update
mark-good`` then ``update daemon`` against ``metalcast serve``'s Omaha endpoint with
REBOOT_STRATEGY=lease. The channel moves to v2 (uploaded over the REST API); the
engines download and install into USR-B, and the appliance's reboot lease (max 1 in
the group) lets them reboot ONE AT A TIME: each holder reboots (its BMC's power
reset), the firmware picks USR-B, the new version is marked good and the lease is
released, then the next host may reboot. Live lines show each host's version, slot
and status; ``rebooting_at_once`` is the most hosts ever seen rebooting at one sample.
Needs root (the engine writes a slot of a disk image through a loop device).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from cli.client import Client, ClientError
from virtlab import disk as lab_disk
from virtlab import images
from virtlab.demo import lab as demo_lab
from virtlab.host_tools import BROKEN
from virtlab.lab import LabProcess, start_lab

BASE = "/updates/v1"
SLOT_MIB = 8
SLOT_A, SLOT_B = 2, 3
CHANNEL = "demo-ab"
TIMEOUT = 120
#: instance status (conductor/updates) -> what the live line says
SHOWN = {"new": "checking", "granted": "downloading", "downloading": "downloading",
         "downloaded": "installed", "installed": "installed", "complete": "complete",
         "error": "error"}


def missing_tools() -> list[str]:
    """What the chapter needs and lacks, said the way the demo prints it."""
    missing = [f"{tool} (Debian package {package})" for tool, package in
               (("losetup", "mount"), *images.TOOLS.items())
               if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}"))]
    if os.geteuid() != 0:
        missing.append("root (the update engine writes a slot through a loop device)")
    return missing


def build_payloads(work: Path, versions: tuple[str, ...], broken: tuple[str, ...] = ()
                   ) -> dict[str, Path]:
    """One slot payload per version (an ext4 of SLOT_MIB); a ``broken`` one fails health."""
    work.mkdir(parents=True, exist_ok=True)
    return {v: images.build_rootfs(work / f"usr-v{v}.img", v, SLOT_MIB, files={
        "etc/os-release": (images.os_release(v) + BROKEN + "\n").encode()}
        if v in broken else None) for v in versions}


def build_disk(path: Path, payload: Path, version: str) -> Path:
    """An A/B disk with ``payload`` (``version``) in USR-A, proven; USR-B empty."""
    images.build_ab_image(path, version, slot_mib=SLOT_MIB)
    parts = {number: (offset, size) for number, offset, size in lab_disk.partitions(str(path))}
    offset, size = parts[SLOT_A]
    data = payload.read_bytes()
    if len(data) != size:
        raise RuntimeError(f"slot A is {size} bytes, the payload {len(data)}")
    with open(path, "r+b") as out:
        out.seek(offset)
        out.write(data)
    return path


def upload(client: Client, path: Path, version: str, channel: str = CHANNEL) -> dict:
    reply = client.session.post(f"{client.url}{BASE}/images", data=path.read_bytes(),
                                params={"version": version, "channel": channel},
                                headers={"Content-Type": "application/octet-stream"},
                                timeout=120)
    if reply.status_code != 201:
        raise RuntimeError(f"upload of v{version} refused: {reply.status_code} {reply.text}")
    return reply.json()


def host_status(instance: dict | None, machine: dict, holds_lease: bool = False) -> str:
    """The live line's status: the machine's phase first, then its reboot lease (held
    from before its reboot until it is healthy on the new version), then the
    appliance's record."""
    if machine.get("phase") != "booted-disk":
        return "rebooting" if machine.get("boots", 0) > 1 else "booting"
    if holds_lease:
        return "rebooting"
    if instance is None or instance.get("status") in (None, "", "noupdate"):
        return "checking"
    shown = SHOWN.get(instance["status"], instance["status"])
    return f"error {instance.get('error_code')}" if shown == "error" else shown


class AbFleet:
    """Installed lab hosts on A/B disks, their update.conf, and a live watcher."""

    def __init__(self, appliance: demo_lab.ApplianceProcess, client: Client, work: Path,
                 count: int = 3, strategy: str = "lease", lease_group: str = CHANNEL,
                 out=None):
        self.appliance, self.client, self.work = appliance, client, work
        self.names = [f"host-{i + 1}" for i in range(count)]
        self.strategy, self.lease_group = strategy, lease_group
        self.out = out or sys.stdout
        self.lab: LabProcess | None = None
        self.uuids: dict[str, str] = {}
        self.rebooting_at_once = 0          #: most hosts rebooting at one sample
        self.holders_at_once = 0            #: most lease holders of the group at one sample
        self.samples = 0
        self._seen: dict[str, tuple] = {}
        self.started = time.monotonic()

    # -- set up ------------------------------------------------------------------
    def start(self, v1: Path, version: str = "1", index_base: int = 200) -> LabProcess:
        """Disks at ``version``, update.conf per host, the lab; enrolled, tokens issued."""
        self.work.mkdir(parents=True, exist_ok=True)
        key = self.client.session.get(f"{self.client.url}{BASE}/key", timeout=30)
        if key.status_code != 200:
            raise RuntimeError(f"the appliance's update key: {key.status_code} {key.text}")
        (self.work / "update-key.pem").write_bytes(key.content)
        golden = build_disk(self.work / "golden.img", v1, version)
        machines = []
        for i, name in enumerate(self.names):
            disk_path = self.work / f"{name}.img"
            shutil.copyfile(golden, disk_path)
            machines.append({"name": name, "mac": demo_lab.lab_mac(index_base + i),
                             "disk": str(disk_path),
                             "update_conf": str(self.work / f"{name}.conf")})
        self.lab = start_lab(demo_lab.lab_config(self.work, self.appliance, machines),
                             self.work / "lab.json")
        for name, info in self.lab.machines.items():
            self.uuids[name] = demo_lab.enrol(
                self.client, name, info["bmc_port"], info["mac"],
                demo_lab.image_fields(f"{self.appliance.http}/ab/{v1.name}", "0" * 64))
        self._adopt()
        for name, uuid in self.uuids.items():
            issued = self.client.issue_host_agent_token(uuid)
            token = self.work / f"{name}.token.json"
            token.write_text(json.dumps({"token": issued["token"], "node_uuid": uuid}))
            os.chmod(token, 0o600)
            (self.work / f"{name}.conf").write_text(self.update_conf(name))
        return self.lab

    def _adopt(self) -> None:
        """manage (the BMC answers) then adopt: installed hosts become active nodes
        without a deploy (the appliance issues host-agent tokens to active nodes)."""
        uuids = list(self.uuids.values())
        for target, expected in (("manage", "manageable"), ("adopt", "active")):
            for uuid in uuids:
                self.client.set_provision_state(uuid, target)
            nodes = demo_lab.wait_all(self.client, uuids, (expected, "adopt failed"), 60)
            failed = {n["name"]: n["last_error"] for n in nodes.values()
                      if n["provision_state"] != expected}
            if failed:
                raise RuntimeError(f"{target} of the A/B hosts failed: {failed}")

    def update_conf(self, name: str) -> str:
        host = self.work / "status" / name / "host"
        settings = {
            "SERVER": f"{self.appliance.url}/v1/update/", "GROUP": CHANNEL,
            "REBOOT_STRATEGY": self.strategy, "LEASE_GROUP": self.lease_group,
            "UPDATE_KEY": str(self.work / "update-key.pem"),
            "TOKEN_FILE": str(self.work / f"{name}.token.json"),
            "NODE_UUID": self.uuids[name],          # log lines name the node
            "HEALTH_COMMANDS": f"{sys.executable} -m virtlab.host_tools health "
                               f"{host / 'os-release'}",
            "HEALTH_WINDOW": "4", "WALL_DELAY": "0",
            "FIRST_CHECK_DELAY": "0.2", "CHECK_INTERVAL": "0.5", "CHECK_FUZZ": "0",
            "BACKOFF_CAP": "2",
        }
        return "".join(f'{key}="{value}"\n' for key, value in settings.items())

    def power_on(self) -> None:
        """Each host's power button, pressed over IPMI by the appliance."""
        for uuid in self.uuids.values():
            self.client.set_power_state(uuid, "power on")

    # -- what the appliance and the lab say ---------------------------------------
    def machine_id(self, name: str) -> str | None:
        path = self.work / "status" / name / "host" / "machine-id"
        return path.read_text().strip() if path.exists() else None

    def instance(self, name: str) -> dict | None:
        machine = self.machine_id(name)
        if machine is None:
            return None
        try:
            return self.client.request("GET", f"{BASE}/instances/{machine}")
        except ClientError as exc:
            if exc.status == 404:
                return None
            raise

    def row(self, name: str, holders: set[str] | None = None) -> dict:
        assert self.lab is not None
        machine = self.lab.status(name)
        booted = machine.get("booted_os") or {}
        instance = self.instance(name)
        return {"host": name, "version": booted.get("version_id") or "-",
                "slot": booted.get("partition") or "-",
                "status": host_status(instance, machine,
                                      self.uuids.get(name) in (holders or set())),
                "instance": instance or {}}

    def wait(self, done, what: str, timeout: float = TIMEOUT) -> dict[str, dict]:
        """Print a line per host whenever its (version, slot, status) changes, until
        ``done(rows)``; counts the hosts rebooting at each sample."""
        started = time.monotonic()
        width = max(len(n) for n in self.names)
        while True:
            holders = self.holders()
            rows = {name: self.row(name, holders) for name in self.names}
            rebooting = sum(r["status"] == "rebooting" for r in rows.values())
            self.rebooting_at_once = max(self.rebooting_at_once, rebooting)
            self.holders_at_once = max(self.holders_at_once, len(holders))
            self.samples += 1
            for name, row in rows.items():
                key = (row["version"], row["slot"], row["status"])
                if self._seen.get(name) != key:
                    self._seen[name] = key
                    print(f"  [{time.monotonic() - self.started:5.1f}s] {name:<{width}}  "
                          f"v{row['version']} slot {row['slot']}  {row['status']}",
                          file=self.out, flush=True)
            if done(rows):
                return rows
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{what}: not done after {timeout}s: " + ", ".join(
                    f"{n}={r['status']} v{r['version']}" for n, r in rows.items()))
            time.sleep(0.1)

    def holders(self) -> set[str]:
        """The hosts (node UUIDs) holding a reboot lease of the group now."""
        groups = self.client.request("GET", f"{BASE}/leases")["groups"]
        return {held["holder"] for g in groups if g["group"] == self.lease_group
                for held in g["holders"] or []}

    def reset_counters(self) -> None:
        self.rebooting_at_once = self.holders_at_once = self.samples = 0

    def rows_at(self, version: str, status: str = "complete"):
        def done(rows: dict[str, dict]) -> bool:
            return all(r["version"] == version and r["status"] == status
                       and r["instance"].get("version") == version for r in rows.values())
        return done


def _say(text: str) -> None:
    print(text, flush=True)


def chapter(appliance: demo_lab.ApplianceProcess, client: Client, work: Path,
            on_lab) -> list[dict]:
    """The demo chapter; the summary rows (host, slot, version, status)."""
    _say("\n== A/B image update: three installed hosts, a channel moves to v2, "
         "reboots one at a time (lease max 1)")
    missing = missing_tools()
    if missing:
        _say("   skipped: missing " + ", ".join(missing))
        return []
    started = time.monotonic()
    payloads = build_payloads(work / "payloads", ("1", "2"))
    upload(client, payloads["1"], "1")
    client.request("PUT", f"{BASE}/leases/{CHANNEL}", body={"max": 1})
    fleet = AbFleet(appliance, client, work)
    on_lab(fleet.start(payloads["1"]))
    fleet.power_on()
    _say(f"   3 hosts on A/B disks ({SLOT_MIB} MiB slots), channel {CHANNEL} at v1, "
         f"lease group {CHANNEL} max 1; ready in {time.monotonic() - started:.1f}s")
    fleet.wait(lambda rows: all(r["status"] == "checking" and r["instance"]
                                or r["status"] == "complete" for r in rows.values()),
               "hosts checking in at v1", 60)
    fleet.reset_counters()
    upload(client, payloads["2"], "2")
    _say("   uploaded v2 to the channel (REST): the hosts pick it up")
    moved = time.monotonic()
    rows = fleet.wait(fleet.rows_at("2"), "the rollout to v2")
    _say(f"   all hosts on v2 in {time.monotonic() - moved:.1f}s; at most "
         f"{fleet.rebooting_at_once} host rebooting and {fleet.holders_at_once} lease "
         f"holder at any of {fleet.samples} samples (chapter: "
         f"{time.monotonic() - started:.1f}s)")
    return [{"host": r["host"], "slot": f"{r['slot']} (USR-{'A' if r['slot'] == SLOT_A else 'B'})",
             "version": r["version"], "status": r["status"]} for r in rows.values()]
