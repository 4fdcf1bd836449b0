"""Fleet rollout benchmark: M lightweight Omaha clients update under a reboot lease of N.

    .venv/bin/python bench/rollout.py [--hosts 2000] [--max 50] [--reboot 2.0]
                                      [--poll-rate 150] [--wait 25] [--in-flight 48]
                                      [--shared-lease-gate]

A real ``metalcast serve`` (SQLite) with two images on channel ``stable``; M active
nodes written into its database, each with a host-agent token (as the operator's
``issue_host_agent_token`` stores it: the hash). Each client, an asyncio task with its
own loopback source address: an update check (granted: the group is unlimited), the
download/install events (13/1, 14/1, 3/1), then the lease of group ``rollout``
(max N): asked with ``wait`` (the server holds the acquire until a slot frees, at most
``--wait`` s; up to ``HELD`` such requests open at once, as the server's waiting room
holds 64) and asked again until granted; then a simulated reboot of R seconds; then the first
check on the new version (3/2) and the release. Waiting clients spread their polls
so that together they poll about ``--poll-rate`` times a second (a fleet's agents
would scale their interval to the fleet's size); ``--wait 0`` makes every client a
pure poller, as agents were before held acquires. A sampler reads the lease status
(``GET /updates/v1/leases``) every 50 ms.

All simulated hosts share ``--in-flight`` connections for their Omaha requests (one
process, one file-descriptor table): a FIFO, as the server's task queue would be for
a real fleet. Lease polls and releases do not queue there: a real host sends them on
its own connection and the server serves the lease route on its own threads (api/
updates/__init__.py LEASE_PATHS), so they get their own ``LEASE_IN_FLIGHT``
connections, as held acquires do. ``--shared-lease-gate`` puts them back behind the
Omaha requests, as this bench did before: there the releases of the first lease rounds
waited 1.8 s median, 15 s p90 for a connection behind the 4,000 first checks and
events (measured here, 2,000 hosts), which no real host does.

The start of the roll-out (its ratio counts from the first host's start, storm
included) is printed: when the first N and 5N grants came, when the storm of first
checks and events was answered, how long each kind of request of the first 5 rounds
waited for a client connection and for the server, and the CPU this client process
and the server used meanwhile.

Prints the rollout's time against the bound ceil(M/N)*R (target: within 1.1x), where the
time goes (per lease round: a reboot's end -> the next grant of its slot) and the most
holders any sample saw (must never exceed N).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._server import ServeProcess
from conductor.db.queries import Store
from conductor.db.schema import nodes
from conductor.updates.catalogue import METALCAST_APPID
from ramdisk_agent.wire import omaha
from ramdisk_agent.wire.agent_tokens import token_hash

GROUP = "rollout"
IN_FLIGHT = 48        # requests open at once (the server's per-process connection cap)
HELD = 64             # held acquires open at once (conductor/updates/leases.py MAX_WAITING)
LEASE_IN_FLIGHT = 64  # lease polls and releases open at once (the server's stream
                      # threads beyond the held ones: 64 for the console + 4 spare)


def source(index: int) -> str:
    return f"127.0.{1 + index // 250}.{2 + index % 250}"


def seed(url: str, data_dir: Path, hosts: int, maximum: int) -> list[tuple[str, str]]:
    """Images 1.0.0 and 2.0.0 on stable; ``hosts`` active nodes with host-agent tokens."""
    for version in ("1.0.0", "2.0.0"):
        requests.post(f"{url}/updates/v1/images", params={"version": version,
                      "channel": "stable"}, data=version.encode() * 4096,
                      timeout=60).raise_for_status()
    requests.put(f"{url}/updates/v1/leases/{GROUP}", json={"max": maximum},
                 timeout=60).raise_for_status()
    engine = sa.create_engine(f"sqlite:///{data_dir / 'metalcast.sqlite'}")
    store, when = Store(engine), datetime.datetime.now(datetime.UTC)
    fleet = []
    for index in range(hosts):
        node = store.create_node({"driver": "fake-hardware", "name": f"host-{index:05d}",
                                  "provision_state": "active", "provision_updated_at": when})
        fleet.append((node.uuid, secrets.token_urlsafe(32)))
    since = str(store.get_node(fleet[0][0]).provision_updated_at)
    with engine.begin() as conn:
        for uuid, token in fleet:
            conn.execute(nodes.update().where(nodes.c.uuid == uuid).values(
                driver_internal_info={"host_agent_token_hash": token_hash(token),
                                      "host_agent_since": since}))
    engine.dispose()
    return fleet


class Http:
    """HTTP/1.1 over asyncio streams, one connection per request, a source address per
    client (the server bounds connections per address)."""

    def __init__(self, url: str, in_flight: int = IN_FLIGHT):
        host, port = url.split("//")[1].split(":")
        self.host, self.port = host, int(port)
        self.gate = asyncio.Semaphore(in_flight)
        #: (kind, host, queued, sent, answered) of every request (perf_counter)
        self.trace: list[tuple[str, int, float, float, float]] = []

    async def call(self, index: int, method: str, path: str, body: bytes,
                   content_type: str, gate: asyncio.Semaphore | None = None,
                   kind: str = "") -> tuple[int, bytes]:
        queued = time.perf_counter()
        async with gate or self.gate:
            sent = time.perf_counter()
            reader, writer = await asyncio.open_connection(
                self.host, self.port, local_addr=(source(index), 0))
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                         f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            data = await reader.read()
            writer.close()
        self.trace.append((kind, index, queued, sent, time.perf_counter()))
        head, _, payload = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), payload


class Rollout:
    def __init__(self, http: Http, fleet: list[tuple[str, str]], reboot: float,
                 poll_rate: float, wait: float, shared_lease_gate: bool = False):
        self.http, self.fleet, self.reboot, self.poll_rate = http, fleet, reboot, poll_rate
        self.wait, self.held = wait, asyncio.Semaphore(HELD)
        # polls and releases: a host's own connection, as the server serves the lease
        # route on its own threads (api/updates/__init__.py LEASE_PATHS); None: they
        # queue with the Omaha requests (--shared-lease-gate, what the bench did)
        self.lease_gate = None if shared_lease_gate else asyncio.Semaphore(LEASE_IN_FLIGHT)
        self.waiting = 0
        self.release_latency: list[float] = []
        self.times: list[tuple[float, float]] = []      # (acquired, released)
        self.errors: list[str] = []

    async def omaha(self, index: int, version: str, events=(), check=True,
                    kind: str = "check") -> bytes:
        body = omaha.render_request(omaha.Request((omaha.AppRequest(
            METALCAST_APPID, version, "stable", machineid=self.fleet[index][0].replace(
                "-", ""), updatecheck=check, events=tuple(events)),)))
        status, answer = await self.http.call(index, "POST", "/v1/update/", body,
                                              "text/xml", kind=kind)
        if status != 200:
            raise RuntimeError(f"update check: {status} {answer[:200]!r}")
        return answer

    async def lease(self, index: int, action: str) -> tuple[int, dict]:
        node, token = self.fleet[index]
        doc = {"node": node, "agent_token": token, "action": action, "group": GROUP}
        if action == "acquire" and self.wait and not self.held.locked():
            # a held request: its own connection, not one of the short requests' gate
            status, answer = await self.http.call(
                index, "POST", "/updates/v1/leases", json.dumps(
                    dict(doc, wait=self.wait)).encode(), "application/json", self.held,
                kind="held")
        else:
            status, answer = await self.http.call(
                index, "POST", "/updates/v1/leases", json.dumps(doc).encode(),
                "application/json", self.lease_gate,
                kind="poll" if action == "acquire" else action)
        return status, json.loads(answer)

    async def released(self, index: int) -> tuple[int, dict]:
        began = time.perf_counter()
        answer = await self.lease(index, "release")
        self.release_latency.append(time.perf_counter() - began)
        return answer

    async def host(self, index: int, start_within: float) -> None:
        await asyncio.sleep(random.uniform(0, start_within))
        answer = await self.omaha(index, "1.0.0")
        if b'status="ok"' not in answer.split(b"<updatecheck")[1]:
            raise RuntimeError("no update offered")
        await self.omaha(index, "1.0.0", [omaha.Event(13, 1), omaha.Event(14, 1),
                                          omaha.Event(3, 1)], check=False,
                         kind="events")
        self.waiting += 1
        while True:
            status, answer = await self.lease(index, "acquire")
            if status == 200:
                break
            if status != 409:
                raise RuntimeError(f"lease: {status} {answer}")
            interval = max(0.02, self.waiting / self.poll_rate)
            await asyncio.sleep(random.uniform(0.5, 1.5) * interval)
        self.waiting -= 1
        acquired = time.perf_counter()
        await asyncio.sleep(self.reboot)                       # the reboot
        released = time.perf_counter()
        # back on the new version: report it and release the lease (both at once)
        _, (status, answer) = await asyncio.gather(
            self.omaha(index, "2.0.0", [omaha.Event(3, 2, previous_version="1.0.0")],
                       check=False, kind="report"), self.released(index))
        if status != 200:
            raise RuntimeError(f"release: {status} {answer}")
        self.times.append((acquired, released))


def sample(url: str, stop: list, peaks: list, cpu: list, server: ServeProcess) -> None:
    """The most holders in the server's status every 50 ms; (time, this process's
    CPU seconds, the server's) with each sample."""
    session = requests.Session()
    while not stop:
        cpu.append((time.perf_counter(), time.process_time(), server.cpu_seconds()))
        groups = session.get(f"{url}/updates/v1/leases", timeout=30).json()["groups"]
        peaks.append(max((len(g["holders"]) for g in groups if g["group"] == GROUP),
                         default=0))
        time.sleep(0.05)


