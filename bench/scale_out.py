"""Scale-out on PostgreSQL (issue 17): three ``metalcast serve --role conductor`` and two
``--role api`` processes on one PostgreSQL this benchmark starts, with ``--nodes``
fake-hardware nodes in the table.

    .venv/bin/python bench/scale_out.py [--nodes 100000] [--enroll 3000] [--deploy 3000]
                                        [--clients 8]

Two rounds, the same work in each: the first with 1,000 nodes in the table, the second
with ``--nodes``. The nodes that are not the round's own are written straight into
PostgreSQL in bulk (copies of the row a ``POST /v1/nodes`` wrote, 3/4 ``active`` and
powered on, 1/4 ``available``), as bench/omaha.py writes its instances: enrolling
100,000 through the API would take the setup from minutes to tens of minutes. Then, in
each round, through the REST API (``--clients`` processes, each with one keep-alive
connection, half of them on each API process; a 409/503 is retried as the Ironic clients
do):

- enroll: ``--enroll`` ``POST /v1/nodes`` (driver fake-hardware);
- manage + provide of ``--deploy`` of them (verify, automated clean: not a target);
- deploy: ``--deploy`` ``PUT .../states/provision {"target": "active"}``, timed until
  the database shows every one ``active`` with its lock released (the API processes
  hand the work to the node's conductor through the database);
- undeploy: the same nodes back to ``available`` (``deleted``: tear-down and clean);
- ``GET /v1/nodes/detail?limit=1000`` pages walked with markers over the whole table,
  alternately on each API process (the first round's walk, repeated to 20 pages, is the
  reference: one page at ~1,000 nodes).

Each phase reads the five processes' CPU from /proc/<pid>/stat before and after: CPU
per node of the conductors (summed) and of the API processes (summed), and the ratio
of the second round to the first. At the end, RSS of each process. The periodic power
sync is off (``sync_power_state_interval = 0``; bench/power_sync.py measures it): over
100,000 fake nodes it would run a sweep per minute on each conductor, which is not the
work of a phase; the conductors' idle CPU at each size is printed instead.

Targets (issue 17): detail page p50 <= 65 ms at 100,000 nodes; enroll >= 140 nodes/s;
deploy >= 39 nodes/s (both measured with the whole table present); conductor CPU per
node per phase within 1.2x from 1,000 to 100,000 nodes; RSS <= 200 MiB per process.
Figures only: the exit status is non-zero only when the run itself breaks.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._postgres import BenchPostgres
from bench._server import ServeProcess
from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.schema import nodes
from tests.functional.conftest import _write_config

SMALL = 1000                    # nodes in the table in the first round
BATCH = 5000                    # rows per bulk INSERT
IDLE = 0.1                      # conductor CPU ms/node of a phase they took no part in
WAIT = 900                      # s a phase may take before the run is called broken
HEADERS = {"X-OpenStack-Ironic-API-Version": "latest", "Content-Type": "application/json"}
CONDUCTOR = {"sync_power_state_interval": 0}
TARGETS = {"detail": "p50 <= 65 ms", "enroll": ">= 140 nodes/s",
           "deploy": ">= 39 nodes/s", "cpu": "<= 1.2x", "rss": "<= 200 MiB"}


def start_cluster(work: Path, url: str) -> tuple[list[ServeProcess], list[ServeProcess]]:
    """Three conductors, then two API processes, on the database ``url``."""
    conductors, apis = [], []
    for role, names, into in (("conductor", ("sc-c1", "sc-c2", "sc-c3"), conductors),
                              ("api", ("sc-api1", "sc-api2"), apis)):
        for name in names:
            data_dir = work / name
            data_dir.mkdir()
            config = _write_config(data_dir, {
                "database": {"connection": url}, "pxe": {"enabled": "false"},
                "patching": {"listen_port": 0}, "conductor": {"host": name, **CONDUCTOR}})
            server = ServeProcess(data_dir, ["--role", role, "--config-file", str(config)],
                                  ready="no REST API" if role == "conductor" else "listening on")
            server.start()
            into.append(server)
    return conductors, apis


def client(args: tuple) -> tuple[list[float], list[str]]:
    """One client process, one keep-alive connection: each request's latency and the
    UUIDs of the nodes it created; 409 (node locked) and 503 (limit reached) retried."""
    url, requests, start_at = args
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    while time.time() < start_at:
        time.sleep(0.001)
    latencies, created = [], []
    for method, path, body in requests:
        began = time.perf_counter()
        while True:
            conn.request(method, path, json.dumps(body) if body else None, HEADERS)
            reply = conn.getresponse()
            data = reply.read()
            if reply.status not in (409, 503):
                break
            time.sleep(0.05)
        if reply.status >= 300:
            raise RuntimeError(f"{method} {path}: {reply.status} {data[:300]!r}")
        latencies.append(time.perf_counter() - began)
        if method == "POST":
            created.append(json.loads(data)["uuid"])
    conn.close()
    return latencies, created


def spread(pool, apis: list[ServeProcess], requests: list[tuple], clients: int):
    """``requests`` dealt round-robin to ``clients`` processes, alternately on each API."""
    start_at = time.time() + 0.5
    jobs = [(apis[n % len(apis)].url, requests[n::clients], start_at) for n in range(clients)]
    results = pool.map(client, jobs)
    return [u for _, made in results for u in made], start_at


def states(engine: sa.Engine, prefix: str) -> dict[str, int]:
    """Provision states of the round's nodes (lock released) and of those still locked."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT CASE WHEN reservation IS NULL THEN provision_state ELSE 'locked' END, "
            "count(*) FROM nodes WHERE name LIKE :p GROUP BY 1"), {"p": prefix + "%"})
        return dict(rows.all())


