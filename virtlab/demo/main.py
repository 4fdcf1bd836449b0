"""``metalcast demo``: the appliance driving a virtual lab of real-protocol machines.

1. starts ``metalcast serve`` (SQLite in a temporary data dir, no auth on
   127.0.0.1, API + TFTP/HTTP boot servers on free ports) as a child process;
2. builds two small disk images (GPT + ext4 root holding /etc/os-release with
   VERSION_ID 1 and 2, virtlab.images) into the HTTP boot root, and the signed
   delta payload v1 -> v2 (conductor.updates.delta_build, the conductor's key);
3. starts a virtual lab (``python -m virtlab.lab``): N machines, each with a
   disk file and a virtual IPMI BMC. A machine's firmware PXE-boots over the
   appliance's real TFTP/HTTP and iPXE scripts, downloads the deploy kernel and
   ramdisk (placeholders here), and then runs the real ``metalcast-agent``
   directly against the machine's disk file; or it boots the OS on its disk;
4. enrols the machines over the REST API (ipmi driver, ipxe boot, direct deploy,
   a port with the MAC), then manage -> provide (cleaning by the agent) ->
   deploy v1 with live per-node progress, shows every machine booted into v1;
5. re-images one machine with ``rebuild`` and the delta payload (the agent patches
   the changed blocks in place) and shows it booted into v2;
6. runs the machines as hosts (``metalcast-agent host`` each) and patches them with
   one ``sw-manager patch-strategy create`` + ``apply``, stage by stage (fleet_patch.py;
   skipped, saying why, when rpm, dnf or createrepo_c are missing);
7. the A/B chapter (ab_update.py): three more lab machines installed as hosts on A/B
   disks at v1; the channel moves to v2 and they update one at a time under a reboot
   lease of 1, with live per-host version/slot/status lines (skipped, saying why,
   without root or losetup);
8. prints the summary tables, stops every process it started by PID, exits 0.

Nothing needs root: no loop devices, no raw sockets, only high ports on 127.0.0.1.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from cli import output
from cli.client import Client, ClientError
from conductor.cmd import command
from conductor.netboot import render
from conductor.updates import delta_build, keys
from virtlab import images
from virtlab import process as vproc
from virtlab.demo import ab_update, fleet_patch
from virtlab.demo import lab as demo_lab
from virtlab.demo.watch import Watcher
from virtlab.lab import LabProcess, start_lab, stop_lab

IMAGE_MIB = 64
DISK_MIB = 80
PHASE_TIMEOUT = 300


def _say(text: str) -> None:
    print(text, flush=True)


def _build_images(appliance: demo_lab.ApplianceProcess) -> dict:
    """v1, v2 and the signed delta v1 -> v2 in the HTTP boot root; their URLs."""
    started = time.monotonic()
    root = appliance.httpboot / "images"
    built = images.build_versions(root, ("1", "2"), IMAGE_MIB)
    key = keys.load_or_create(keys.default_path(appliance.data_dir))
    delta = delta_build.build(built["1"], built["2"], root / "lab-v2.delta", key, version="2")
    info = {v: {"path": p, "url": f"{appliance.http}/images/{p.name}",
                "sha256": demo_lab.sha256_of(p)} for v, p in built.items()}
    info["delta"] = {"url": f"{appliance.http}/images/{delta.path.name}",
                     "bytes": delta.payload_size}
    _say(f"built images v1 and v2 ({IMAGE_MIB} MiB each: GPT, ESP, ext4 root with "
         f"/etc/os-release) and a signed delta v1->v2 of {delta.payload_size} bytes "
         f"({delta.operations} operations) in {time.monotonic() - started:.1f}s")
    return info


def _start_lab(root: Path, appliance, count: int) -> LabProcess:
    machines = [{"name": f"machine-{i + 1}", "mac": demo_lab.lab_mac(i + 1),
                 "disk": str(root / f"machine-{i + 1}.img"), "disk_size_mib": DISK_MIB}
                for i in range(count)]
    root.mkdir(parents=True, exist_ok=True)
    lab = start_lab(demo_lab.lab_config(root, appliance, machines), root / "lab.json")
    _say(f"virtual lab: {count} machines, BMCs on IPMI ports "
         + ", ".join(str(m["bmc_port"]) for m in lab.machines.values())
         + "; the firmware PXE-boots from the appliance and runs metalcast-agent directly")
    return lab


def _phase(client: Client, watcher: Watcher, uuids: list[str], target: str,
           expected: str) -> dict[str, float]:
    """Move every node to ``expected``; seconds each took from the request."""
    _say(f"\n== {target} -> {expected}")
    started = time.monotonic()
    watcher.expect(expected)
    with watcher:
        for uuid in uuids:
            client.set_provision_state(uuid, target)
        nodes = demo_lab.wait_all(client, uuids, (expected, "clean failed", "deploy failed",
                                                  "error"), PHASE_TIMEOUT)
    failed = {n["name"]: n["last_error"] for n in nodes.values()
              if n["provision_state"] != expected}
    if failed:
        raise RuntimeError(f"{target} failed: {failed}")
    seconds = time.monotonic() - started
    _say(f"   {len(uuids)} node(s) {expected} in {seconds:.1f}s")
    return {u: watcher.reached.get(u, time.monotonic()) - started for u in uuids}


def _booted(lab: LabProcess, name: str, version: str) -> dict:
    return lab.wait(name, lambda s: s["phase"] == "booted-disk" and
                    (s["booted_os"] or {}).get("version_id") == version,
                    f"booted into version {version}", 120)


def _show_booted(lab: LabProcess, names: list[str], version: str) -> None:
    for name in names:
        status = _booted(lab, name, version)
        os_info = status["booted_os"]
        _say(f"   {name}: booted from disk partition {os_info['partition']} "
             f"({os_info['fs_label']}): {os_info['pretty_name']}, "
             f"VERSION_ID={os_info['version_id']}")


def _delta_update(client: Client, watcher: Watcher, lab: LabProcess, uuid: str,
                  name: str, built: dict) -> float:
    v2 = built["2"]
    fields = dict(demo_lab.image_fields(v2["url"], v2["sha256"]),
                  image_delta_url=built["delta"]["url"], image_delta_version="2",
                  image_delta_base_checksum=f"sha256:{built['1']['sha256']}")
    client.update_node(uuid, [{"op": "add", "path": f"/instance_info/{k}", "value": v}
                              for k, v in fields.items()])
    watcher.names = {uuid: name}
    seconds = _phase(client, watcher, [uuid], "rebuild", "active")[uuid]
    state = (client.get_node(uuid)["driver_internal_info"] or {}).get("delta_deploy") or {}
    _say(f"   delta deploy: {state.get('state')} "
         f"(a payload of {built['delta']['bytes']} bytes instead of the {IMAGE_MIB} MiB image)"
         + (f"; {state['error']}" if state.get("error") else ""))
    _show_booted(lab, [name], "2")
    return seconds


def _summary(client: Client, lab: LabProcess, names: dict, times: dict,
             patches: dict[str, str]) -> None:
    nodes = {n["uuid"]: n for n in client.list_nodes(detail=True)}
    rows = []
    for uuid, name in names.items():
        booted = lab.status(name).get("booted_os") or {}
        rows.append({"node": nodes[uuid]["name"], "state": nodes[uuid]["provision_state"],
                     "power": nodes[uuid]["power_state"],
                     "booted OS": booted.get("pretty_name", "-"),
                     "VERSION_ID": booted.get("version_id", "-"),
                     "deploy time": f"{times[uuid]:.1f}s",
                     "patching": patches.get(nodes[uuid]["name"], "-")})
    _say("\nsummary:")
    output.table(rows, ["node", "state", "power", "booted OS", "VERSION_ID", "deploy time",
                        "patching"], out=sys.stdout)
    _say("(deploy time: from the deploy request to active; for the updated node, its rebuild)")


def _story(root: Path, nodes: int, keep: bool, started: list) -> None:
    appliance = demo_lab.start_appliance(root / "appliance")
    started.append(("appliance (metalcast serve)", appliance.pid, appliance.stop, appliance))
    _say(f"appliance: API {appliance.url}, TFTP {appliance.tftp}, HTTP {appliance.http}, "
         f"data in {appliance.data_dir} (pid {appliance.pid})")
    built = _build_images(appliance)
    lab = _start_lab(root / "lab", appliance, nodes)
    started.append(("virtual lab", lab.pid, lambda: stop_lab(lab), lab))
    started.append(("lab BMCs", lab.bmc_pid, None, None))
    client = Client(appliance.url)
    names = {demo_lab.enrol(client, f"demo-{name}", info["bmc_port"], info["mac"],
                            demo_lab.image_fields(built["1"]["url"], built["1"]["sha256"])):
             name for name, info in lab.machines.items()}
    _say(f"enrolled {nodes} nodes (driver ipmi, boot ipxe, deploy direct, one port each)")
    watcher = Watcher(client, lab, dict(names))
    uuids = list(names)
    _phase(client, watcher, uuids, "manage", "manageable")
    _phase(client, watcher, uuids, "provide", "available")
    times = _phase(client, watcher, uuids, "active", "active")
    _say("\nevery machine boots the deployed image from its disk:")
    _show_booted(lab, list(names.values()), "1")
    first = uuids[0]
    _say(f"\n== delta update of {names[first]} to v2 through the ramdisk (rebuild)")
    times[first] = _delta_update(client, watcher, lab, first, names[first], built)
    patches = _fleet_patch(root, appliance, client, started)
    ab_rows = _ab_update(root, appliance, client, started)
    _summary(client, lab, names, times, patches)
    if ab_rows:
        _say("\nA/B hosts:")
        output.table(ab_rows, ["host", "slot", "version", "status"], out=sys.stdout)
    if keep:
        _say(f"\nStill serving at {appliance.url} (lab running); press Ctrl-C to stop.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def _fleet_patch(root: Path, appliance, client: Client, started: list) -> dict[str, str]:
    """The fleet-patching chapter; each host's patch state for the summary."""
    _say("\n== fleet patching: the machines as hosts, one sw-manager patch strategy")
    missing = fleet_patch.missing_tools()
    if missing:
        _say("   skipped: missing " + ", ".join(missing))
        return {}
    def on_start(name: str, process) -> None:
        started.append((f"host agent of {name}", process.pid,
                        lambda: vproc.stop(process.pid, process), None))
    nodes = {n["uuid"]: n["name"] for n in client.list_nodes()}
    fleet = fleet_patch.FleetPatch(appliance, client, nodes, root / "fleet", on_start)
    fleet.start_hosts()
    fleet.publish_patch()
    fleet.orchestrate()
    return fleet.patch_states()


