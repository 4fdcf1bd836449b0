"""Host patch engine: what a report and an install cost, against plain rpm/dnf.

Builds a lab like tests/functional/test_host_patching.py (busybox base package,
``--packages`` extra base packages, an update repo with one newer package, both
served over loopback HTTP) and times, ``--runs`` times each (median, best):

* ``rpm -qa``;
* the repos' packages read from their ``primary.xml.gz`` with the stdlib (what
  ``report()`` and ``install()`` plan from) against ``dnf repoquery --available``
  (the reference: what dnf itself takes to list them);
* the comps group fetch and the whole ``report()``;
* ``install()`` of one upgrade and of its downgrade, against the reference
  ``dnf upgrade``/``dnf downgrade`` command line doing the same package alone;
* a broken transaction (a ``%pre`` that exits 1) with its undo.

Usage: sudo .venv/bin/python bench/host_patching.py [--runs 5] [--packages 40]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ramdisk_agent.host import PatchEngine, repodata
from tests.functional import test_host_patching as lab_mod
from tests.functional.rpm_tools import build_rpm


def timed(fn, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--packages", type=int, default=40)
    args = parser.parse_args()
    lab_mod.require_tools()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lab = lab_mod.Lab(work)
        try:
            return run(lab, work, args)
        finally:
            lab.server.shutdown()
            lab.server.server_close()


def run(lab, work: Path, args) -> int:
    feed = lab.www / "feed" / "rel-1.0" / "Packages" / "noarch"
    extra = [build_rpm(work / "extra", f"filler{i:03d}") for i in range(args.packages)]
    for rpm in extra:
        (feed / rpm.name).write_bytes(rpm.read_bytes())
    subprocess.run(["createrepo_c", "-q", str(feed.parent.parent)], check=True)
    lab.base += extra
    url = lab.updates("bench", ["pkga-1.1"])
    root = lab.host(work / "host")
    engine = PatchEngine(root, base_repo_url=lab.base_url, updates_repo_url=url,
                         sw_version="1.0")
    runs = args.runs
    print(f"host with {len(lab.base)} packages, repos over {lab.server.url}, {runs} runs, "
          "median / best")
    rows = {
        "rpm -qa": timed(engine.tools.installed, runs),
        "primary.xml.gz read (engine)":
            timed(lambda: [repodata.packages(u) for u in (lab.base_url, url)], runs),
        "dnf repoquery (reference)": timed(engine.tools.available, runs),
        "comps group fetch": timed(lambda: repodata.group_packages(url, "updates-controller"),
                                   runs),
        "report()": timed(engine.report, runs),
    }
    installs, reference = [], []
    dnf = engine.tools.dnf_argv
    env = engine.tools._env()
    for _ in range(runs):
        lab.set_updates(url, ["pkga-1.1"])
        installs.append(timed(lambda: engine.install(force=True), 1)[0])
        lab.set_updates(url, [])
        installs.append(timed(lambda: engine.install(force=True), 1)[0])
        lab.set_updates(url, ["pkga-1.1"])
        for verb in ("upgrade", "downgrade"):
            argv = dnf("--refresh", verb, "pkga")
            reference.append(timed(lambda argv=argv: subprocess.run(argv, env=env, check=True,
                                                                    capture_output=True), 1)[0])
        lab.set_updates(url, [])
    rows["install() one package"] = (statistics.median(installs), min(installs))
    rows["dnf upgrade/downgrade CLI (reference)"] = (statistics.median(reference),
                                                     min(reference))
    lab.set_updates(url, ["pkga-1.1", "pkgb-1.1-bad"])
    rows["broken install + undo"] = timed(lambda: engine.install(force=True), 1)
    for name, (median, best) in rows.items():
        print(f"  {name:40s} {median * 1000:8.1f} ms  {best * 1000:8.1f} ms")
    dnf_query = rows["dnf repoquery (reference)"][0]
    print(f"  ratio primary.xml read / dnf repoquery: "
          f"{rows['primary.xml.gz read (engine)'][0] / dnf_query:.3f}")
    print(f"  ratio report() / dnf repoquery: {rows['report()'][0] / dnf_query:.3f}")
    cli = rows["dnf upgrade/downgrade CLI (reference)"][0]
    print(f"  ratio install() / dnf CLI alone: {rows['install() one package'][0] / cli:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
