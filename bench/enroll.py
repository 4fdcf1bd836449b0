"""Bulk enrolment speed: ``metalcast node enroll`` of an N-node file against a real server.

Starts ``metalcast serve`` (SQLite, fake hardware) on a free loopback port, writes
a YAML file of N nodes with two MACs each, and times the CLI three ways: a dry
run, the real enrolment, and an idempotent re-run (everything already exists).

    python bench/enroll.py --nodes 1000
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import ServeProcess


def _write_file(path: Path, count: int) -> None:
    lines = ["nodes:"]
    for i in range(count):
        lines += [f"  - name: bench-{i:05d}", "    driver: fake-hardware",
                  "    driver_info: {ipmi_address: 10.1.0.1, ipmi_password: pw}",
                  "    ports:",
                  f"      - address: 52:54:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01",
                  f"      - address: 52:54:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:02"]
    path.write_text("\n".join(lines) + "\n")


def _timed(cli: list[str]) -> tuple[float, str]:
    start = time.monotonic()
    done = subprocess.run(cli, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cli)} failed:\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="metalcast-bench-") as tmp, \
            ServeProcess(Path(tmp) / "data") as server:
        nodes_file = Path(tmp) / "nodes.yaml"
        _write_file(nodes_file, args.nodes)
        metalcast = str(Path(sys.executable).with_name("metalcast"))
        base = [metalcast, "--url", server.url, "node", "enroll", str(nodes_file),
                "--format", "value"]
        rows = []
        for label, extra in (("dry run", ["--dry-run"]), ("enrol", []), ("re-run", [])):
            cpu_before = server.cpu_seconds()
            seconds, out = _timed(base + extra)
            statuses = sorted({line.split()[-1] for line in out.splitlines() if line.strip()})
            rows.append((label, seconds, args.nodes / seconds,
                         (server.cpu_seconds() - cpu_before) * 1000 / args.nodes, statuses))
    print(f"metalcast node enroll, {args.nodes} nodes x 2 ports (YAML), {os.cpu_count()} cores")
    print(f"{'run':<8} {'wall s':>8} {'nodes/s':>9} {'server CPU ms/node':>19}  statuses")
    for label, seconds, rate, cpu, statuses in rows:
        print(f"{label:<8} {seconds:8.2f} {rate:9.0f} {cpu:19.2f}  {','.join(statuses)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