async def main_async(args, server: ServeProcess, fleet
                     ) -> tuple[float, float, Rollout, list[int], list]:
    rollout = Rollout(Http(server.url, args.in_flight), fleet, args.reboot, args.poll_rate,
                      args.wait, args.shared_lease_gate)
    stop: list = []
    peaks: list[int] = []
    cpu: list[tuple[float, float, float]] = []
    sampler = asyncio.get_running_loop().run_in_executor(
        None, sample, server.url, stop, peaks, cpu, server)
    began = time.perf_counter()
    results = await asyncio.gather(*(rollout.host(i, 2.0) for i in range(len(fleet))),
                                   return_exceptions=True)
    wall = time.perf_counter() - began
    stop.append(True)
    await sampler
    rollout.errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return began, wall, rollout, peaks, cpu


def round_gaps(times: list[tuple[float, float]], maximum: int, sort: bool = True
               ) -> list[float]:
    """From the k-th reboot's end to the (N+k)-th grant - the grant that took the slot
    the k-th holder gave back (holders are at N throughout the rollout); sorted, or in
    the order of the rounds."""
    grants = sorted(a for a, _ in times)
    ends = sorted(r for _, r in times)
    gaps = [max(0.0, grant - end) for grant, end in zip(grants[maximum:], ends,
                                                          strict=False)]
    return sorted(gaps) if sort else gaps


