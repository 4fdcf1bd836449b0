"""Image write throughput: the agent's streaming writer vs ``curl | dd oflag=direct``.

A random raw image (``--size-mib``, default 1024) kept in tmpfs (``--image-dir``,
default /dev/shm, so the "network" side is memory, as a real image server's cache
would be) is served over loopback HTTP by ``virtlab.imageserver`` (sendfile,
separate process) and written, from a dropped page cache each time, to

* a plain file (sparse, pre-created), and
* a loop device (``losetup`` on a sparse file; detached afterwards; needs root),

by three methods, ``--runs`` times each, in an order that rotates each round, after
one unmeasured warm-up write (so no method pays for allocating the sparse file):

* ``agent``: ``ramdisk_agent.ramdisk.imagewrite.stream_raw`` (sha256 on the fly, O_DIRECT,
  fsync) — exactly what ``write_image`` runs;
* ``curl|tee(sha256sum)|dd``: the same work done by the reference tools;
* ``curl|dd``: the plain pipeline (no hash), ``bs=4M oflag=direct iflag=fullblock
  conv=fsync``.

Prints MB/s (best and median) per target and method, the CPU seconds per GiB the
writing side used (user+system of this process's threads or of the curl/tee/dd
children; the image server and the kernel's loop worker are not counted), and the
agent / reference ratios. Every agent digest is checked against the image's
sha256. Wall-clock figures on a shared 2-core machine are noisy (see the load
average printed before and after); the CPU figures are steadier.

Usage: sudo .venv/bin/python bench/image_write.py [--size-mib 1024] [--runs 3]
       [--dir /var/tmp] [--image-dir /dev/shm]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ramdisk_agent.ramdisk.imagewrite import stream_raw
from virtlab.process import start_ready, stop


def make_image(path: Path, size_mib: int) -> str:
    hasher = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size_mib):
            chunk = block[i % 251:] + block[:i % 251]   # distinct MiBs, cheap to make
            hasher.update(chunk)
            f.write(chunk)
    return hasher.hexdigest()


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def cpu_seconds() -> float:
    """CPU used so far by this process (all threads) and its waited-for children."""
    me, kids = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.user + me.system + kids.ru_utime + kids.ru_stime


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the writer side) for one run."""
    drop_caches()
    cpu, start = cpu_seconds(), time.monotonic()
    fn()
    return time.monotonic() - start, cpu_seconds() - cpu


def run_agent(url: str, target: str, digest: str) -> None:
    result = stream_raw(url, target, "sha256")
    if result.digest != digest:
        raise SystemExit(f"agent digest mismatch on {target}")
    if not result.direct_io:
        print(f"  note: O_DIRECT not used on {target}")


def run_shell(cmd: str) -> None:
    subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], check=True)


def methods(url: str, digest: str, workdir: Path) -> dict:
    dd = "dd of={t} bs=4M oflag=direct iflag=fullblock conv=fsync,notrunc status=none"
    sumfile = workdir / "ref.sha256"
    return {
        "agent": lambda t: run_agent(url, t, digest),
        "curl|tee(sha256sum)|dd": lambda t: run_shell(
            f"curl -sf {url} | tee >(sha256sum > {sumfile}) | " + dd.format(t=t)),
        "curl|dd": lambda t: run_shell(f"curl -sf {url} | " + dd.format(t=t)),
    }


def bench_target(label: str, target: str, size: int, runs: int, table: dict) -> None:
    results: dict[str, list[float]] = {name: [] for name in table}
    cpu: dict[str, list[float]] = {name: [] for name in table}
    table["curl|dd"](target)     # warm-up, unmeasured: every measured run overwrites
    names = list(table)          # allocated blocks; the order rotates each round
    for round_ in range(runs):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            fn = table[name]
            wall, used = timed(lambda fn=fn: fn(target))
            results[name].append(size / wall / 1e6)
            cpu[name].append(used / (size / 2**30))
    print(f"\n{label} ({target}):")
    for name, rates in results.items():
        print(f"  {name:26s} best {max(rates):5.0f} MB/s  median "
              f"{statistics.median(rates):5.0f} MB/s  CPU {statistics.median(cpu[name]):4.2f} s/GiB"
              f"  runs {', '.join(f'{r:.0f}' for r in rates)}")
    agent = statistics.median(results["agent"])
    for ref in ("curl|tee(sha256sum)|dd", "curl|dd"):
        print(f"  ratio agent / {ref:22s} {agent / statistics.median(results[ref]):.2f} (median)"
              f"   {max(results['agent']) / max(results[ref]):.2f} (best)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="agent image write vs curl|dd")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default="/var/tmp", help="where the target disks live")
    parser.add_argument("--image-dir", default="/dev/shm", help="where the image lives")
    args = parser.parse_args(argv)
    for tool in ("curl", "dd", "losetup"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (Debian packages curl / coreutils / mount)")
    workdir = Path(tempfile.mkdtemp(prefix="metalcast-imgbench-", dir=args.dir))
    imagedir = Path(tempfile.mkdtemp(prefix="metalcast-imgbench-", dir=args.image_dir))
    server = loop = None
    try:
        size = args.size_mib << 20
        digest = make_image(imagedir / "image.raw", args.size_mib)
        server, info, _ = start_ready(
            [sys.executable, "-m", "virtlab.imageserver", str(imagedir)], "IMAGESERVER ",
            30, "image server")
        url = info["url"] + "/image.raw"
        table = methods(url, digest, workdir)
        print(f"image {args.size_mib} MiB, sha256 {digest[:16]}..., {args.runs} runs, "
              f"page cache dropped before each run; load average {os.getloadavg()[0]:.1f}")
        disk_file = workdir / "disk-file.img"
        os.truncate(os.open(disk_file, os.O_CREAT | os.O_WRONLY), size * 2)
        bench_target("file", str(disk_file), size, args.runs, table)
        backing = workdir / "disk-loop.img"
        os.truncate(os.open(backing, os.O_CREAT | os.O_WRONLY), size * 2)
        loop = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                              capture_output=True, text=True).stdout.strip()
        bench_target("loop device", loop, size, args.runs, table)
        print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    finally:
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
        if server is not None:
            stop(server.pid, server)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(imagedir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
