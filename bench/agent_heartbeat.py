"""Ramdisk endpoint cost: lookup (token minted under the node lock) and heartbeat
(token, URL and certificate checks, recorded under the node lock) against a real
``metalcast serve`` (SQLite, fake power, deploy_interface ``direct``).

N nodes are put into ``wait call-back`` and into maintenance, so heartbeats are
recorded without driving an agent: the figure is the API + lock + database cost of
one heartbeat, which every agent pays every 90-180 s. The reference measured in the
same run is ``GET /v1/nodes/<uuid>`` (one read, no lock).

    python bench/agent_heartbeat.py --nodes 200 --clients 8
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import ServeProcess

LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}
AGENT = {"X-OpenStack-Ironic-API-Version": "1.68"}


def _call(session, method, url, ok, **kwargs):
    for _ in range(100):
        response = session.request(method, url, timeout=60, **kwargs)
        if response.status_code not in (409, 503):
            break
        time.sleep(0.05)
    if response.status_code not in ok:
        raise SystemExit(f"{method} {url}: {response.status_code} {response.text[:300]}")
    return response


def _prepare(base: str, count: int) -> list[str]:
    session, uuids = requests.Session(), []
    for i in range(count):
        node = _call(session, "POST", f"{base}/v1/nodes", (201,), headers=LATEST, json={
            "driver": "fake-hardware", "deploy_interface": "direct", "automated_clean": False,
            "instance_info": {"image_source": "file:///srv/disk.raw",
                              "image_os_hash_algo": "sha256",
                              "image_os_hash_value": "ab" * 32}}).json()
        _call(session, "POST", f"{base}/v1/ports", (201,), headers=LATEST, json={
            "node_uuid": node["uuid"],
            "address": f"52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"})
        uuids.append(node["uuid"])
    for target, state in (("manage", "manageable"), ("provide", "available"),
                          ("active", "wait call-back")):
        for uuid in uuids:
            _call(session, "PUT", f"{base}/v1/nodes/{uuid}/states/provision", (202,),
                  headers=LATEST, json={"target": target})
        for uuid in uuids:
            while _call(session, "GET", f"{base}/v1/nodes/{uuid}", (200,),
                        headers=LATEST).json()["provision_state"] != state:
                time.sleep(0.05)
    return uuids


def _timed_all(clients: int, jobs) -> list[float]:
    def one(job):
        start = time.perf_counter()
        job()
        return (time.perf_counter() - start) * 1000
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, jobs))


def _row(label: str, times: list[float], cpu_s: float, wall: float) -> tuple:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (label, len(times), len(times) / wall, statistics.median(ordered), p99,
            cpu_s * 1000 / len(times))


def _measure(server: ServeProcess, label: str, clients: int, jobs) -> tuple:
    cpu, start = server.cpu_seconds(), time.monotonic()
    times = _timed_all(clients, jobs)
    return _row(label, times, server.cpu_seconds() - cpu, time.monotonic() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="heartbeats per node")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="metalcast-bench-") as tmp, \
            ServeProcess(Path(tmp) / "data", ["--config-file", _config(Path(tmp))]) as server:
        base, session = server.url, requests.Session()
        uuids = _prepare(base, args.nodes)
        tokens: dict[str, str] = {}

        def lookup(uuid):
            body = _call(session, "GET", f"{base}/v1/lookup", (200,), headers=AGENT,
                         params={"node_uuid": uuid}).json()
            tokens[uuid] = body["config"]["agent_token"]
        rows = [_measure(server, "lookup (token minted)", args.clients,
                         [lambda u=u: lookup(u) for u in uuids])]
        for uuid in uuids:
            _call(session, "PUT", f"{base}/v1/nodes/{uuid}/maintenance", (202,),
                  headers=LATEST, json={"reason": "bench: record heartbeats only"})

        def beat(uuid):
            _call(session, "POST", f"{base}/v1/heartbeat/{uuid}", (202,), headers=AGENT,
                  json={"callback_url": f"https://10.0.0.1:9999/{uuid[:8]}",
                        "agent_token": tokens[uuid], "agent_version": "13.0.0"})
        jobs = [lambda u=u: beat(u) for u in uuids] * args.rounds
        rows.append(_measure(server, "heartbeat (recorded)", args.clients, jobs))
        reads = [lambda u=u: _call(session, "GET", f"{base}/v1/nodes/{u}", (200,),
                                   headers=LATEST) for u in uuids] * args.rounds
        rows.append(_measure(server, "GET node (reference)", args.clients, reads))
    print(f"{args.nodes} nodes, {args.clients} concurrent clients")
    print(f"{'request':24} {'count':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'server CPU ms/req':>18}")
    for label, count, rate, p50, p99, cpu in rows:
        print(f"{label:24} {count:6d} {rate:8.1f} {p50:8.2f} {p99:8.2f} {cpu:18.2f}")
    ref = rows[-1]
    print(f"heartbeat / GET node: p50 x{rows[1][3] / ref[3]:.2f}, "
          f"CPU x{rows[1][5] / ref[5]:.2f}")
    return 0


def _config(folder: Path) -> str:
    path = folder / "bench.conf"
    # No power sync or timeouts during the run: only the endpoints are measured.
    path.write_text("[conductor]\nsync_power_state_interval = 0\n"
                    "check_provision_state_interval = 3600\n")
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
