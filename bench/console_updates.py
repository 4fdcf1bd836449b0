"""The console's updates and conductors pages at fleet size.

Fills a fresh data dir with ``--nodes`` nodes (bench/metrics.py's bulk INSERT) and as
many update instances (bulk INSERT: a mix of versions and statuses, a ``complete``
history row for each instance on the newest version, spread over the last hour, and
an error code on the failed ones), starts ``metalcast serve`` on it (a subprocess on a
free loopback port, stopped by PID), then prints:

* the server's response time for ``/ui/updates`` (counts, the roll-out chart over
  every instance, the first page of the table, leases), for a filtered page deep in
  the table, and for ``/ui/conductors`` (the ring's count of every node): p50/p99
  over ``--runs`` GETs on one keep-alive session;
* what the change publisher's ``updates`` probe costs per tick (in this process, on
  the same database): p50/p99 over ``--runs`` looks.

No targets are set for these pages in issue 18; the fleet page's (server p50 <= 100 ms)
is the yardstick.

Usage: .venv/bin/python bench/console_updates.py [--nodes 10000] [--runs 50]
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import ServeProcess
from metrics import fill

from conductor import config
from conductor.db.engine import make_engine
from conductor.db.leases import LeaseRows
from conductor.db.schema import update_instance_events, update_instances
from conductor.db.updates import UpdateRows
from conductor.updates.catalogue import METALCAST_APPID

VERSIONS = ("1.0.0", "1.1.0", "2.0.0")
STATUSES = ("complete", "new", "downloading", "installed", "error")


def fill_instances(data_dir: Path, count: int) -> None:
    """``count`` instances and their completed updates, in one transaction."""
    engine = make_engine(config.from_options({"data_dir": str(data_dir)}).db_url)
    now = datetime.datetime.now(datetime.UTC)
    rows, events = [], []
    for index in range(count):
        version, status = VERSIONS[index % 3], STATUSES[index % 5]
        created = now - datetime.timedelta(seconds=3600 - index % 1800)
        rows.append(dict(machineid=f"{index:032x}", appid=METALCAST_APPID,
                         group_name="stable", version=version, status=status,
                         error_code=44 if status == "error" else None,
                         error_text="rollback" if status == "error" else None,
                         created_at=created, updated_at=created, last_check_at=now))
        if version == VERSIONS[-1]:
            events.append(dict(instance_id=index + 1, status="complete", version=version,
                               created_at=created + datetime.timedelta(seconds=index % 1800)))
    with engine.begin() as conn:
        conn.execute(sa.insert(update_instances), rows)
        conn.execute(sa.insert(update_instance_events), events)
    engine.dispose()


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms"


def response_times(url: str, runs: int) -> None:
    session = requests.Session()
    for path in ("/ui/updates", "/ui/updates?status=error&version=2.0.0&page=5",
                 "/ui/conductors"):
        session.get(url + path, timeout=60).raise_for_status()    # warm
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            session.get(url + path, timeout=60).raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
        print(f"GET {path}: {percentiles(samples)} over {runs}")


def probe_cost(data_dir: Path, runs: int) -> None:
    engine = make_engine(config.from_options({"data_dir": str(data_dir)}).db_url)
    updates, leases = UpdateRows(engine), LeaseRows(engine)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        updates.change_mark() + leases.change_mark()
        samples.append((time.perf_counter() - started) * 1000)
    engine.dispose()
    print(f"change publisher's updates probe: {percentiles(samples)} per tick")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="metalcast-bench-console-updates-"))
    try:
        started = time.perf_counter()
        fill(data_dir, args.nodes)
        fill_instances(data_dir, args.nodes)
        print(f"{args.nodes} nodes and {args.nodes} instances written in "
              f"{time.perf_counter() - started:.1f}s")
        with ServeProcess(data_dir) as server:
            time.sleep(2)
            response_times(server.url, args.runs)
            probe_cost(data_dir, args.runs * 4)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
