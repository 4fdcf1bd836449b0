"""Power-state sync sweeps inside a real ``metalcast serve``, with the API under load.

For each scenario (``--ipmi`` node counts against virtual IPMI BMCs, ``--redfish``
node counts against sushy-tools' emulator with ``--power-delay 0``) and each
``--workers`` value this:

1. enrols the nodes into a fresh data dir (SQLite, "manageable", recorded "power
   off" as the peers start, passwords encrypted with the data dir's key);
2. starts a real ``metalcast serve`` on it with an INI (``--config-file``):
   ``[conductor] sync_power_state_interval`` (``--interval``) and
   ``sync_power_state_workers``, ``[ipmi] min_command_interval = 0``;
3. lets the periodic task run ``--sweeps`` sweeps: the first is cold (a fresh
   server: every RMCP+ session / Redfish connection is opened), later ones warm;
4. meanwhile one client thread sends ``GET /v1/nodes/{uuid}`` (random node,
   keep-alive) back to back, and a sampler reads the CPU of the server and of
   the BMC/emulator process from /proc every 20 ms.

Each sweep's wall time and outcomes come from the server's own INFO line
("Power state sync: N node(s) in S s: ..."); its window is [line time - S, line
time]. Per sweep the table shows: wall time, BMC requests/s (one power-state
read per node; a cold IPMI sweep also logs in: RMCP+ open session, RAKP 1/3,
set privilege, so ~5 UDP exchanges per node instead of 1), server CPU ms per
node over the window (includes serving the GETs of that window), peer CPU ms
per node, and the GET latency p50/p99/max of the requests *started* in the
window, with PASS/MISS against 50 ms; the 1000-node IPMI sweeps also get
PASS/MISS against 10 s. Row "idle" is the GET latency before the first sweep.
"load" is the machine's 1-minute load average when the sweep ended: on a
shared machine, compare runs only at similar load. "apiCPU" and "apiRQ" are, per
GET of the window, the CPU of the process serving the GETs and the time its threads
spent runnable but waiting for a CPU (/proc/PID/task/*/schedstat); "cliRQ" the
same wait of the client thread (the client's side of the measured latency).

``--roles`` (issue 17: API latency under a cold power sweep of 1,000 IPMI nodes when
API and conductor run in separate processes, **p99 <= 20 ms**; today 15-113 ms in one
process): each scenario runs three times in the same run, on the same BMCs, p99 judged
against 20 ms: "one" (one ``metalcast serve``, SQLite, as above: the reference),
"one-pg" (one ``--role all`` on PostgreSQL) and "split" (one ``--role api`` and one
``--role conductor`` on PostgreSQL, a fresh database each, the secrets key shared
through ``[secrets] key_file``; the GETs go to the API process, the sweep runs in the
conductor; srvCPU is both processes summed). The PostgreSQL is one this benchmark
starts (tests/conftest.py PostgresServer). ``--conductor-nice N`` runs the split
conductor's threads at nice N (as an operator may run it beside API processes on one
host): on a saturated machine the GETs then win the CPU from the sweep.

Every child (BMCs, emulator, servers, PostgreSQL) is stopped by PID, also on
error/Ctrl-C.

Usage: .venv/bin/python bench/power_sync.py [--ipmi 200,1000] [--redfish 200]
       [--workers 8,32] [--sweeps 2] [--interval 3]
       .venv/bin/python bench/power_sync.py --roles --ipmi 1000 --redfish '' --workers 32
                                            [--conductor-nice 10]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._postgres import BenchPostgres
from bench._server import ServeProcess
from conductor import secrets
from conductor.config import Settings
from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.queries import Store
from virtlab.launcher import start_bmcs, stop_bmcs
from virtlab.redfish import start_emulator, stop_emulator

USER, PASSWORD = "admin", "bench-pw"
HEADERS = {"X-OpenStack-Ironic-API-Version": "latest", "Accept": "application/json"}
SYNC_LINE = re.compile(r"Power state sync: (\d+) node\(s\) in ([\d.]+)s: (.*)")
API_P99_MS = 50.0
ROLES_P99_MS = 20.0          # issue 17, API and conductor in separate processes
IPMI_TARGET = (1000, 10.0)   # nodes, seconds


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server(ServeProcess):
    """ServeProcess that also timestamps each power-sync line as it arrives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sweeps: list[tuple[float, int, float, str]] = []  # (t, nodes, s, outcomes)
        self.loads: list[float] = []  # 1-minute load average when each sweep ended
        self.errors: list[str] = []

    def _drain(self, ready: threading.Event) -> None:
        for line in self.proc.stdout:
            now = time.monotonic()
            self.output.append(line)
            if self.ready in line:
                ready.set()
            match = SYNC_LINE.search(line)
            if match:
                self.sweeps.append((now, int(match[1]), float(match[2]), match[3].strip()))
                self.loads.append(os.getloadavg()[0])
            elif " ERROR " in line or "Traceback" in line:
                self.errors.append(line.rstrip())
        ready.set()


