"""What a node's DHCP entry costs in a shared dhcp-hostsdir (conductor/netboot/dhcp.py).

    python bench/dhcp_entries.py [--entries 1000]

With ``--entries`` host files in the directory, times one ``update`` per node that
points its MAC at a (new) boot server, as a takeover of that many network-booting
nodes does, and one ``remove`` per node: first finding each node's entries by
reading every host file (the reference, as before the owner index), then through
the owner index (conductor/netboot/dhcp_owners.py), both in this run. Prints the
totals, ms per node and the ratio. Target: a takeover of 1,000 network-booting nodes
adds well under the 5 s the issue allows beyond heartbeat_timeout + one interval.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conductor.drivers.boot.pxe import DhcpBootOptions
from conductor.netboot.dhcp import HostsDirDhcp
from conductor.netboot.dhcp_options import BootServer

SERVER = BootServer("127.0.0.3", "http://127.0.0.3:8080/boot.ipxe")


def _run(work: Path, count: int, indexed: bool) -> tuple[float, float]:
    provider = HostsDirDhcp(work / "hosts.d", work / "opts.d")
    nodes = [(str(uuid.uuid4()), f"02:00:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:"
                                 f"{i >> 8 & 255:02x}:{i & 255:02x}") for i in range(count)]
    for node, mac in nodes:                    # the entries the dead conductor wrote
        provider.update(node, [mac])
    if indexed:
        provider.validate()                    # builds owners.d from one scan
    start = time.perf_counter()
    for node, mac in nodes:
        provider.update(node, DhcpBootOptions(node, (mac,), "bios", SERVER.address,
                                              "undionly.kpxe", SERVER.ipxe_url, SERVER))
    updates = time.perf_counter() - start
    start = time.perf_counter()
    for node, _ in nodes:
        provider.remove(node)
    return updates, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1000)
    args = parser.parse_args()
    results = {}
    for label, indexed in (("every file read (reference)", False), ("owner index", True)):
        work = Path(tempfile.mkdtemp(prefix="mc-dhcp-bench-"))
        try:
            results[label] = _run(work, args.entries, indexed)
        finally:
            shutil.rmtree(work)
        updates, removes = results[label]
        print(f"{label:28s} {args.entries} updates {updates:7.2f} s "
              f"({updates / args.entries * 1000:6.2f} ms/node), removes {removes:7.2f} s "
              f"({removes / args.entries * 1000:6.2f} ms/node)")
    (ref_u, ref_r), (idx_u, idx_r) = results.values()
    print(f"owner index vs reference: updates {ref_u / idx_u:.1f}x faster, "
          f"removes {ref_r / idx_r:.1f}x faster")


if __name__ == "__main__":
    main()
