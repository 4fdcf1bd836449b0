"""Fleet deploy: N virtual-lab machines deployed at once vs N bare image writes.

Both sides fetch the same image (``--image-mib``, default 256: a GPT + ext4 image
from virtlab.images) from the same ``virtlab.imageserver`` child process and
write it to N disk files of their own with O_DIRECT, checking its sha256:

* **reference** ("no conductor at all"): N processes each running
  ``ramdisk_agent.ramdisk.imagewrite.stream_raw`` (exactly what the agent's write_image
  runs) at the same time, started before the clock starts;
* **fleet**: a real ``metalcast serve`` (SQLite) and a virtual lab of N machines
  (``python -m virtlab.lab``, all BMCs in one child process). Nodes are enrolled
  (ipmi driver, ipxe boot, direct deploy) and made available with
  ``automated_clean = false`` (cleaning is not what this measures) before the
  clock starts; then all N deploy requests are sent at once and the clock stops
  when every node is ``active``. That includes IPMI boot device + power on, the
  machine's PXE (TFTP loader, iPXE scripts over HTTP, kernel/initrd downloads),
  starting N ``metalcast-agent`` processes (Python start-up, lookup, TLS
  certificate), write_image, the agent's power off and the power on from disk.

A second reference, **reference + agent start-up**: N fresh processes started at
the clock (bench/_agent_start.py), each doing what every agent does with or
without a conductor (Python start-up, the agent's imports, disk inventory, TLS
certificate, command API bound) and then the same write. fleet / that shows what
the conductor, IPMI, PXE and the lab add on top of the agents themselves.

Printed: wall times and both ratios (fleet / (reference + agent start-up), and
fleet / reference with the earlier target <= 1.2), and the conductor's CPU per
deployed node against its target (<= 40 ms): the ``metalcast serve`` process's
CPU from /proc during the deploys, apart from the lab's and the agents' (the lab
process and its children). The boot servers (TFTP, HTTP) run inside serve: the
serve process's CPU is also split by thread kind (conductor workers, API, IPMI,
boot servers, periodic tasks), counted inside serve by bench/_thread_cpu (on its
PYTHONPATH for this run only), so the figure without the boot servers is printed
too. ``[agent] heartbeat_timeout`` is the appliance's default (300: a beat every
90-180 s); the deploy does not wait for periodic beats: the agent heartbeats at
once after lookup and when a command finishes, and the conductor acts on those.
With ``--heartbeat-timeout 3`` (the demo's) every agent also beats every ~1.4 s.
The bench's own progress poll (one node list every 0.5 s) is in the serve figure.

Usage: .venv/bin/python bench/deploy_fleet.py [--machines 50] [--image-mib 256]
       [--dir /var/tmp] [--workers 64] [--heartbeat-timeout 300] [--lab-tick 0.1]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.client import Client
from ramdisk_agent.ramdisk.imagewrite import stream_raw
from virtlab import images
from virtlab.demo import lab as demo_lab
from virtlab.lab import start_lab, stop_lab
from virtlab.process import start_ready, stop

TARGET_RATIO = 1.2           # fleet / bare-write reference (the earlier issue's target)
TARGET_CPU_MS = 40.0         # conductor (serve) CPU per deployed node
#: bench/_thread_cpu: the sitecustomize that counts serve's CPU by thread kind.
THREAD_CPU = Path(__file__).resolve().with_name("_thread_cpu")


def _write_one(url: str, disk: str, digest: str) -> float:
    result = stream_raw(url, disk, "sha256")
    if result.digest != digest:
        raise RuntimeError(f"{disk}: sha256 {result.digest}, expected {digest}")
    return result.seconds


def _warm(_):
    return os.getpid()


def proc_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds of ``pid`` (plus its waited-for children's) from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(stat[11]) + int(stat[12]) + (int(stat[13]) + int(stat[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _blank_disks(root: Path, prefix: str, count: int, disk_mib: int) -> list[str]:
    """``count`` sparse disk files of ``disk_mib`` MiB named ``<prefix>-<i>.img``."""
    disks = []
    for i in range(count):
        disk = root / f"{prefix}-{i}.img"
        with open(disk, "wb") as f:
            f.truncate(disk_mib << 20)
        disks.append(str(disk))
    return disks


def reference(url: str, digest: str, root: Path, count: int, disk_mib: int) -> dict:
    """Wall and CPU seconds of ``count`` concurrent agent-equivalent writes."""
    disks = _blank_disks(root, "ref", count, disk_mib)
    cpu0 = _children_cpu()
    with ProcessPoolExecutor(count) as pool:
        list(pool.map(_warm, range(count * 2)))        # processes up before the clock
        started = time.monotonic()
        futures = [pool.submit(_write_one, url, disk, digest) for disk in disks]
        for future in futures:
            future.result()
        seconds = time.monotonic() - started
    cpu = _children_cpu() - cpu0                      # the pool's processes, reaped now
    for disk in disks:
        os.unlink(disk)
    return {"seconds": seconds, "cpu": cpu}


def reference_with_startup(url: str, digest: str, root: Path, count: int,
                           disk_mib: int) -> dict:
    """Wall and CPU seconds of ``count`` agent-equivalent processes started at once,
    each starting up like metalcast-agent and then writing (bench/_agent_start.py)."""
    script = str(Path(__file__).resolve().with_name("_agent_start.py"))
    disks = _blank_disks(root, "ref2", count, disk_mib)
    cpu0, started = _children_cpu(), time.monotonic()
    procs = [subprocess.Popen([sys.executable, script, url, disk, digest],
                              stdout=subprocess.DEVNULL) for disk in disks]
    codes = [p.wait() for p in procs]
    seconds, cpu = time.monotonic() - started, _children_cpu() - cpu0
    for disk in disks:
        os.unlink(disk)
    if any(codes):
        raise RuntimeError(f"agent-equivalent writes failed: exit codes {codes}")
    return {"seconds": seconds, "cpu": cpu}


def _wait_active(client: Client, uuids: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        nodes = {n["uuid"]: n for n in client.list_nodes() if n["uuid"] in uuids}
        states = {n["provision_state"] for n in nodes.values()}
        if states <= {"active", "deploy failed"}:
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(f"fleet not active after {timeout}s: {sorted(states)}")
        time.sleep(0.5)         # each poll costs the server a 50-node list


def _booted(lab, version: str, timeout: float) -> int:
    """How many machines boot ``version`` from disk (waiting up to ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        count = sum((lab.status(name).get("booted_os") or {}).get("version_id") == version
                    for name in lab.machines)
        if count == len(lab.machines) or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


@contextlib.contextmanager
def _counting_threads(out: Path):
    """Processes started inside count their CPU by thread kind (bench/_thread_cpu;
    only ``metalcast serve`` acts on it) into ``out`` on SIGUSR1."""
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "BENCH_THREAD_CPU")}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(THREAD_CPU), saved["PYTHONPATH"]) if p)
    os.environ["BENCH_THREAD_CPU"] = str(out)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def thread_cpu(pid: int, out: Path, timeout: float = 10) -> dict[str, float]:
    """{thread kind: CPU seconds so far} of the serve process ``pid`` ({} when it
    does not count them: started without bench/_thread_cpu)."""
    if not out.exists():   # written at start-up when counting; else SIGUSR1 would kill
        return {}
    out.unlink()
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not out.exists():
        if time.monotonic() > deadline:
            return {}
        time.sleep(0.05)
    return json.loads(out.read_text())