def run_queue_wait(pid: int, tid: int | None = None) -> dict[str, int]:
    """Nanoseconds each of the process's threads (or only thread ``tid``) has waited for
    a CPU while runnable (the second field of its schedstat), by thread id."""
    waits = {}
    tasks = Path(f"/proc/{pid}/task")
    for task in [tasks / str(tid)] if tid else tasks.iterdir():
        try:
            waits[task.name] = int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass                        # a thread that ended meanwhile
    return waits


def _wait_delta(first: dict[str, int], last: dict[str, int]) -> float:
    """Seconds of run-queue wait between two samples: the threads alive at the second
    (a thread that ended in between is not counted)."""
    return sum(v - first.get(tid, 0) for tid, v in last.items()) / 1e9


class Sampler(threading.Thread):
    """(t, server cpu, peer cpu, API process cpu, API run-queue wait, this (client)
    process's run-queue wait) every 20 ms; the
    server's CPU is summed over its processes (API and conductor when they are two)."""

    def __init__(self, server_pids: list[int], peer_pid: int, api_pid: int,
                 client_tid: int | None):
        super().__init__(daemon=True)
        self.client_tid = client_tid
        self.pids = (server_pids, peer_pid, api_pid)
        self.samples: list[tuple] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic(), sum(map(proc_cpu, self.pids[0])),
                                     proc_cpu(self.pids[1]), proc_cpu(self.pids[2]),
                                     run_queue_wait(self.pids[2]),
                                     run_queue_wait(os.getpid(), self.client_tid)))
            except (OSError, ValueError):
                return
            self.stop.wait(0.02)

    def delta(self, start: float, end: float) -> tuple:
        def at(t):
            return min(self.samples, key=lambda s: abs(s[0] - t))
        first, last = at(start), at(end)
        return (*(b - a for a, b in zip(first[1:4], last[1:4], strict=True)),
                *(_wait_delta(a, b) for a, b in zip(first[4:], last[4:], strict=True)))