def _ab_update(root: Path, appliance, client: Client, started: list) -> list[dict]:
    """The A/B chapter; its summary rows (none when skipped)."""
    def on_lab(lab: LabProcess) -> None:
        started.append(("A/B lab", lab.pid, lambda: stop_lab(lab), lab))
        started.append(("A/B lab BMCs", lab.bmc_pid, None, None))
    return ab_update.chapter(appliance, client, root / "ab", on_lab)


def _stop_all(started: list) -> None:
    for _what, _pid, stop, _obj in reversed(started):
        if stop:
            stop()
    _say("stopped: " + ", ".join(f"{what} pid {pid}" for what, pid, _, _ in started))


MAX_NODES = 64


def missing_tools() -> list[str]:
    """What the demo needs from the system and lacks, as 'tool (Debian package)'."""
    missing = [f"{tool} (Debian package {package})" for tool, package in images.TOOLS.items()
               if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}"))]
    missing += [f"{path} (Debian package ipxe)"
                for name in render.REQUIRED_LOADERS for path in render.LOADER_SOURCES[name][:1]
                if not os.path.exists(path)]
    return missing


def run(nodes: int = 3, data_dir: str | None = None, keep: bool = False) -> int:
    if not 1 <= nodes <= MAX_NODES:
        print(f"metalcast demo: --nodes must be between 1 and {MAX_NODES}, not {nodes}",
              file=sys.stderr)
        return 2
    missing = missing_tools()
    if missing:
        print("metalcast demo: missing " + ", ".join(missing) + "; scripts/demo installs "
              "them when run as root", file=sys.stderr)
        return 2
    tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="metalcast-demo-")
    root = Path(tmp.name if tmp is not None else str(data_dir))
    started: list = []
    code = 0
    began = time.monotonic()
    _say(f"metalcast demo: appliance + virtual lab of {nodes} machine(s) in {root}")
    try:
        _story(root, nodes, keep, started)
    except (ClientError, RuntimeError, TimeoutError, AssertionError, OSError,
            images.ImageError, subprocess.CalledProcessError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        if started:
            print("appliance output (tail):\n" + started[0][3].output()[-6000:],
                  file=sys.stderr)
        code = 1
    finally:
        _stop_all(started)
        if tmp:
            tmp.cleanup()
    _say(f"demo {'finished' if code == 0 else 'FAILED'} in {time.monotonic() - began:.1f}s")
    return code


@command
def main(args, output: ModuleType) -> int:
    """``metalcast demo`` (installed with the ``lab`` extra)."""
    return run(nodes=args.nodes, data_dir=args.data_dir, keep=args.keep)
