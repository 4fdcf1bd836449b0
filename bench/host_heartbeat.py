"""Host-mode heartbeat benchmark: what one host agent's heartbeat with its patching
report costs the conductor, over HTTP, with N adopted hosts reporting.

    .venv/bin/python bench/host_heartbeat.py [--hosts 200] [--packages 500] [--rounds 3]

A real ``metalcast serve``; N fake-hardware nodes adopted into ``active``, each
given its host-agent token by the vendor passthru ``issue_host_agent_token``
(stored hashed: each heartbeat costs a SHA-256 of its token); every node heartbeats
with a report of ``--packages`` installed packages (a typical host) until the
steady state (URL recorded, no database write). Timed from one client, in the
same run: a heartbeat with the report, the same heartbeat without a report
(token and URL checks only: the reference), and ``GET /v1/nodes/<uuid>``;
plus the server's CPU per heartbeat and query-hosts over HTTP at N hosts.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._server import ServeProcess

HEADERS = {"X-OpenStack-Ironic-API-Version": "1.68"}
LATEST = {"X-OpenStack-Ironic-API-Version": "latest"}


def _adopt(session: requests.Session, url: str, count: int) -> list[str]:
    uuids = []
    for index in range(count):
        node = session.post(f"{url}/v1/nodes", headers=LATEST, json={
            "driver": "fake-hardware", "name": f"host-{index:04d}"}).json()
        uuids.append(node["uuid"])
    for target, state in (("manage", "manageable"), ("adopt", "active")):
        for uuid in uuids:
            while session.put(f"{url}/v1/nodes/{uuid}/states/provision", headers=LATEST,
                              json={"target": target}).status_code == 409:
                time.sleep(0.05)
        for uuid in uuids:
            while True:
                node = session.get(f"{url}/v1/nodes/{uuid}", headers=LATEST).json()
                if node["provision_state"] == state and node["reservation"] is None:
                    break
                time.sleep(0.05)
    return uuids


def _report(packages: int) -> dict:
    return {"nodetype": "worker", "subfunctions": ["worker"], "sw_version": "1.0",
            "out_of_date": False, "state": "idle", "to_remove": [], "missing_pkgs": [],
            "duplicated_pkgs": {}, "node_is_patched": False, "patch_failed": False,
            "installed": {f"package{i:04d}": "1.0-1@x86_64" for i in range(packages)}}


def _timed_all(call, items) -> list[float]:
    times = []
    for item in items:
        start = time.perf_counter()
        call(item)
        times.append(time.perf_counter() - start)
    return sorted(times)


def _fmt(name: str, times: list[float]) -> str:
    return (f"{name}: median {statistics.median(times) * 1000:.2f} ms, "
            f"p99 {times[int(len(times) * .99)] * 1000:.2f} ms")


def run(server: ServeProcess, hosts: int, packages: int, rounds: int) -> None:
    session = requests.Session()
    url = server.url
    start = time.perf_counter()
    uuids = _adopt(session, url, hosts)
    print(f"{hosts} nodes enrolled and adopted in {time.perf_counter() - start:.1f} s")
    tokens = {}
    for uuid in uuids:
        reply = session.post(f"{url}/v1/nodes/{uuid}/vendor_passthru",
                             params={"method": "issue_host_agent_token"},
                             headers=LATEST).json()
        tokens[uuid] = reply["token"]
    report = _report(packages)

    def beat(uuid: str, with_report: bool = True) -> None:
        body = {"callback_url": "https://127.0.0.1:9999", "agent_token": tokens[uuid],
                "agent_version": "bench", "agent_mode": "host"}
        if with_report:
            body["patching"] = report
        response = session.post(f"{url}/v1/heartbeat/{uuid}", json=body, headers=HEADERS)
        assert response.status_code == 202, response.text

    _timed_all(beat, uuids)                         # first beats record the URL
    items = uuids * rounds
    cpu = server.cpu_seconds()
    with_report = _timed_all(beat, items)
    cpu_per_beat = (server.cpu_seconds() - cpu) / len(items)
    without = _timed_all(lambda u: beat(u, False), items)
    node_get = _timed_all(lambda u: session.get(f"{url}/v1/nodes/{u}", headers=LATEST),
                          items)
    print(_fmt(f"heartbeat + report of {packages} packages at {hosts} hosts", with_report)
          + f"; server CPU {cpu_per_beat * 1000:.2f} ms per heartbeat")
    print(_fmt("reference: heartbeat without a report", without))
    print(_fmt("reference: GET /v1/nodes/<uuid>", node_get))
    print(f"ratio heartbeat+report / heartbeat alone: "
          f"{statistics.median(with_report) / statistics.median(without):.2f}x; "
          f"/ node GET: {statistics.median(with_report) / statistics.median(node_get):.2f}x")
    query = _timed_all(lambda _: session.get(f"{url}/patching/v1/query_hosts"), range(20))
    shown = len(session.get(f"{url}/patching/v1/query_hosts").json()["data"])
    print(_fmt(f"query_hosts over HTTP ({shown} hosts)", query))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--packages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="metalcast-bench-hostbeat-") as tmp:
        with ServeProcess(Path(tmp) / "data") as server:
            run(server, args.hosts, args.packages, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