class ApiClient(threading.Thread):
    """GET /v1/nodes/{uuid} back to back; records (start, ms, status)."""

    def __init__(self, url: str, uuids: list[str]):
        super().__init__(daemon=True)
        self.url, self.uuids = url, uuids
        self.results: list[tuple[float, float, int]] = []
        self.stop = threading.Event()
        self.running = threading.Event()
        self.tid: int | None = None

    def run(self) -> None:
        self.tid = threading.get_native_id()
        self.running.set()
        session = requests.Session()
        rng = random.Random(1)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status = session.get(f"{self.url}/v1/nodes/{rng.choice(self.uuids)}",
                                     headers=HEADERS, timeout=30).status_code
            except requests.RequestException:
                status = 0
            self.results.append((started, (time.monotonic() - started) * 1000, status))
        session.close()

    def window(self, start: float, end: float) -> list[tuple[float, float, int]]:
        return [r for r in self.results if start <= r[0] <= end]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def enrol(data_dir: Path, infos: list[dict], driver: str, iface: str,
          database: str | None = None) -> list[str]:
    """The nodes, into ``database`` (default: the data dir's SQLite), secrets sealed
    with the data dir's key."""
    settings = Settings(data_dir=str(data_dir))
    data_dir.mkdir(parents=True, exist_ok=True)
    cipher = secrets.Cipher.from_settings(settings)
    engine = make_engine(database or settings.db_url)
    migrate.upgrade(engine)
    store = Store(engine)
    uuids = []
    for index, info in enumerate(infos):
        node = store.create_node({
            "name": f"bench-{driver}-{index}", "driver": driver,
            "power_interface": iface, "management_interface": iface,
            "provision_state": "manageable", "power_state": "power off",
            "driver_info": cipher.encrypt_dict(info)})
        uuids.append(node.uuid)
    engine.dispose()
    return uuids


def write_config(path: Path, workers: int, interval: float, database: str | None = None,
                 key_file: Path | None = None) -> Path:
    path.write_text(
        (f"[database]\nconnection = {database}\n" if database else "")
        + (f"[secrets]\nkey_file = {key_file}\n" if key_file else "")
        + "[conductor]\n"
        "host = bench\n"
        f"sync_power_state_interval = {interval}\n"
        f"sync_power_state_workers = {workers}\n"
        "power_state_sync_max_retries = 1000\n"
        "[ipmi]\n"
        "min_command_interval = 0\n"
        "command_timeout = 5\n"
        "command_retry_timeout = 10\n")
    return path