def wait_for(engine: sa.Engine, prefix: str, state: str, count: int) -> float:
    """Poll the database until ``count`` of the round's nodes are ``state``, unlocked."""
    deadline = time.time() + WAIT
    while True:
        seen = states(engine, prefix)
        if seen.get(state, 0) >= count:
            return time.time()
        failed = {s: n for s, n in seen.items() if "fail" in s}
        if failed or time.time() > deadline:
            raise RuntimeError(f"waiting for {count} nodes {state}: {seen}")
        time.sleep(0.1)


def seed(engine: sa.Engine, template: dict, first: int, count: int) -> None:
    """``count`` copies of ``template`` (a node row), 3/4 active and 1/4 available."""
    # a None left out stays SQL NULL, as the API writes it (a JSON column given None
    # would store the JSON text 'null', which every read then parses)
    template = {k: v for k, v in template.items() if k != "id" and v is not None}
    with engine.begin() as conn:
        for start in range(first, first + count, BATCH):
            rows = []
            for i in range(start, min(start + BATCH, first + count)):
                active = i % 4 != 0
                rows.append(dict(
                    template, uuid=str(uuidlib.uuid4()), name=f"bulk-{i:06d}",
                    provision_state="active" if active else "available",
                    power_state="power on" if active else "power off",
                    instance_uuid=str(uuidlib.uuid4()) if active else None))
            conn.execute(nodes.insert(), rows)


def scanned(engine: sa.Engine) -> int:
    """Rows of ``nodes`` read by sequential scans so far (PostgreSQL's statistics, which
    lag by up to a second): a phase whose count grows with the table has a missing index
    or a query over every node."""
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT seq_tup_read FROM pg_stat_user_tables "
                                    "WHERE relname = 'nodes'")).scalar() or 0


def cpu(processes: list[ServeProcess]) -> float:
    return sum(p.cpu_seconds() for p in processes)


