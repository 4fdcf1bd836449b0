"""Control-plane throughput of one ``metalcast serve`` process, against Ironic's figures.

For each N this starts a fresh server (temporary data dir, free port), drives N
``fake-hardware`` nodes through the whole life cycle over HTTP with ``--threads``
client threads (one keep-alive ``requests.Session`` per thread), and prints per
phase: wall time, nodes/s, server CPU ms per node (utime+stime of the server PID
from /proc) and client CPU ms per node (this process, to show when the client is
the limit). Then the ``GET /v1/nodes/detail`` and ``GET /v1/nodes`` latency
(median of ``--list-runs``; the API pages at 1000, so at N >= 1000 that is one
1000-node page) and the server's VmRSS / VmHWM after the run.

Phases, in order: enroll (POST /v1/nodes + POST /v1/ports), manage, provide,
deploy (PATCH instance_info/image_source + PUT active), power off, power on (the
power target is checked on *each* of the two), undeploy (deleted -> available),
delete (DELETE /v1/nodes/{uuid}). 409 (NodeLocked) and 503 (worker pool full or
concurrent-clean limit) are retried with a short backoff, as real clients do;
the retries are counted and shown.

How a phase ends. The client threads first send every node's request; once all
were accepted (201/202/204) one thread confirms the outcome with the short
list, ``GET /v1/nodes?fields=uuid,provision_state,...&limit=1000`` in id order,
advancing a marker past the prefix of nodes already confirmed and re-polling
from it (after 5 ms) at the first node not yet there. A failed state or a
last_error aborts the run. Why not per-node ``GET /v1/nodes/{uuid}`` as the SDK's
wait loop does: with instant fake hardware almost every node is done by the time
it is polled, so that would add one request per node per phase (measured: a
third to a half of the action's own server CPU) and measure the poll rather than
the action; the paged list confirms up to 1000 nodes per request (~10 ms), so a
phase needs a handful of polls (column "polls"), well under 1% of its server
CPU, and polling cannot hide a slow node. Phase time runs from the first
request to the last confirmation.

Usage: .venv/bin/python bench/control_plane.py [--nodes 100,1000,5000]
       [--threads 8] [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import ServeProcess

HEADERS = {"X-OpenStack-Ironic-API-Version": "latest", "Accept": "application/json"}
CHECK_FIELDS = "uuid,provision_state,power_state,target_power_state,last_error"
PAGE = 1000

#: Ironic 39 (standalone, fake-hardware) on this kind of machine, nodes/s.
IRONIC = {"enroll": 14, "manage": 14, "provide": 4.7, "deploy": 3.9, "power": 11}
IRONIC_DETAIL_1000_S = 0.65
IRONIC_RSS_MIB = "300-390"
RATIO = 10
TARGET_DETAIL_MS = 65
TARGET_RSS_MIB = 150


# -- the server under test ----------------------------------------------------------
class Server(ServeProcess):
    """One ``metalcast serve`` child in its own temporary data dir; stopped by PID."""

    def __init__(self):
        super().__init__(Path(tempfile.mkdtemp(prefix="metalcast-bench-")))

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


# -- the client ----------------------------------------------------------------------
class BenchError(Exception):
    pass


class Api:
    """Keep-alive session per thread; retries 409/503 with a short backoff."""

    def __init__(self, url: str):
        self.url = url
        self._local = threading.local()
        self.retries = 0
        self._lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(HEADERS)
        return session

    def call(self, method: str, path: str, body=None, ok=(200,)):
        for attempt in range(400):
            response = self.session.request(method, self.url + path, json=body, timeout=120)
            if response.status_code in ok:
                return response.json() if response.content else None
            if response.status_code not in (409, 503):
                raise BenchError(f"{method} {path} -> {response.status_code} {response.text}")
            with self._lock:
                self.retries += 1
            time.sleep(min(0.002 * 2 ** attempt, 0.05))
        raise BenchError(f"{method} {path}: still {response.status_code} after retries")


def wait_all(api: Api, done, expected: int) -> int:
    """Confirm via the paged short list that every node is ``done``; returns polls made."""
    marker, confirmed, polls = None, 0, 0
    while True:
        path = f"/v1/nodes?fields={CHECK_FIELDS}&limit={PAGE}"
        page = api.call("GET", path + (f"&marker={marker}" if marker else ""))["nodes"]
        polls += 1
        for node in page:
            state = node["provision_state"] or ""
            if node["last_error"] or state.endswith("failed") or state == "error":
                raise BenchError(f"node {node['uuid']} failed: {state}: {node['last_error']}")
            if not done(node):
                time.sleep(0.005)
                break
            confirmed, marker = confirmed + 1, node["uuid"]
        else:
            if len(page) < PAGE:
                if confirmed != expected:
                    raise BenchError(f"confirmed {confirmed} nodes, expected {expected}")
                return polls


# -- phases: (name, per-node action, completion test or None) -------------------------
def enroll(api: Api, i: int) -> str:
    node = api.call("POST", "/v1/nodes", {"driver": "fake-hardware", "name": f"bench-{i}"},
                    ok=(201,))
    mac = "52:54:%02x:%02x:%02x:%02x" % tuple((i >> s) & 0xFF for s in (24, 16, 8, 0))
    api.call("POST", "/v1/ports", {"address": mac, "node_uuid": node["uuid"]}, ok=(201,))
    return node["uuid"]


def provision(target: str):
    def action(api: Api, uuid: str):
        api.call("PUT", f"/v1/nodes/{uuid}/states/provision", {"target": target}, ok=(202,))
    return action


def deploy(api: Api, uuid: str) -> None:
    patch = [{"op": "add", "path": "/instance_info/image_source",
              "value": "http://images.example/bench.qcow2"}]
    api.call("PATCH", f"/v1/nodes/{uuid}", patch)
    provision("active")(api, uuid)


def power(target: str):
    def action(api: Api, uuid: str):
        api.call("PUT", f"/v1/nodes/{uuid}/states/power", {"target": target}, ok=(202,))
    return action


def delete(api: Api, uuid: str) -> None:
    api.call("DELETE", f"/v1/nodes/{uuid}", ok=(204,))


def state_is(state: str):
    return lambda node: node["provision_state"] == state


def power_is(state: str):
    return lambda node: node["power_state"] == state and node["target_power_state"] is None


PHASES = [
    ("manage", "manage", provision("manage"), state_is("manageable")),
    ("provide", "provide", provision("provide"), state_is("available")),
    ("deploy", "deploy", deploy, state_is("active")),
    ("power off", "power", power("power off"), power_is("power off")),
    ("power on", "power", power("power on"), power_is("power on")),
    ("undeploy", None, provision("deleted"), state_is("available")),
    ("delete", None, delete, None),
]


# -- running ---------------------------------------------------------------------------
def timed(server: Server, api: Api, pool, n: int, run) -> dict:
    """Run ``run()`` and measure wall, server CPU and client CPU for n nodes."""
    retries0, cpu0 = api.retries, server.cpu_seconds()
    client0, wall0 = time.process_time(), time.perf_counter()
    extra = run()
    wall = time.perf_counter() - wall0
    return {"wall_s": wall, "nodes_per_s": n / wall,
            "server_cpu_ms_per_node": (server.cpu_seconds() - cpu0) * 1000 / n,
            "client_cpu_ms_per_node": (time.process_time() - client0) * 1000 / n,
            "retries": api.retries - retries0, **(extra or {})}


def run_phase(api: Api, pool, uuids: list[str], action, done) -> dict:
    list(pool.map(lambda u: action(api, u), uuids))
    if done is None:
        if api.call("GET", "/v1/nodes?limit=1")["nodes"]:
            raise BenchError("nodes left after delete")
        return {"polls": 1}
    return {"polls": wait_all(api, done, len(uuids))}


def list_latency(api: Api, path: str, runs: int) -> dict:
    session = api.session
    times, count = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        response = session.get(api.url + path, timeout=120)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
        count = len(response.json()["nodes"])
    return {"median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000,
            "nodes": count, "bytes": len(response.content)}


def run_one(n: int, threads: int, list_runs: int) -> dict:
    """One fresh server, N nodes through every phase; a failure ends the run early."""
    server = Server()
    pool = ThreadPoolExecutor(threads, "bench-client")
    result = {"nodes": n, "threads": threads, "phases": {}}
    try:
        server.start()
        api = Api(server.url)
        uuids: list[str] = []

        def do_enroll():
            uuids.extend(pool.map(lambda i: enroll(api, i), range(n)))
        result["phases"]["enroll+port"] = timed(server, api, pool, n, do_enroll)
        for name, _, action, done in PHASES:
            if name == "undeploy":  # nodes are active with instance_info: richest rows
                result["detail"] = list_latency(api, "/v1/nodes/detail", list_runs)
                result["list"] = list_latency(api, "/v1/nodes", list_runs)
            result["phases"][name] = timed(server, api, pool, n, lambda a=action, d=done: run_phase(
                api, pool, uuids, a, d))
    except BenchError as exc:
        result["error"] = str(exc)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if server.proc is not None and server.proc.poll() is None:
            result["memory_mib"] = server.memory_mib()
            result["server_cpu_s_total"] = server.cpu_seconds()
        server.stop()
    return result


# -- reporting -----------------------------------------------------------------------
def phase_key(name: str) -> str | None:
    if name == "enroll+port":
        return "enroll"
    return next((key for phase, key, _, _ in PHASES if phase == name), None)


def verdicts(result: dict) -> list[tuple[str, str, str, bool]]:
    """(target, wanted, measured, passed) for every target that applies at this N."""
    rows = []
    for key, name in (("enroll", "enroll+port"), *((k, p) for p, k, _, _ in PHASES if k)):
        phase = result["phases"].get(name)
        want = IRONIC[key] * RATIO
        got = phase["nodes_per_s"] if phase else 0
        rows.append((f"{name} nodes/s", f">= {want:g}", f"{got:.0f}" if phase else "not run",
                     got >= want))
    detail = result.get("detail")
    if detail is None or detail["nodes"] >= 1000:
        got = detail["median_ms"] if detail else float("inf")
        rows.append(("detail list, 1000 nodes", f"<= {TARGET_DETAIL_MS} ms",
                     f"{got:.1f} ms", got <= TARGET_DETAIL_MS))
    if result["nodes"] >= 5000:
        rss = result.get("memory_mib", {}).get("VmRSS", float("inf"))
        rows.append(("RSS after run", f"<= {TARGET_RSS_MIB} MiB", f"{rss:.0f} MiB",
                     rss <= TARGET_RSS_MIB and "error" not in result))
    return rows


def report(result: dict) -> None:
    print(f"\n=== N = {result['nodes']} nodes, {result['threads']} client threads ===")
    print(f"{'phase':<12} {'wall s':>8} {'nodes/s':>9} {'srv CPU ms/node':>16} "
          f"{'cli CPU ms/node':>16} {'retries':>8} {'polls':>6} {'Ironic/s':>9} {'ratio':>7}")
    for name, p in result["phases"].items():
        ref = IRONIC.get(phase_key(name))
        ratio = f"{p['nodes_per_s'] / ref:.0f}x" if ref else "-"
        print(f"{name:<12} {p['wall_s']:8.2f} {p['nodes_per_s']:9.0f} "
              f"{p['server_cpu_ms_per_node']:16.2f} {p['client_cpu_ms_per_node']:16.2f} "
              f"{p['retries']:8d} {p.get('polls', '-'):>6} {ref or '-':>9} {ratio:>7}")
    if "error" in result:
        print(f"RUN FAILED: {result['error']}")
    for path, key in (("/v1/nodes/detail", "detail"), ("/v1/nodes", "list")):
        if key in result:
            d = result[key]
            ironic = (f" (Ironic, 1000 nodes: {IRONIC_DETAIL_1000_S * 1000:.0f} ms)"
                      if key == "detail" else "")
            print(f"GET {path:<16} ({d['nodes']} nodes/page, {d['bytes'] / 1e6:.2f} MB): "
                  f"median {d['median_ms']:.1f} ms, min {d['min_ms']:.1f} ms{ironic}")
    if "memory_mib" in result:
        m = result["memory_mib"]
        print(f"server memory after run: VmRSS {m['VmRSS']:.0f} MiB, VmHWM (peak) "
              f"{m['VmHWM']:.0f} MiB (Ironic: {IRONIC_RSS_MIB} MiB)")
    for target, want, got, passed in verdicts(result):
        print(f"  {'PASS' if passed else 'MISS'}  {target:<24} {want:>12}  measured {got}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="100,1000,5000",
                        help="comma-separated node counts (default 100,1000,5000)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--list-runs", type=int, default=10,
                        help="runs of each list request; the median is shown (default 10)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    # Both run the finally blocks that stop the server (SIGINT even if inherited ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print("Reference, Ironic 39 (fake-hardware): " + ", ".join(
        f"{k} {v}/s" for k, v in IRONIC.items()) + f"; detail list of 1000 nodes "
        f"{IRONIC_DETAIL_1000_S} s; RSS {IRONIC_RSS_MIB} MiB. Targets: >= {RATIO}x each "
        f"throughput, detail(1000) <= {TARGET_DETAIL_MS} ms, RSS <= {TARGET_RSS_MIB} MiB "
        "at 5000 nodes.")
    results = []
    for n in (int(x) for x in args.nodes.split(",")):
        results.append(run_one(n, args.threads, args.list_runs))
        report(results[-1])
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    failed = [t for r in results for t, _, _, ok in verdicts(r) if not ok]
    print(f"\n{'ALL TARGETS PASS' if not failed else f'{len(failed)} target(s) MISSED'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
