"""Patch orchestration over a simulated fleet: build time, apply overhead, GET latency.

N active nodes (default 1000) in a real SQLite database, each with a lightweight
host report (patch state, personality) held in memory instead of a host agent; a
host asked to install becomes patch-current ``--install-delay`` seconds later. The
engine is the real one (conductor/orchestration: Orchestrator, StrategyRows,
ApplianceFleet's lock and unlock on the node rows, the runner thread), and
``GET /api/orchestration/sw-patch/strategy`` is served by the real Flask app on a
waitress socket.

Printed:
* **build**: the create request (§6.3 checks, §6.4 stages) at N hosts; target <= 1 s.
* **apply**: wall time from apply-all to ``applied``, against the sum of the injected
  per-stage delays (workers in parallel, ``--max-parallel`` per stage: the stages
  run one after the other, each waits one install delay); target <= 1.05x. A host
  that finishes wakes the runner (as a host agent's changed report does through the
  patch controller), so the pass interval (``--audit-interval``, default the
  configuration's 2 s) is only the fallback; system-stabilize waits nothing
  (stabilize_factor 0), as in tests.
* **GET p99** while the apply runs (one client, ``--get-pause`` 10 ms between
  requests: far more than any operator's ``show --watch``); target <= 50 ms.

Usage: .venv/bin/python bench/orchestration.py [--hosts 1000] [--install-delay 2]
       [--max-parallel 100] [--audit-interval 2] [--reboot]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import requests
import waitress

from api import create_app
from conductor import config
from conductor.alarms import AlarmTable
from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.queries import Store
from conductor.db.strategies import StrategyRows
from conductor.orchestration.fleet import HOST_COLUMNS, ApplianceFleet
from conductor.orchestration.hosts import map_hosts
from conductor.orchestration.orchestrator import Orchestrator

PATH = "/api/orchestration/sw-patch/strategy"


class SimulatedFleet(ApplianceFleet):
    """Real node rows (lock, unlock); host reports in memory, installs on a timer.

    A host that finishes its install sets ``host_changed``, as the patch controller
    does when a host agent's report changes its state (the runner waits on it)."""

    def __init__(self, store, settings, names, delay: float, reboot: bool,
                 host_changed: threading.Event):
        super().__init__(store, settings, None, AlarmTable(), None)
        self.delay, self.done_at, self.reboot_required = delay, {}, reboot
        self.host_changed = host_changed
        self.lock_ = threading.Lock()
        self.reports = {n: {"hostname": n, "nodetype": "worker", "subfunctions": ["worker"],
                            "state": "idle", "patch_current": False,
                            "requires_reboot": reboot, "patch_failed": False,
                            "interim_state": False, "secs_since_ack": 1} for n in names}

    def hosts(self, names=None):
        """Like ApplianceFleet.hosts: the node rows (only ``names``' when given) and
        the reports, the simulated patch controller's query_hosts."""
        now = time.monotonic()
        with self.lock_:
            for name, at in list(self.done_at.items()):
                if now >= at:
                    self.reports[name].update(state="idle", patch_current=True,
                                              node_is_patched=self.reboot_required)
                    del self.done_at[name]
            views = [dict(r) for r in self.reports.values()]
        filters = {"provision_state": "active"}
        if names is not None:
            filters["names"] = names = set(names)
            views = [v for v in views if v["hostname"] in names]
        nodes = self.store.list_nodes(filters, columns=HOST_COLUMNS)
        return map_hosts(nodes, views, 180)

    def patches(self):
        return {"BENCH_0001": {"patchstate": "Partial-Apply"}}

    def install(self, name):
        with self.lock_:
            self.reports[name]["state"] = "installing"
            self.done_at[name] = time.monotonic() + self.delay
        finished = threading.Timer(self.delay, self.host_changed.set)
        finished.daemon = True
        finished.start()
        return ""

    def reboot(self, name):
        with self.lock_:            # the simulated host is back at once
            self.reports[name].update(node_is_patched=False, requires_reboot=False)


def serve(app) -> tuple[str, object]:
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    return f"http://127.0.0.1:{server.effective_port}", server


def poll_latencies(url: str, stop: threading.Event, out: list[float],
                   pause: float) -> None:
    """GET the strategy in a loop, ``pause`` seconds between requests (a client in a
    tight loop in this process would take the interpreter from the engine it times)."""
    session = requests.Session()
    while not stop.is_set():
        start = time.perf_counter()
        session.get(url + PATH, timeout=30).raise_for_status()
        out.append(time.perf_counter() - start)
        stop.wait(pause)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--install-delay", type=float, default=2.0)
    p.add_argument("--max-parallel", type=int, default=100)
    p.add_argument("--audit-interval", type=float,
                   default=config.OrchestrationSettings.audit_interval,
                   help="the runner's pass interval (default: the configuration's)")
    p.add_argument("--get-pause", type=float, default=0.01,
                   help="seconds between two GETs of the strategy while applying")
    p.add_argument("--reboot", action="store_true",
                   help="reboot-required installs (lock, install, reboot, unlock)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-orchestration-"))
    settings = config.from_options({
        "data_dir": str(work), "conductor.host": "bench",
        "orchestration.audit_interval": args.audit_interval,
        "orchestration.stabilize_factor": 0})
    engine = make_engine(f"sqlite:///{work}/bench.db")
    migrate.upgrade(engine)
    store = Store(engine)
    names = [f"compute-{i:04d}" for i in range(args.hosts)]
    for name in names:
        store.create_node({"name": name, "driver": "fake-hardware",
                           "provision_state": "active"})
    host_changed = threading.Event()
    fleet = SimulatedFleet(store, settings, names, args.install_delay, args.reboot,
                           host_changed)
    orchestrator = Orchestrator(StrategyRows(engine), fleet, AlarmTable(), settings,
                                wake=host_changed)
    service = types.SimpleNamespace(settings=settings, orchestration=orchestrator)
    url, server = serve(create_app(service, settings))

    start = time.perf_counter()
    created = orchestrator.create({
        "controller-apply-type": "ignore", "storage-apply-type": "ignore",
        "worker-apply-type": "parallel", "default-instance-action": "migrate",
        "max-parallel-worker-hosts": args.max_parallel})
    build = time.perf_counter() - start
    assert created["state"] == "ready-to-apply", created["build-phase"]["reason"]
    stages = created["apply-phase"]["total-stages"]
    print(f"hosts {args.hosts}, {stages} stages of <= {args.max_parallel}, install delay "
          f"{args.install_delay}s, runner interval {args.audit_interval}s"
          f"{', reboot-required' if args.reboot else ''}")
    print(f"build: {build * 1000:.0f} ms (target <= 1000 ms)")

    latencies: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll_latencies, args=(url, stop, latencies, args.get_pause),
                              daemon=True)
    poller.start()
    orchestrator.start()
    start = time.perf_counter()
    orchestrator.action({"action": "apply-all"})
    while (shown := orchestrator.get())["state"] == "applying":
        time.sleep(0.01)
    wall = time.perf_counter() - start
    stop.set()
    poller.join()
    orchestrator.stop()
    server.close()
    injected = stages * args.install_delay
    print(f"apply: {shown['state']} in {wall:.2f} s; injected delays {injected:.2f} s; "
          f"ratio {wall / injected:.3f} (target <= 1.05); engine overhead "
          f"{(wall - injected) * 1000 / stages:.0f} ms per stage")
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(f"GET {PATH} while applying: {len(latencies)} requests, median "
          f"{statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
          "(target <= 50 ms)")
    return 0 if shown["state"] == "applied" else 1


if __name__ == "__main__":
    sys.exit(main())