def _ms(values: list[float]) -> str:
    values = sorted(values)
    if not values:
        return "-"
    return (f"median {statistics.median(values) * 1000:.0f} ms, p90 "
            f"{values[int(len(values) * 0.9)] * 1000:.0f} ms")


def start_figures(rollout: Rollout, began: float, maximum: int, cpu: list) -> None:
    """Where the start of the roll-out goes: when the storm of first checks and events
    is answered, when the first grants come, how long each kind of request of the
    first 5 rounds waited for the client's gate and for the server, and how busy
    both processes were meanwhile."""
    grants = sorted(a for a, _ in rollout.times)
    if len(grants) < 5 * maximum:
        return
    trace = rollout.http.trace
    done = {kind: max((t[4] for t in trace if t[0] == kind), default=began)
            for kind in ("check", "events")}
    print(f"start (s after the first host began): {maximum}th grant "
          f"{grants[maximum - 1] - began:.1f} (1st {grants[0] - began:.1f}); "
          f"last first-check answered "
          f"{done['check'] - began:.1f}, last events answered {done['events'] - began:.1f};"
          f" {5 * maximum}th grant {grants[5 * maximum - 1] - began:.1f}")
    early = grants[5 * maximum - 1]
    for kind in ("check", "events", "held", "poll", "release", "report"):
        rows = [t for t in trace if t[0] == kind and t[2] <= early]
        if rows:
            print(f"  {kind:8} x{len(rows):5} queued before it: client gate "
                  f"{_ms([t[3] - t[2] for t in rows])}; on the wire (server) "
                  f"{_ms([t[4] - t[3] for t in rows])}")
    storm = [c for c in cpu if c[0] <= done["events"]]
    if len(storm) >= 2:
        wall = storm[-1][0] - storm[0][0]
        print(f"  CPU while the storm lasts ({wall:.1f} s): this client process "
              f"{(storm[-1][1] - storm[0][1]) / wall:.0%} of a core, the server "
              f"{(storm[-1][2] - storm[0][2]) / wall:.0%} (2 cores shared: "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--max", type=int, default=50)
    parser.add_argument("--reboot", type=float, default=2.0, help="seconds (R)")
    parser.add_argument("--poll-rate", type=float, default=150.0)
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT,
                        help="short requests open at once, all simulated hosts together")
    parser.add_argument("--wait", type=float, default=25.0,
                        help="seconds the server may hold an acquire (0: poll only)")
    parser.add_argument("--shared-lease-gate", action="store_true",
                        help="lease polls and releases wait for the Omaha requests' "
                        "--in-flight connections (behind the storm of first checks)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work, ServeProcess(Path(work)) as server:
        fleet = seed(server.url, Path(work), args.hosts, args.max)
        began, wall, rollout, peaks, cpu = asyncio.run(main_async(args, server, fleet))
    bound = math.ceil(args.hosts / args.max) * args.reboot
    first = min(a for a, _ in rollout.times) if rollout.times else 0.0
    last = max(r for _, r in rollout.times) if rollout.times else 0.0
    # the most hosts between acquire and release at once, from the clients' own times
    edges = sorted([(a, 1) for a, _ in rollout.times] + [(r, -1) for _, r in rollout.times])
    overlap = peak = 0
    for _, step in edges:
        overlap += step
        peak = max(peak, overlap)
    print(f"{len(rollout.times)} of {args.hosts} hosts updated, {len(rollout.errors)} "
          f"errors{': ' + rollout.errors[0] if rollout.errors else ''}")
    print(f"rollout {wall:.1f} s (leases {last - first:.1f} s) against the bound "
          f"ceil(M/N)*R = {bound:.1f} s: {wall / bound:.3f}x (leases "
          f"{(last - first) / bound:.3f}x; target <= 1.1x)")
    gaps = round_gaps(rollout.times, args.max)
    if gaps:
        print(f"per lease round, a reboot's end -> the next grant of its slot "
              f"(release request + waiting for a waiter's acquire): median "
              f"{statistics.median(gaps) * 1000:.0f} ms, p90 "
              f"{gaps[int(len(gaps) * 0.9)] * 1000:.0f} ms, max {gaps[-1] * 1000:.0f} ms; "
              f"idle slot-seconds {sum(gaps):.0f} = {sum(gaps) / args.max:.1f} s of the "
              f"rollout")
        ordered = round_gaps(rollout.times, args.max, sort=False)
        early = sum(ordered[:5 * args.max])
        print(f"  idle slot-seconds in the first 5 rounds (while the hosts' "
              f"{2 * args.hosts} first Omaha requests load the server): {early:.0f}; in "
              f"the other rounds: {sum(ordered) - early:.0f}")
        latency = sorted(rollout.release_latency)
        print(f"  of which the release request itself (a reboot's end -> its answer): "
              f"median {statistics.median(latency) * 1000:.0f} ms, p90 "
              f"{latency[int(len(latency) * 0.9)] * 1000:.0f} ms")
    start_figures(rollout, began, args.max, cpu)
    print(f"most holders: {max(peaks, default=0)} in {len(peaks)} samples of the server's "
          f"status, {peak} from the clients' own times (max {args.max})")
    return 0 if not rollout.errors and max(peaks, default=0) <= args.max else 1


if __name__ == "__main__":
    sys.exit(main())
