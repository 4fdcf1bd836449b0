"""bench/takeover.py ``--processes``: SIGKILL one of three conductor processes on
PostgreSQL and time the survivors' takeover from the database (the docstring of
bench/takeover.py says what is written and measured)."""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from bench._postgres import BenchPostgres
from bench._server import ServeProcess
from bench.scale_out import seed
from conductor import states
from conductor.cluster.hashring import HashRing
from conductor.db import migrate
from conductor.db.engine import make_engine
from conductor.db.queries import Store
from conductor.db.schema import conductors as conductor_table
from conductor.db.schema import nodes
from tests.functional.conftest import _write_config

NAMES = ("tk-c1", "tk-c2", "tk-c3")
VICTIM = NAMES[0]
#: What the victim left, by node index among its own (i % 3).
LEFT = (("deploying", "active", True), ("wait call-back", "active", False),
        ("active", None, False))
TRANSIENT = {s.value for s in states.WORKING_STATES}
WAIT = 300      # s before the run is called broken (never a target)
TOOK_OVER = "took over nodes of dead conductor"


class Conductor(ServeProcess):
    """A conductor process whose takeover lines are timestamped as they arrive."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.takeovers: list[float] = []

    def _drain(self, ready: threading.Event) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            del self.output[:-200]
            if TOOK_OVER in line:
                self.takeovers.append(time.monotonic())
            if self.ready in line:
                ready.set()
        ready.set()


def start(work: Path, url: str, args) -> list[Conductor]:
    started = []
    for name in NAMES:
        data_dir = work / name
        data_dir.mkdir()
        config = _write_config(data_dir, {
            "database": {"connection": url}, "pxe": {"enabled": "false"},
            "patching": {"listen_port": 0},
            "conductor": {"host": name, "sync_power_state_interval": 0,
                          "heartbeat_interval": args.heartbeat_interval,
                          "heartbeat_timeout": args.heartbeat_timeout}})
        server = Conductor(data_dir, ["--role", "conductor", "--config-file", str(config)],
                           ready="no REST API")
        server.start()
        started.append(server)
    return started


def write_nodes(engine: sa.Engine, count: int) -> list[str]:
    """``count`` nodes (scale_out's bulk rows); the victim's left as it would have left
    them. The UUIDs of the victim's nodes."""
    fake = {f"{k}_interface": "fake" for k in ("boot", "deploy", "power", "management")}
    Store(engine).create_node({"driver": "fake-hardware", "name": "bulk-000000", **fake})
    with engine.connect() as conn:
        template = dict(conn.execute(sa.select(nodes).where(
            nodes.c.name == "bulk-000000")).mappings().one())
    seed(engine, template, 1, count - 1)
    ring = HashRing(NAMES)
    owners: dict[str, list[str]] = {name: [] for name in NAMES}
    with engine.connect() as conn:
        for uuid in conn.execute(sa.select(nodes.c.uuid)).scalars():
            owners[ring.conductor_for(uuid)].append(uuid)
    with engine.begin() as conn:
        for name, uuids in owners.items():
            if name != VICTIM:
                conn.execute(nodes.update().where(nodes.c.uuid.in_(uuids))
                             .values(conductor_affinity=name))
        mine = owners[VICTIM]
        for index, (state, target, locked) in enumerate(LEFT):
            conn.execute(nodes.update().where(nodes.c.uuid.in_(mine[index::len(LEFT)])).values(
                provision_state=state, target_provision_state=target,
                power_state="power on", conductor_affinity=VICTIM,
                reservation=VICTIM if locked else None))
    return mine


def pending(engine: sa.Engine, uuids: list[str], expected: dict[str, str]) -> tuple[int, list]:
    """How many of the victim's nodes are not yet taken over, and their rows."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(
            nodes.c.uuid, nodes.c.reservation, nodes.c.provision_state,
            nodes.c.conductor_affinity).where(nodes.c.uuid.in_(uuids))
            .order_by(nodes.c.uuid)).all()
    left = sum(1 for uuid, reservation, state, affinity in rows
               if reservation is not None or state in TRANSIENT
               or affinity != expected[uuid])
    return left, rows


def run(args) -> None:
    count = args.nodes
    interval, timeout = args.heartbeat_interval, args.heartbeat_timeout
    bound = timeout + interval + 5
    processes: list[Conductor] = []
    with BenchPostgres() as postgres, \
            tempfile.TemporaryDirectory(prefix="metalcast-takeover-") as work:
        url = postgres.database("metalcast")
        engine = make_engine(url)
        migrate.upgrade(engine)
        try:
            processes = start(Path(work), url, args)
            began = time.monotonic()
            mine = write_nodes(engine, count)
            survivors = HashRing(NAMES[1:])
            expected = {uuid: survivors.conductor_for(uuid) for uuid in mine}
            print(f"3 conductors ([conductor] heartbeat_interval {interval} s, "
                  f"heartbeat_timeout {timeout} s) on PostgreSQL; {count} nodes, "
                  f"{len(mine)} on the victim {VICTIM} (1/3 deploying locked, "
                  f"1/3 wait call-back, 1/3 active), written in "
                  f"{time.monotonic() - began:.1f} s", flush=True)
            time.sleep(interval)     # a heartbeat of everyone after the writes
            with engine.connect() as conn:
                last = conn.execute(sa.select(conductor_table.c.updated_at).where(
                    conductor_table.c.hostname == VICTIM)).scalar_one()
                db_now = conn.execute(sa.text("SELECT now() AT TIME ZONE 'UTC'")).scalar()
            load = os.getloadavg()
            victim = processes[0]
            killed = time.monotonic()
            victim.proc.kill()           # SIGKILL, by PID
            victim.proc.wait()
            since_beat = (db_now - last.replace(tzinfo=None)).total_seconds()
            polls, left = 0, len(mine)
            while left:
                if time.monotonic() - killed > WAIT:
                    raise RuntimeError(f"{left} of {len(mine)} nodes not taken over "
                                       f"after {WAIT} s")
                time.sleep(0.1)
                left, rows = pending(engine, mine, expected)
                polls += 1
            done = time.monotonic() - killed
            time.sleep(2 * interval)
            again, rows_after = pending(engine, mine, expected)
            stable = again == 0 and rows_after == rows
            failed = sum(1 for r in rows if r[2] == "deploy failed")
            waiting = sum(1 for r in rows if r[2] == "wait call-back")
            per = {name: sum(1 for r in rows if r[3] == name) for name in NAMES[1:]}
            print(f"victim's last heartbeat {since_beat:.1f} s before the kill, so dead "
                  f"(stale) {timeout - since_beat:.1f} s after it; a survivor's pass runs "
                  f"every {interval} s and logs when done (load average at the kill "
                  f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
            for server in processes[1:]:
                if server.takeovers:
                    print(f"{server.data_dir.name}: takeover lines at "
                          + ", ".join(f"{t - killed:.1f}" for t in server.takeovers)
                          + " s after the kill; "
                          f"{per[server.data_dir.name]} nodes now its own")
            print(f"after: {failed} deploy failed, {waiting} wait call-back, "
                  f"{len(mine) - failed - waiting} active; stable over the next "
                  f"{2 * interval} s: {'yes' if stable else 'NO'}")
            print(f"takeover of {len(mine)} nodes, SIGKILL to every node remapped: "
                  f"{done:.1f} s; bound heartbeat_timeout + heartbeat_interval + 5 s = "
                  f"{bound} s; ratio {done / bound:.2f} "
                  f"({'PASS' if done <= bound and stable else 'MISS'}); load average "
                  + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        finally:
            for server in processes:
                server.stop()
            engine.dispose()
