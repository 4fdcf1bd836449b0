"""``GET /metrics`` scrape time at fleet size, next to a bare ``GET /v1`` in the same run.

Fills a fresh data dir with ``--nodes`` nodes (default 10,000) spread over provision
states, power states, maintenance and faults (one bulk INSERT through the conductor's
own schema, so the start is quick), starts ``metalcast serve`` on it (a subprocess on
a free loopback port, stopped by PID), then alternates ``--runs`` scrapes of
``/metrics`` with ``GET /v1`` on one keep-alive session and prints p50/p99/max of
each, the scrape's size and sample count, and the server CPU per scrape. Target
(issue 18): a scrape <= 50 ms at 10,000 nodes.

Usage: .venv/bin/python bench/metrics.py [--nodes 10000] [--runs 200]
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import ServeProcess

from conductor import config
from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.queries import Store
from conductor.db.schema import nodes

TARGET_MS = 50
#: (provision state, power state) and how many nodes of every 20 are in it.
MIX = [(("active", "power on"), 10), (("available", "power off"), 5),
       (("deploying", "power on"), 1), (("wait call-back", "power on"), 1),
       (("manageable", "power off"), 1), (("deploy failed", "power on"), 1),
       (("enroll", None), 1)]


def fill(data_dir: Path, count: int) -> None:
    """``count`` nodes in the data dir's database, in one transaction."""
    settings = config.from_options({"data_dir": str(data_dir)})
    settings.make_data_dir()
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    template = Store(engine).create_node({
        "driver": "fake-hardware", "conductor_group": "", "provision_state": "enroll",
        "properties": {}, "instance_info": {}, "driver_info": {},
        "driver_internal_info": {}, "extra": {}, "network_data": {}})
    base = {c.name: getattr(template, c.name) for c in nodes.columns if c.name != "id"}
    states = [state for state, weight in MIX for _ in range(weight)]
    now = datetime.datetime.now(datetime.UTC)
    rows = []
    for index in range(count - 1):
        provision, power = states[index % len(states)]
        rows.append(dict(base, uuid=str(uuid.uuid4()), name=f"bench-{index}",
                         provision_state=provision, power_state=power, created_at=now,
                         maintenance=index % 50 == 0,
                         fault="power failure" if index % 100 == 0 else None))
    with engine.begin() as conn:
        conn.execute(sa.insert(nodes), rows)
    engine.dispose()


def timed(session: requests.Session, url: str) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    answer = session.get(url, timeout=30)
    elapsed = (time.perf_counter() - started) * 1000
    answer.raise_for_status()
    return elapsed, answer


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{name:<10} p50 {statistics.median(ordered):7.2f} ms   p99 {p99:7.2f} ms   "
            f"max {ordered[-1]:7.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="metalcast-bench-metrics-"))
    try:
        started = time.perf_counter()
        fill(data_dir, args.nodes)
        print(f"{args.nodes} nodes written in {time.perf_counter() - started:.1f}s")
        with ServeProcess(data_dir) as server, requests.Session() as session:
            for _ in range(5):                      # warm: connections, statement caches
                timed(session, f"{server.url}/metrics")
                timed(session, f"{server.url}/v1")
            scrapes, roots = [], []
            cpu = server.cpu_seconds()
            for _ in range(args.runs):
                elapsed, answer = timed(session, f"{server.url}/metrics")
                scrapes.append(elapsed)
                roots.append(timed(session, f"{server.url}/v1")[0])
            cpu = server.cpu_seconds() - cpu
            text = answer.text
            counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                          if line.startswith("metalcast_nodes{"))
            samples = sum(1 for line in text.splitlines() if line and line[0] != "#")
        assert counted == args.nodes, f"metalcast_nodes sums to {counted}, not {args.nodes}"
        print(f"/metrics: {len(text)} bytes, {samples} samples, metalcast_nodes sums to "
              f"{counted:.0f}; server CPU {cpu * 1000 / args.runs:.1f} ms per scrape + GET /v1")
        print(summary("/metrics", scrapes))
        print(summary("GET /v1", roots))
        p50 = statistics.median(scrapes)
        print(f"target: scrape <= {TARGET_MS} ms at 10,000 nodes: p50 {p50:.1f} ms "
              f"({'met' if p50 <= TARGET_MS else 'NOT met'})")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
