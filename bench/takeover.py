"""Takeover of a dead conductor's nodes (conductor/engine/takeover.py) and the pickup of
work handed over through the database (conductor/engine/intents.py): what one pass
costs on the database.

    python bench/takeover.py [--nodes 1000] [--database URL]  (in-process passes)

Three conductors are registered; one (``dead``) stops beating. It held ``--nodes``
nodes: a third locked mid-deploy, a third waiting for their agent, a third active.
The two survivors' takeover passes each handle the nodes the ring maps to them; the
figure is the time of both passes (the bound of issue 17 is heartbeat_timeout + one
heartbeat_interval + 5 s from the kill, so this is what the 5 s must cover). Then
``--nodes`` deploys are handed to one conductor and its poller's pickup is timed (the
claims; the fake deploys run on its workers afterwards). SQLite by default (a fresh
file); ``--database`` a PostgreSQL URL of an empty database. Figures only.

``--processes``: the same takeover end to end, with real processes (issue 17's figure:
time from SIGKILL to every orphaned node remapped and stable, with ~1,000 nodes on the
dead conductor: **<= heartbeat_timeout + one heartbeat_interval + 5 s**):

    .venv/bin/python bench/takeover.py --processes [--nodes 3000]
                                       [--heartbeat-interval 2] [--heartbeat-timeout 10]

A PostgreSQL this benchmark starts (tests/conftest.py PostgresServer) and three
``metalcast serve --role conductor`` processes on it (bench/_server.py). ``--nodes``
fake-hardware nodes are bulk-written as bench/scale_out.py writes them (its ``seed``);
the ~1/3 the hash ring maps to the victim are then rewritten as the victim would have
left them (``conductor_affinity`` = victim): a third locked mid-deploy (``deploying``,
``reservation`` = victim), a third in ``wait call-back``, a third ``active``; the
others' affinity is their own conductor. The victim is SIGKILLed and the database
polled (every 0.1 s) until none of its nodes is reserved by it, none is in a transient
state, and every one has ``conductor_affinity`` = its conductor on the ring of the two
survivors; then the rows are watched for two more heartbeat intervals, unchanged
("stable"). Printed: the time from the kill, the bound and their ratio, and where the
time went (the victim's last heartbeat before the kill, the survivors' first and last
takeover lines).
"""
from __future__ import annotations

import argparse
import datetime
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conductor.cluster.membership import stale_before
from conductor.cluster.ring import RingManager
from conductor.config import from_options
from conductor.db import migrate
from conductor.db.conductors import ConductorRows
from conductor.db.engine import make_engine
from conductor.db.queries import Store
from conductor.drivers.context import DriverContext
from conductor.drivers.registry import DriverRegistry
from conductor.engine.takeover import Takeover
from conductor.engine.workers import Workers

STATES = (("deploying", "dead"), ("wait call-back", None), ("active", None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, help="1000; 3000 with --processes")
    parser.add_argument("--database", help="an empty PostgreSQL database's URL")
    parser.add_argument("--processes", action="store_true",
                        help="SIGKILL a real conductor process (3 on PostgreSQL)")
    parser.add_argument("--heartbeat-interval", type=int, default=2)
    parser.add_argument("--heartbeat-timeout", type=int, default=10)
    args = parser.parse_args()
    args.nodes = args.nodes or (3000 if args.processes else 1000)
    if args.processes:
        from bench._takeover_processes import run
        run(args)
        return
    logging.disable(logging.CRITICAL)   # one line per node taken over: figures only here
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{tmp}/bench.sqlite"
        engine = make_engine(url)
        migrate.upgrade(engine)
        store, rows = Store(engine), ConductorRows(engine)
        now = datetime.datetime.now(datetime.UTC)
        old = now - datetime.timedelta(seconds=600)
        rows.register("dead", "", ["fake-hardware"], old, old - datetime.timedelta(60))
        for name in ("alive-1", "alive-2"):
            rows.register(name, "", ["fake-hardware"], now, now - datetime.timedelta(60))
        fake = {f"{k}_interface": "fake" for k in ("boot", "deploy", "power", "management")}
        for i in range(args.nodes):
            state, lock = STATES[i % len(STATES)]
            store.create_node({"driver": "fake-hardware", "name": f"n{i}", **fake,
                               "provision_state": state, "reservation": lock,
                               "conductor_affinity": "dead"})
        drivers = DriverRegistry(DriverContext.create(from_options({})))
        total = 0.0
        for name in ("alive-1", "alive-2"):
            settings = from_options({"conductor.host": name})
            ring = RingManager(rows, settings.conductor)
            takeover = Takeover(store, rows, name, ring.conductor_or_none, drivers,
                                lambda s=settings: stale_before(s.conductor, now))
            started = time.perf_counter()
            summary = takeover.sweep()
            seconds = time.perf_counter() - started
            total += seconds
            print(f"{name}: {seconds * 1000:.0f} ms: released {len(summary.released)}, "
                  f"failed {len(summary.failed)}, resumed {len(summary.resumed)}, "
                  f"active re-prepared {len(summary.reprepared)}")
        print(f"takeover of {args.nodes} nodes of a dead conductor by 2 survivors: "
              f"{total:.2f} s of passes ({args.nodes / total:.0f} nodes/s)")
        _pickup(store, args.nodes)
        engine.dispose()


def _pickup(store: Store, count: int) -> None:
    """``count`` deploys handed to alive-1 (as an API process writes them)."""
    settings = from_options({"conductor.host": "alive-1", "conductor.workers": 64,
                             "conductor.max_queued": count + 64})
    fake = {f"{k}_interface": "fake" for k in ("boot", "deploy", "power", "management")}
    for i in range(count):
        store.create_node({"driver": "fake-hardware", "name": f"h{i}", **fake,
                           "provision_state": "deploying", "target_provision_state": "active",
                           "reservation": "alive-1"})
    workers = Workers(store, settings, DriverRegistry(DriverContext.create(settings)))
    started = time.perf_counter()
    picked = len(workers.pickup())
    seconds = time.perf_counter() - started
    workers.stop()
    print(f"pickup of {picked} handed-over deploys by one poll: {seconds * 1000:.0f} ms "
          f"({picked / seconds:.0f} claims/s; the deploys ran after)")


if __name__ == "__main__":
    main()