def renice(pid: int, nice: int) -> None:
    """Every thread of ``pid`` to ``nice`` (Linux: per thread; the threads it starts
    later inherit it from their creator)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def start_servers(root: Path, name: str, config_args, mode: str,
                  postgres: BenchPostgres | None
                  ) -> tuple[list[Server], Server, Server, list[str]]:
    """(all started, the one the GETs go to, the one that sweeps) for ``mode``: "one"
    (SQLite in the data dir), "one-pg" (``--role all`` on PostgreSQL), "split" (a
    ``--role api`` and a ``--role conductor`` on PostgreSQL)."""
    workers, interval, kind, infos, nice = config_args
    driver, iface = ("ipmi", "ipmitool") if kind == "ipmi" else ("redfish", "redfish")
    data_dir = root / name
    database = postgres.database() if postgres is not None and mode != "one" else None
    uuids = enrol(data_dir, infos, driver, iface, database)
    key = data_dir / "keys" / "secrets.key" if database else None
    config = write_config(root / f"{name}.ini", workers, interval, database, key)
    started: list[Server] = []
    try:
        if mode != "split":
            started.append(Server(data_dir, ["--config-file", str(config)]))
            started[0].start()
            return started, started[0], started[0], uuids
        for role, ready in (("conductor", "no REST API"), ("api", "listening on")):
            role_dir = root / f"{name}-{role}"
            role_dir.mkdir()
            started.append(Server(role_dir, ["--role", role, "--config-file", str(config)],
                                  ready=ready))
            started[-1].start()
            if role == "conductor" and nice:
                renice(started[-1].proc.pid, nice)
        return started, started[1], started[0], uuids
    except BaseException:
        for server in started:
            server.stop()
        raise


def run_scenario(root: Path, kind: str, infos: list[dict], peer_pid: int, workers: int,
                 args, mode: str = "one", postgres: BenchPostgres | None = None) -> list[dict]:
    name = f"{kind}-{len(infos)}-w{workers}-{mode}"
    started, api, server, uuids = start_servers(
        root, name, (workers, args.interval, kind, infos, args.conductor_nice), mode,
        postgres)
    rows = []
    try:
        client = ApiClient(api.url, uuids)
        client.start()
        client.running.wait(5)
        sampler = Sampler([s.proc.pid for s in started], peer_pid, api.proc.pid, client.tid)
        sampler.start()
        began = time.monotonic()
        deadline = began + args.interval * (args.sweeps + 1) + args.sweep_timeout
        try:
            while len(server.sweeps) < args.sweeps:
                for each in started:
                    if each.proc.poll() is not None:
                        raise RuntimeError("metalcast serve exited:\n" + "".join(each.output))
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} {len(infos)} nodes: only {len(server.sweeps)} "
                                       f"of {args.sweeps} sweeps within the time limit")
                time.sleep(0.05)
        finally:
            client.stop.set()
            client.join(35)
            sampler.stop.set()
            sampler.join(5)
        first_start = server.sweeps[0][0] - server.sweeps[0][2]
        idle = [r[1] for r in client.window(began + 0.5, first_start)]
        rows.append({"kind": kind, "nodes": len(infos), "workers": workers, "mode": mode,
                     "sweep": "idle", "lat": idle, "bad": 0})
        for index, (end, nodes, seconds, outcomes) in enumerate(server.sweeps):
            begin = end - seconds
            server_cpu, peer_cpu, api_cpu, api_wait, client_wait = \
                sampler.delta(begin, end)
            window = client.window(begin, end)
            gets = max(len(window), 1)
            rows.append({"kind": kind, "nodes": nodes, "workers": workers, "mode": mode,
                         "sweep": "cold" if index == 0 else f"warm{index}",
                         "load": server.loads[index],
                         "seconds": seconds, "outcomes": outcomes,
                         "server_ms": 1000 * server_cpu / max(nodes, 1),
                         "peer_ms": 1000 * peer_cpu / max(nodes, 1),
                         "lat": [r[1] for r in window],
                         "api": (1000 * api_cpu / gets, 1000 * api_wait / gets,
                                 1000 * client_wait / gets),
                         "bad": sum(1 for r in window if r[2] != 200)})
        for each in started:
            if each.errors:
                print(f"  server errors ({len(each.errors)}), first: {each.errors[0]}")
            warnings = [line.rstrip() for line in each.output if " WARNING " in line]
            if warnings:
                print(f"  server warnings ({len(warnings)}), first: {warnings[0][:300]}")
    finally:
        for each in started:
            each.stop()
    return rows


def print_rows(rows: list[dict], p99_ms: float = API_P99_MS) -> None:
    for row in rows:
        lat = row["lat"]
        api = (f"{len(lat):>5} {statistics.median(lat):>6.1f} {percentile(lat, 99):>6.1f} "
               f"{max(lat):>7.1f} {'PASS' if percentile(lat, 99) <= p99_ms else 'MISS':>4}"
               if lat else f"{0:>5} {'-':>6} {'-':>6} {'-':>7} {'-':>4}")
        head = f"{row['mode']:>6} {row['kind']:>7} {row['nodes']:>5} {row['workers']:>4}"
        if row["sweep"] == "idle":
            print(f"{head} {'idle':>5} "
                  f"{'':>7} {'':>7} {'':>7} {'':>7} {'':>6}  {api}")
            continue
        target = ""
        if row["kind"] == "ipmi" and row["nodes"] >= IPMI_TARGET[0]:
            target = "PASS" if row["seconds"] <= IPMI_TARGET[1] else "MISS"
        rate = row["nodes"] / row["seconds"] if row["seconds"] else 0.0
        print(f"{head} {row['sweep']:>5} "
              f"{row['seconds']:>7.2f} {rate:>7.0f} {row['server_ms']:>7.2f} "
              f"{row['peer_ms']:>7.2f} {target:>6}  {api} {row['load']:>5.1f} "
              f"{row['api'][0]:>6.1f} {row['api'][1]:>6.1f} {row['api'][2]:>6.1f}  "
              f"{row['outcomes']}"
              + (f"  ({row['bad']} non-200)" if row["bad"] else ""))
    sys.stdout.flush()


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip() and int(v) > 0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ipmi", default="200,1000", help="IPMI node counts ('' for none)")
    parser.add_argument("--redfish", default="200", help="Redfish node counts ('' for none)")
    parser.add_argument("--workers", default="8,32", help="sync_power_state_workers values")
    parser.add_argument("--sweeps", type=int, default=2, help="sweeps per run (1st cold)")
    parser.add_argument("--interval", type=float, default=3.0,
                        help="sync_power_state_interval (also the pause between sweeps)")
    parser.add_argument("--sweep-timeout", type=float, default=300.0)
    parser.add_argument("--roles", action="store_true",
                        help="each run also on PostgreSQL, one process and API + conductor "
                             "split; p99 against 20 ms")
    parser.add_argument("--conductor-nice", type=int, default=0,
                        help="--roles: run the split conductor process at this nice value")
    args = parser.parse_args()
    modes = ("one", "one-pg", "split") if args.roles else ("one",)
    p99_ms = ROLES_P99_MS if args.roles else API_P99_MS
    ipmi, redfish, workers = _ints(args.ipmi), _ints(args.redfish), _ints(args.workers)
    # SIGTERM -> SystemExit, so every finally below stops its children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="bench-power-sync-") as tmp, \
            (BenchPostgres("--roles") if args.roles else contextlib.nullcontext()) as postgres:
        root = Path(tmp)
        print(f"{os.cpu_count()} CPUs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
              f" (1/5/15 min); interval {args.interval}s; {args.sweeps} sweeps per "
              f"run; GET /v1/nodes/{{uuid}} back to back from 1 thread; p99 target {p99_ms:.0f} ms"
              + ("; modes: one = 1 process on SQLite, one-pg = 1 process on PostgreSQL, "
                 "split = --role api + --role conductor on PostgreSQL" if args.roles else ""))
        print(f"{'mode':>6} {'peer':>7} {'nodes':>5} {'wrk':>4} {'sweep':>5} {'seconds':>7} "
              f"{'req/s':>7} "
              f"{'srvCPU':>7} {'peerCPU':>7} {'<=10s':>6}  {'GETs':>5} {'p50ms':>6} "
              f"{'p99ms':>6} {'maxms':>7} {'p99?':>4} {'load':>5} {'apiCPU':>6} {'apiRQ':>6} "
              f"{'cliRQ':>6}  outcomes")
        print(f"{'':>6} {'':>7} {'':>5} {'':>4} {'':>5} {'':>7} {'':>7} {'ms/node':>7} "
              f"{'ms/node':>7} {'':>6}  {'':>5} {'':>6} {'':>6} {'':>7} {'':>4} {'':>5} "
              f"{'ms/GET':>6} {'ms/GET':>6} {'ms/GET':>6}")
        if ipmi:
            bmcs = start_bmcs(root / "bmc", count=max(ipmi), username=USER, password=PASSWORD)
            try:
                for count in ipmi:
                    infos = [{"ipmi_address": "127.0.0.1", "ipmi_port": port,
                              "ipmi_username": USER, "ipmi_password": PASSWORD}
                             for port in bmcs.ports[:count]]
                    for w in workers:
                        for mode in modes:
                            print_rows(run_scenario(root, "ipmi", infos, bmcs.pid, w, args,
                                                    mode, postgres), p99_ms)
            finally:
                stop_bmcs(bmcs)
        if redfish:
            emulator = start_emulator(root / "redfish", count=max(redfish), power_delay=0,
                                      quiet=True)
            try:
                for count in redfish:
                    infos = [{"redfish_address": emulator.url, "redfish_system_id": s.path}
                             for s in emulator.systems[:count]]
                    for w in workers:
                        for mode in modes:
                            print_rows(run_scenario(root, "redfish", infos, emulator.pid, w,
                                                    args, mode, postgres), p99_ms)
            finally:
                stop_emulator(emulator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