class Round:
    """One round's phases and their figures (rows of the table printed at the end)."""

    def __init__(self, number: int, engine, pool, conductors, apis, args):
        self.prefix = f"r{number}-"
        self.engine, self.pool, self.args = engine, pool, args
        self.conductors, self.apis = conductors, apis
        self.figures: dict[str, dict] = {}

    def phase(self, name: str, requests: list[tuple], state: str | None, count: int):
        before = cpu(self.conductors), cpu(self.apis), scanned(self.engine)
        created, start_at = spread(self.pool, self.apis, requests, self.args.clients)
        end = wait_for(self.engine, self.prefix, state, count) if state else time.time()
        wall = end - start_at
        self.figures[name] = {
            "n": count, "wall": wall, "rate": count / wall,
            "conductor_ms": (cpu(self.conductors) - before[0]) * 1000 / count,
            "api_ms": (cpu(self.apis) - before[1]) * 1000 / count,
            "scanned": (scanned(self.engine) - before[2]) / count}
        return created

    def provision(self, uuids: list[str], target: str) -> list[tuple]:
        return [("PUT", f"/v1/nodes/{u}/states/provision", {"target": target}) for u in uuids]

    def run(self) -> None:
        args = self.args
        created = self.phase("enroll", [("POST", "/v1/nodes", {
            "driver": "fake-hardware", "name": f"{self.prefix}{i:05d}"})
            for i in range(args.enroll)], None, args.enroll)
        chosen = created[:args.deploy]
        self.phase("manage", self.provision(chosen, "manage"), "manageable", len(chosen))
        self.phase("provide", self.provision(chosen, "provide"), "available", len(chosen))
        self.phase("deploy", self.provision(chosen, "active"), "active", len(chosen))
        self.phase("undeploy", self.provision(chosen, "deleted"), "available", len(chosen))

    def walk(self, pages_at_least: int) -> None:
        """Detail pages of 1,000 with markers over the whole table, alternating APIs."""
        conns = [http.client.HTTPConnection(urlsplit(a.url).hostname, urlsplit(a.url).port,
                                            timeout=120) for a in self.apis]
        latencies, before = [], cpu(self.apis)
        while len(latencies) < pages_at_least:
            marker = ""
            while True:
                conn = conns[len(latencies) % len(conns)]
                began = time.perf_counter()
                conn.request("GET", f"/v1/nodes/detail?limit=1000{marker}", headers=HEADERS)
                reply = conn.getresponse()
                data = reply.read()
                latencies.append(time.perf_counter() - began)
                if reply.status != 200:
                    raise RuntimeError(f"detail page: {reply.status} {data[:300]!r}")
                page = json.loads(data)["nodes"]
                if len(page) < 1000:
                    break
                marker = f"&marker={page[-1]['uuid']}"
        for conn in conns:
            conn.close()
        latencies.sort()
        self.figures["detail"] = {
            "n": len(latencies), "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "api_ms": (cpu(self.apis) - before) * 1000 / len(latencies)}


def idle(conductors: list[ServeProcess], seconds: float = 5.0) -> float:
    """The conductors' CPU (summed, s per s) while nothing is asked of them."""
    before = cpu(conductors)
    time.sleep(seconds)
    return (cpu(conductors) - before) / seconds


def report(small: Round, large: Round, table: tuple[int, int], idles, processes) -> None:
    print(f"\n{'phase':<9} {'nodes':>6} {'nodes/s':>8} {'target':>15} "
          f"{'cond CPU ms/node':>17} {'(1k)':>7} {'ratio':>6} {'API CPU ms/node':>16}"
          f" {'(1k)':>7} {'seq rows/node':>14}")
    for name in ("enroll", "manage", "provide", "deploy", "undeploy"):
        f, ref = large.figures[name], small.figures[name]
        # below IDLE ms/node the conductors had no part in the phase (enroll is the API's
        # alone): the ratio of their background noise means nothing
        ratio = (f"{f['conductor_ms'] / ref['conductor_ms']:>5.2f}x"
                 if ref["conductor_ms"] >= IDLE else "  idle")
        print(f"{name:<9} {f['n']:>6} {f['rate']:>8.1f} {TARGETS.get(name, '-'):>15} "
              f"{f['conductor_ms']:>17.2f} {ref['conductor_ms']:>7.2f} {ratio} "
              f"{f['api_ms']:>16.2f} {ref['api_ms']:>7.2f} {f['scanned']:>14.0f}")
    print(f"(nodes/s with {table[1]} nodes in the table; (1k): the same with {table[0]}; "
          f"CPU ratio target {TARGETS['cpu']} for enroll, deploy, undeploy;\n"
          " seq rows/node: rows of nodes read by sequential scans, per node of the phase)")
    for size, r in zip(table, (small, large), strict=True):
        d = r.figures["detail"]
        print(f"GET /v1/nodes/detail?limit=1000 at {size} nodes: {d['n']} pages, p50 "
              f"{d['p50'] * 1000:.1f} ms, p99 {d['p99'] * 1000:.1f} ms, API CPU "
              f"{d['api_ms']:.1f} ms/page")
    ratio = large.figures["detail"]["p50"] / small.figures["detail"]["p50"]
    print(f"detail p50 at {table[1]} vs {table[0]} nodes: {ratio:.2f}x "
          f"(target {TARGETS['detail']})")
    print(f"conductors' idle CPU (3 summed): {idles[0]:.3f} s/s at {table[0]} nodes, "
          f"{idles[1]:.3f} s/s at {table[1]}")
    for name, process in processes:
        mem = process.memory_mib()
        print(f"RSS {name:<8} {mem['VmRSS']:6.1f} MiB (peak {mem['VmHWM']:.1f}; "
              f"target {TARGETS['rss']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100000)
    parser.add_argument("--enroll", type=int, default=3000)
    parser.add_argument("--deploy", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    args.deploy = min(args.deploy, args.enroll)
    if args.nodes < SMALL + args.enroll:
        parser.error(f"--nodes must be at least {SMALL} + --enroll")
    began = time.time()
    pool = multiprocessing.get_context("fork").Pool(args.clients)
    processes: list[ServeProcess] = []
    try:
        with BenchPostgres() as postgres:
            url = postgres.database("metalcast")
            engine = make_engine(url)
            migrate.upgrade(engine)
            with tempfile.TemporaryDirectory(prefix="metalcast-scale-") as work:
                try:
                    conductors, apis = start_cluster(Path(work), url)
                    processes = conductors + apis
                    figures = run(engine, pool, conductors, apis, args)
                    report(*figures, [(p.data_dir.name, p) for p in processes])
                finally:
                    for process in processes:
                        process.stop()
                    engine.dispose()
    finally:
        pool.terminate()
    print(f"whole run: {time.time() - began:.0f} s")
    return 0


def run(engine, pool, conductors, apis, args):
    """Template node, 1,000-node round, fill to ``--nodes``, the big round."""
    spread(pool, apis, [("POST", "/v1/nodes", {"driver": "fake-hardware",
                                               "name": "bulk-000000"})], 1)
    with engine.connect() as conn:
        template = dict(conn.execute(sa.select(nodes).where(
            nodes.c.name == "bulk-000000")).mappings().one())
    seed(engine, template, 1, SMALL - 1)
    idles = [idle(conductors)]
    small = Round(1, engine, pool, conductors, apis, args)
    small.run()
    small.walk(20)
    print(f"round 1 ({SMALL} nodes): " + ", ".join(
        f"{k} {v.get('rate', 0):.0f}/s" for k, v in small.figures.items() if "rate" in v),
        flush=True)
    started = time.time()
    fill = args.nodes - SMALL - args.enroll
    seed(engine, template, SMALL, fill)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE nodes")
        table = conn.execute(sa.select(sa.func.count()).select_from(nodes)).scalar()
    print(f"{fill} nodes written in bulk in {time.time() - started:.1f} s: {table} in the "
          "table", flush=True)
    idles.append(idle(conductors))
    large = Round(2, engine, pool, conductors, apis, args)
    large.run()
    large.walk(1)
    return small, large, (SMALL, table), idles


if __name__ == "__main__":
    sys.exit(main())
