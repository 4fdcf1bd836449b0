"""The hash ring (conductor/cluster/): what it costs and how much it moves.

    python bench/hash_ring.py [--nodes 100000] [--page-nodes 1000]

Prints, for 3, 10 and 30 conductors: the ring's build time, lookups per second over
``--nodes`` node UUIDs, the spread of nodes per conductor, and the fraction of nodes
that move when one conductor dies or joins (ideal: 1/N). Then the price of a node's
``conductor`` field (API 1.49: the ring's choice) on a ``GET /v1/nodes/detail`` page
of ``--page-nodes`` nodes through the Flask app over SQLite: median of 15 pages at
1.48 (no field) and at latest (which adds later fields too), and the ring lookups of
that page alone. Figures only: no pass/fail.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conductor.cluster.hashring import HashRing


def ring_figures(nodes: list[str], conductors: int) -> None:
    names = [f"conductor-{i:02d}" for i in range(conductors)]
    started = time.perf_counter()
    ring = HashRing(names)
    built = time.perf_counter() - started
    started = time.perf_counter()
    owners = [ring.conductor_for(node) for node in nodes]
    rate = len(nodes) / (time.perf_counter() - started)
    counts = [owners.count(name) for name in names]
    fewer = HashRing(names[1:])
    moved_out = sum(1 for node, owner in zip(nodes, owners) if fewer.conductor_for(node) != owner)
    more = HashRing(names + ["newcomer"])
    moved_in = sum(1 for node, owner in zip(nodes, owners) if more.conductor_for(node) != owner)
    print(f"{conductors:3d} conductors: build {built * 1e3:6.2f} ms, {rate / 1e3:7.0f}k "
          f"lookups/s, nodes per conductor min/median/max {min(counts)}/"
          f"{int(statistics.median(counts))}/{max(counts)}; one dies: "
          f"{moved_out / len(nodes):.3f} move (1/N = {1 / conductors:.3f}), one joins: "
          f"{moved_in / len(nodes):.3f} move (1/(N+1) = {1 / (conductors + 1):.3f})")


def page_figures(count: int) -> None:
    from api import create_app
    from conductor import config
    from conductor.appliance import Appliance
    with tempfile.TemporaryDirectory() as data_dir:
        settings = config.from_options({"data_dir": data_dir, "pxe.enabled": False,
                                        "conductor.host": "bench-conductor"})
        appliance = Appliance(settings)
        appliance.start()
        try:
            for i in range(count):
                appliance.store.create_node({"driver": "fake-hardware", "name": f"n{i}"})
            client = create_app(appliance.service).test_client()
            for version in ("1.48", "latest"):
                headers = {"X-OpenStack-Ironic-API-Version": version}
                times = []
                for _ in range(15):
                    started = time.perf_counter()
                    body = client.get(f"/v1/nodes/detail?limit={count}", headers=headers)
                    times.append(time.perf_counter() - started)
                    assert body.status_code == 200
                shown = body.get_json()["nodes"][0].get("conductor", "(not shown)")
                print(f"GET /v1/nodes/detail, {count} nodes, version {version:6s}: median "
                      f"{statistics.median(times) * 1e3:6.1f} ms (conductor: {shown})")
            found = appliance.store.list_nodes(limit=count)
            started = time.perf_counter()
            for node in found:
                appliance.service.conductors.shown_conductor(node)
            print(f"the {count} nodes' conductor fields alone (ring lookups): "
                  f"{(time.perf_counter() - started) * 1e3:.1f} ms")
        finally:
            appliance.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--page-nodes", type=int, default=1000)
    args = parser.parse_args()
    nodes = [str(uuid.uuid4()) for _ in range(args.nodes)]
    for conductors in (3, 10, 30):
        ring_figures(nodes, conductors)
    page_figures(args.page_nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
