"""Patching benchmark (issue 6): upload+apply of a 50-RPM patch, query with 200
patches, query-hosts with 1000 reporting hosts, one host report at 1000 hosts.

    .venv/bin/python bench/patching.py [--rpms 50] [--patches 200] [--hosts 1000]

Upload, apply and query go through a real `metalcast serve` over HTTP (the
/patching/v1 API, what `sw-patch` calls), with real RPMs from rpmbuild and a real
createrepo_c. Host reports are fed to a PatchController in this process (the same
object the heartbeat path calls) on the server's own database, each host out of
date on a few packages; query-hosts is timed as controller call + JSON encoding,
and over HTTP from the server, which reads the hosts from that database.
Targets: upload+apply <= 2 s; query-hosts <= 100 ms; one host report <= 5 ms at
1000 hosts.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._server import ServeProcess
from conductor.db.engine import make_engine
from conductor.db.patch_hosts import PatchHostRows
from conductor.patching import archive, hosts, signing
from conductor.patching import metadata as md
from conductor.patching.controller import PatchController

SPEC_HEAD = """Name: benchbase
Version: {version}
Release: 1
Summary: bench
License: MIT
BuildArch: noarch
AutoReqProv: no
%description
bench
%files
"""
SUBPACKAGE = """%package -n {name}
Summary: {name}
%description -n {name}
{name}
%files -n {name}
/usr/share/bench/{name}
"""
#: Each sub-package carries 64 KiB of incompressible data (a 50-RPM patch ~3 MiB).
INSTALL = """%install
mkdir -p %{{buildroot}}/usr/share/bench
for n in {names}; do head -c 65536 /dev/urandom > %{{buildroot}}/usr/share/bench/$n; done
"""


def build_rpms(work: Path, prefix: str, count: int, version: str) -> list[Path]:
    """``count`` noarch RPMs from one rpmbuild run (sub-packages of one spec)."""
    top = work / f"rpmbuild-{prefix}-{version}"
    (top / "SPECS").mkdir(parents=True)
    names = [f"{prefix}{i:03d}" for i in range(count)]
    spec = SPEC_HEAD.format(version=version) + INSTALL.format(names=" ".join(names)) + \
        "".join(SUBPACKAGE.format(name=name) for name in names)
    path = top / "SPECS" / "bench.spec"
    path.write_text(spec)
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}",
                    "--define", "_build_id_links none", str(path)],
                   check=True, capture_output=True)
    return sorted((top / "RPMS" / "noarch").glob(f"{prefix}*.rpm"))


def _timed(func, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - started, result


def bench_upload_apply(work: Path, url: str, data_dir: Path, rpm_count: int) -> None:
    key = data_dir / "patching" / "keys" / "formal-private-key.pem"
    feed = data_dir / "httpboot" / "feed" / "rel-1.0" / "Packages" / "noarch"
    feed.mkdir(parents=True, exist_ok=True)
    for rpm in build_rpms(work, "big", rpm_count, "1.0"):
        rpm.rename(feed / rpm.name)
    rpms = build_rpms(work, "big", rpm_count, "1.1")
    meta = md.PatchMetadata(id="BIG_0001", sw_version="1.0", status="REL",
                            reboot_required="N", contents=[r.name for r in rpms],
                            personalities={"controller": [f"big{i:03d}" for i in range(5)]})
    patch = archive.write(work, meta, rpms, {}, signing.load_private(key))
    with open(patch, "rb") as stream:
        up, reply = _timed(requests.post, f"{url}/patching/v1/upload",
                           files={"file": (patch.name, stream)}, timeout=300)
    assert reply.json()["error"] == "", reply.text
    ap, reply = _timed(requests.post, f"{url}/patching/v1/apply/BIG_0001", timeout=300)
    assert reply.json()["error"] == "", reply.text
    size = patch.stat().st_size / 2**20
    print(f"upload of a {rpm_count}-RPM patch ({size:.1f} MiB): {up * 1000:.0f} ms; "
          f"apply: {ap * 1000:.0f} ms; total {up + ap:.2f} s "
          f"[target <= 2 s: {'PASS' if up + ap <= 2 else 'FAIL'}]")


def bench_query(work: Path, url: str, data_dir: Path, count: int) -> None:
    key = signing.load_private(data_dir / "patching" / "keys" / "formal-private-key.pem")
    rpms = build_rpms(work, "many", count, "1.1")
    drop = work / "many"
    drop.mkdir()
    for i, rpm in enumerate(rpms):
        meta = md.PatchMetadata(id=f"MANY_{i:04d}", sw_version="1.0", status="DEV",
                                contents=[rpm.name], summary=f"bench patch {i}")
        archive.write(drop, meta, [rpm], {}, key)
    up, reply = _timed(requests.post, f"{url}/patching/v1/upload_dir",
                       params={"dir0": str(drop)}, timeout=600)
    assert reply.json()["error"] == "", reply.text[:500]
    times = []
    for _ in range(20):
        elapsed, reply = _timed(requests.get, f"{url}/patching/v1/query", timeout=60)
        times.append(elapsed)
    patches = len(reply.json()["pd"])
    cli, _ = _timed(subprocess.run, [str(Path(sys.executable).with_name("sw-patch")),
                                     "--url", url, "query"], capture_output=True, check=True)
    print(f"upload_dir of {count} patches: {up:.1f} s; query with {patches} patches: "
          f"median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
          f"(HTTP); `sw-patch query` end to end {cli * 1000:.0f} ms")


def _report(rng: random.Random, index: int, packages: list[str]) -> hosts.HostReport:
    behind = rng.random() < 0.5
    installed = {name: "1.0-1@noarch" for name in rng.sample(packages, 5)} if behind else {}
    kinds = ("controller", "worker", "storage")
    return hosts.HostReport(hostname=f"host-{index:04d}", ip=f"10.0.{index // 250}.{index % 250}",
                            nodetype=kinds[index % 3], subfunctions=[kinds[index % 3]],
                            sw_version="1.0", out_of_date=behind, installed=installed)


def bench_hosts(work: Path, url: str, data_dir: Path, count: int) -> None:
    engine = make_engine(f"sqlite:///{data_dir / 'metalcast.sqlite'}")  # the server's
    ctl = PatchController(data_dir / "patching", data_dir / "patching" / "trusted", "1.0",
                          host_rows=PatchHostRows(engine), web_root=data_dir / "httpboot")
    packages = [f"big{i:03d}" for i in range(50)] + [f"many{i:03d}" for i in range(200)]
    rng = random.Random(5)
    reports = [_report(rng, i, packages) for i in range(count)]
    started = time.perf_counter()
    for report in reports:
        ctl.report_host(report)
    first = time.perf_counter() - started
    times = []
    for report in rng.sample(reports, 200):
        elapsed, _ = _timed(ctl.report_host, report)
        times.append(elapsed)
    times.sort()
    print(f"host report at {count} hosts ({len(ctl.patches)} patches): median "
          f"{statistics.median(times) * 1000:.2f} ms, p99 {times[int(len(times) * .99)] * 1000:.2f}"
          f" ms [target <= 5 ms: {'PASS' if times[int(len(times) * .99)] <= 0.005 else 'FAIL'}]"
          f"; first reports of {count} new hosts (a row each): {first:.2f} s")
    changed = []      # a report that changes something writes the host's row
    for report in rng.sample(reports, 200):
        flipped = dataclasses.replace(report, node_is_patched=not report.node_is_patched)
        elapsed, _ = _timed(ctl.report_host, flipped)
        changed.append(elapsed)
    print(f"changed host report (row written): median "
          f"{statistics.median(changed) * 1000:.2f} ms")
    qh = []
    for _ in range(20):
        elapsed, body = _timed(lambda: json.dumps({"data": ctl.query_hosts()}))
        qh.append(elapsed)
    print(f"query-hosts at {count} hosts (controller + JSON, {len(body) / 1024:.0f} KiB): "
          f"median {statistics.median(qh) * 1000:.1f} ms "
          f"[target <= 100 ms: {'PASS' if statistics.median(qh) <= 0.1 else 'FAIL'}]")
    over_http = []
    for _ in range(20):
        elapsed, reply = _timed(requests.get, f"{url}/patching/v1/query_hosts", timeout=60)
        over_http.append(elapsed)
    shown = len(reply.json()["data"])
    print(f"query-hosts over HTTP from the server ({shown} hosts read from the database): "
          f"median {statistics.median(over_http) * 1000:.1f} ms")
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rpms", type=int, default=50)
    parser.add_argument("--patches", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=1000)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="metalcast-bench-patching-") as tmp:
        work, data = Path(tmp) / "work", Path(tmp) / "data"
        work.mkdir()
        subprocess.run([str(Path(sys.executable).with_name("metalcast")), "patch", "keygen",
                        "--data-dir", str(data)], check=True, capture_output=True)
        with ServeProcess(data) as server:
            bench_upload_apply(work, server.url, data, args.rpms)
            bench_query(work, server.url, data, args.patches)
            bench_hosts(work, server.url, data, args.hosts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