def _py_spy(out: str | None, pid: int):
    """``py-spy record`` of the conductor during the deploys (--profile), or None."""
    if not out:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen([spy, "record", "-p", str(pid), "-o", out, "--format", "raw",
                             "-r", "100", "--nonblocking", "--gil"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def fleet(url: str, digest: str, root: Path, count: int, disk_mib: int, args) -> dict:
    """Deploy ``count`` lab machines at once; wall seconds and conductor CPU."""
    counts = root / "serve-threads.json"
    with _counting_threads(counts):
        appliance = demo_lab.start_appliance(root / "appliance", {
            "conductor": {"workers": args.workers, "deploy_callback_timeout": 600},
            "agent": {"heartbeat_timeout": args.heartbeat_timeout}})
    lab = None
    try:
        machines = [{"name": f"m{i}", "mac": demo_lab.lab_mac(i + 1),
                     "disk": str(root / f"m{i}.img"), "disk_size_mib": disk_mib}
                    for i in range(count)]
        lab = start_lab(demo_lab.lab_config(root, appliance, machines, tick=args.lab_tick),
                        root / "lab.json", timeout=120)
        client = Client(appliance.url)
        uuids = [demo_lab.enrol(client, name, info["bmc_port"], info["mac"],
                                demo_lab.image_fields(url, digest), automated_clean=False)
                 for name, info in lab.machines.items()]
        for target, state in (("manage", "manageable"), ("provide", "available")):
            for uuid in uuids:
                client.set_provision_state(uuid, target)
            demo_lab.wait_all(client, uuids, (state,), 300)
        spy = _py_spy(args.profile, appliance.pid)
        lab0, own0 = proc_cpu(lab.pid, children=True), proc_cpu(lab.pid)
        kinds0 = thread_cpu(appliance.pid, counts)
        cpu0, started = appliance.cpu_seconds(), time.monotonic()
        for uuid in uuids:
            client.set_provision_state(uuid, "active")
        nodes = _wait_active(client, set(uuids), 900)
        seconds, cpu = time.monotonic() - started, appliance.cpu_seconds() - cpu0
        kinds1 = thread_cpu(appliance.pid, counts)
        kinds = {kind: kinds1[kind] - kinds0.get(kind, 0.0) for kind in kinds1}
        lab_cpu = proc_cpu(lab.pid, children=True) - lab0   # machines + exited agents
        lab_own = proc_cpu(lab.pid) - own0                   # supervisor + firmware only
        if spy is not None:     # py-spy writes its profile on SIGINT
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        failed = {n["name"]: client.get_node(n["uuid"])["last_error"]
                  for n in nodes.values() if n["provision_state"] != "active"}
        if failed:
            raise RuntimeError(f"deploys failed: {failed}")
        booted = _booted(lab, "1", 120)
        return {"seconds": seconds, "cpu": cpu, "booted": booted, "lab_cpu": lab_cpu,
                "lab_own": lab_own, "kinds": kinds}
    finally:
        if lab is not None:
            stop_lab(lab)
        appliance.stop()


def _print_conductor_cpu(result: dict, args) -> None:
    """The serve process's CPU per node against the target, and by thread kind."""
    per_node = 1000 * result["cpu"] / args.machines
    print(f"conductor CPU (metalcast serve, lab and agents apart): {result['cpu']:.2f}s "
          f"total, {per_node:.0f} ms per deployed node (target <= {TARGET_CPU_MS:.0f} ms: "
          f"{'met' if per_node <= TARGET_CPU_MS else 'NOT met'}; [agent] heartbeat_timeout "
          f"{args.heartbeat_timeout}, [conductor] workers {args.workers}, lab tick "
          f"{args.lab_tick}s)")
    kinds = result["kinds"]
    if not kinds:
        print("  (no split by thread kind: serve did not answer the count)")
        return
    shares = ", ".join(f"{kind} {1000 * cpu / args.machines:.1f}"
                       for kind, cpu in sorted(kinds.items(), key=lambda kv: -kv[1]))
    print(f"  by thread kind, ms per node: {shares}")
    boot = kinds.get("boot servers", 0.0)
    rest = 1000 * (result["cpu"] - boot) / args.machines
    print(f"  without the boot servers (TFTP/HTTP, {1000 * boot / args.machines:.1f} ms per "
          f"node, {100 * boot / max(result['cpu'], 1e-9):.0f} % of serve): {rest:.0f} ms "
          f"per node (target <= {TARGET_CPU_MS:.0f} ms: "
          f"{'met' if rest <= TARGET_CPU_MS else 'NOT met'})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--image-mib", type=int, default=256)
    parser.add_argument("--dir", default="/var/tmp", help="where the disk files go")
    parser.add_argument("--workers", type=int, default=64, help="[conductor] workers")
    parser.add_argument("--heartbeat-timeout", type=int, default=300,
                        help="[agent] heartbeat_timeout (default: the appliance's 300)")
    parser.add_argument("--lab-tick", type=float, default=0.1,
                        help="how often the lab's machines look at their BMC state")
    parser.add_argument("--profile", help="write a py-spy profile of the conductor here")
    args = parser.parse_args(argv)
    if args.machines < 1 or args.image_mib < 24:
        parser.error("--machines must be >= 1 and --image-mib >= 24")
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir=args.dir))
    server = None
    try:
        (root / "www").mkdir()
        image = images.build_image(root / "www" / "fleet.img", "1", args.image_mib)
        digest = demo_lab.sha256_of(image)
        server, info, _ = start_ready([sys.executable, "-m", "virtlab.imageserver",
                                       str(image.parent)], "IMAGESERVER ", 30, "imageserver")
        url = f"{info['url']}/{image.name}"
        disk_mib = args.image_mib + 8
        load0 = os.getloadavg()[0]
        ref = reference(url, digest, root, args.machines, disk_mib)
        print(f"reference: {args.machines} concurrent writes of {args.image_mib} MiB "
              f"(stream_raw, O_DIRECT, sha256) in {ref['seconds']:.1f}s, "
              f"{ref['cpu']:.1f}s CPU", flush=True)
        ref2 = reference_with_startup(url, digest, root, args.machines, disk_mib)
        print(f"reference + agent start-up: "
              f"{args.machines} fresh agent-equivalent processes (imports, inventory, TLS "
              f"certificate, command API) each writing the image in {ref2['seconds']:.1f}s, "
              f"{ref2['cpu']:.1f}s CPU ({1000 * (ref2['cpu'] - ref['cpu']) / args.machines:.0f}"
              f" ms CPU per process more than the bare write)", flush=True)
        result = fleet(url, digest, root, args.machines, disk_mib, args)
        ratio = result["seconds"] / ref["seconds"]
        print(f"fleet:     {args.machines} lab machines deployed (all active, "
              f"{result['booted']} booted VERSION_ID 1) in {result['seconds']:.1f}s")
        print(f"ratio fleet/(reference + agent start-up): "
              f"{result['seconds'] / ref2['seconds']:.2f} (the wall time against what the "
              f"agents' own start-up and writes take)")
        print(f"ratio fleet/reference (bare writes): {ratio:.2f} (earlier target <= "
              f"{TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")
        _print_conductor_cpu(result, args)
        print(f"lab + agents CPU (same 2 cores; on real hardware each machine's own): "
              f"{result['lab_cpu']:.1f}s, {1000 * result['lab_cpu'] / args.machines:.0f} ms "
              f"per machine (reference writes: "
              f"{1000 * ref['cpu'] / args.machines:.0f} ms per image; of it the lab process "
              f"itself (supervision, firmware, PXE downloads): "
              f"{1000 * result['lab_own'] / args.machines:.0f} ms per machine)")
        cores = os.cpu_count() or 1
        need = result["cpu"] + result["lab_cpu"]
        print(f"CPU floor: the fleet used {need:.1f}s CPU (conductor + lab + agents), at "
              f"least {need / cores:.1f}s on {cores} CPUs at full use = "
              f"{need / cores / ref['seconds']:.2f}x the reference before any waiting; the "
              f"agents' start-up and writes alone (reference + agent start-up) need "
              f"{ref2['cpu'] / cores / ref['seconds']:.2f}x")
        print(f"load average 1 min: {load0:.2f} before, {os.getloadavg()[0]:.2f} after "
              f"({os.cpu_count()} CPUs)")
        return 0
    finally:
        if server is not None:
            stop(server.pid, server)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
