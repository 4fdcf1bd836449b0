"""qcow2 write without a scratch copy: the agent's streaming converter vs qemu-img.

A qcow2 of ``--size-mib`` (default 1024) virtual MiB with ``--allocated`` percent
(default 50) of its clusters allocated is made by ``qemu-img convert -O qcow2`` from
a sparse raw file: random 512 KiB extents (8 clusters of 64 KiB) chosen by a seeded
shuffle, holding random bytes, so the data is NOT compressible (``--compress`` makes a
``-c`` image from half-compressible text instead). The qcow2 is kept in tmpfs
(``--image-dir``, default /dev/shm: page-cached for both methods), served over loopback
HTTP by ``virtlab.imageserver`` (a separate process, sendfile), and written to a loop
device (``losetup --direct-io=on`` on a sparse file, ``--loop-direct-io off`` for the
page-cached kind; needs root) by, ``--runs`` times each in an order
that rotates each round, after one unmeasured qemu-img warm-up write, with the page
cache dropped before each run:

* ``agent``: ``write_image`` (download, sha256 on the fly, one-pass conversion, O_DIRECT,
  zero ranges by BLKZEROOUT, fsync) in a child process: its time is the call's, its
  peak extra memory is VmHWM after the call minus VmRSS before it (the high-water mark
  reset through /proc/self/clear_refs), i.e. what the write added to a running agent;
* ``qemu-img``: ``qemu-img convert -f qcow2 -O raw -t none -n`` from the local copy
  to the same loop device (no download, no checksum); its time is the process's.

Prints each run, the medians, agent / qemu-img throughput (virtual bytes per second)
with the target (>= 0.9x) and the agent's peak extra memory with its target (<= 64 MiB),
qemu-img's own peak RSS for reference, and checks that the loop device holds
exactly what ``qemu-img convert -O raw`` makes of the image. Wall-clock figures on a
shared 2-core machine are noisy: the load average is printed before and after.

Usage: sudo .venv/bin/python bench/qcow2_write.py [--size-mib 1024] [--allocated 50]
       [--runs 3] [--compress] [--dir /var/tmp] [--image-dir /dev/shm]
       [--loop-direct-io on|off]
  (or: bench/image_write.py --format qcow2 [the same options])
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ramdisk_agent.ramdisk.imagewrite import ImageSpec, write_image
from virtlab.process import start_ready, stop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cache import drop_caches

MIB = 1 << 20
EXTENT = 512 << 10                 # allocated/unallocated granule: 8 clusters of 64 KiB
MEMORY_TARGET = 64                 # MiB of peak extra memory
RATIO_TARGET = 0.9                 # agent throughput / qemu-img's
FALLBACK = "cannot be converted while it downloads"


def make_images(raw: Path, qcow: Path, size_mib: int, allocated: int,
                compress: bool) -> str:
    """The sparse raw source and its qcow2; the sha256 of the raw (what the disk must hold)."""
    extents = size_mib * MIB // EXTENT
    chosen = set(random.Random(14).sample(range(extents), extents * allocated // 100))
    text = bytes(random.Random(15).choice(b"metalcast qcow2 bench ") for _ in range(EXTENT))
    hasher = hashlib.sha256()
    with open(raw, "wb") as f:
        f.truncate(size_mib * MIB)
        for index in range(extents):
            if index in chosen:
                data = os.urandom(EXTENT)
                if compress and index % 2:
                    data = text
                f.seek(index * EXTENT)
                f.write(data)
            else:
                data = bytes(EXTENT)
            hasher.update(data)
    cmd = ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", *(["-c"] if compress else []),
           str(raw), str(qcow)]
    subprocess.run(cmd, check=True)
    return hasher.hexdigest()


def attach_loop(backing: Path, direct_io: bool) -> tuple[str, bool]:
    """``losetup`` the target for every method alike: (device, direct I/O in effect).

    With ``--direct-io=on`` the loop device reads and writes its backing file with
    O_DIRECT: nothing is cached twice and no method pays a final fsync of the backing
    file's page cache (measured: 0.65 s of a 1 GiB write, and 0.4 s/GiB of the loop
    worker's CPU copying into that cache). The kernel may refuse it (a backing file
    system without O_DIRECT): the device then works as before, and this says so.
    """
    loop = subprocess.run(["losetup", "--find", "--show",
                           f"--direct-io={'on' if direct_io else 'off'}", str(backing)],
                          check=True, capture_output=True, text=True).stdout.strip()
    flag = Path(f"/sys/block/{Path(loop).name}/loop/dio")
    return loop, flag.exists() and flag.read_text().strip() == "1"


def add_loop_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loop-direct-io", choices=("on", "off"), default="on",
                        help="losetup --direct-io for the loop device (all methods alike)")


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"{field} missing from /proc/self/status")


def child(url: str, target: str, digest: str) -> int:
    """One agent write in this process; prints its figures as JSON."""
    fallbacks: list[str] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if FALLBACK in record.getMessage():
                fallbacks.append(record.getMessage())

    logging.getLogger("ramdisk_agent").addHandler(Spy())
    spec = ImageSpec.from_image_info({"urls": [url], "disk_format": "qcow2",
                                      "os_hash_algo": "sha256", "os_hash_value": digest})
    base = vm_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5\n")    # VmHWM := VmRSS
    cpu, start = os.times(), time.monotonic()
    result = write_image(spec, target, scratch_dir="/nonexistent-no-scratch")
    seconds, after = time.monotonic() - start, os.times()
    print(json.dumps({"seconds": seconds, "peak_extra_kib": vm_kib("VmHWM") - base,
                      "cpu": after.user + after.system - cpu.user - cpu.system,
                      "size": result.size, "direct": result.direct_io,
                      "busy": result.busy, "fallback": fallbacks}), flush=True)
    return 0


def run_agent(url: str, target: str, digest: str) -> dict:
    drop_caches()
    done = subprocess.run([sys.executable, __file__, "--child", url, target, digest],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise SystemExit(f"agent write failed:\n{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["fallback"]:
        raise SystemExit(f"the agent fell back to a scratch file: {figures['fallback']}")
    return figures


def run_qemu_img(image: Path, target: str) -> dict:
    """One qemu-img convert: its time, CPU and (through GNU time, whose own child it is:
    a child of this process would report this process's peak) its peak RSS."""
    drop_caches()
    gnu_time = Path("/usr/bin/time")
    cmd = ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-t", "none", "-n",
           str(image), target]
    if gnu_time.exists():
        cmd = [str(gnu_time), "-f", "PEAK_KIB %M", *cmd]
    start = time.monotonic()
    process = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - start
    assert process.stderr is not None
    err = process.stderr.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"qemu-img convert failed: {err}")
    peak = [int(line.split()[1]) for line in err.splitlines() if line.startswith("PEAK_KIB")]
    return {"seconds": seconds, "peak_kib": peak[0] if peak else None,
            "cpu": usage.ru_utime + usage.ru_stime}


def file_digest(path: Path | str, size: int | None = None) -> str:
    """sha256 of the first ``size`` bytes (all if None), read in pieces: the bench keeps
    its own memory small, which a child's peak RSS would otherwise inherit."""
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        left = size if size is not None else os.fstat(f.fileno()).st_size
        while left and (chunk := f.read(min(left, 8 * MIB))):
            hasher.update(chunk)
            left -= len(chunk)
    return hasher.hexdigest()


def report(size: int, agent: list[dict], qemu: list[dict]) -> None:
    def rate(run: dict) -> float:
        return size / run["seconds"] / 1e6

    for name, runs in (("agent (write_image)", agent), ("qemu-img convert", qemu)):
        rates = [rate(r) for r in runs]
        print(f"  {name:22s} median {statistics.median(rates):6.0f} MB/s  best "
              f"{max(rates):6.0f} MB/s  CPU {statistics.median(r['cpu'] for r in runs):5.2f} s"
              f"  runs {', '.join(f'{r:.0f}' for r in rates)}")
    ratio = statistics.median(rate(r) for r in agent) / statistics.median(
        rate(r) for r in qemu)
    best = max(rate(r) for r in agent) / max(rate(r) for r in qemu)
    peak = max(r["peak_extra_kib"] for r in agent) / 1024
    stages = sorted({name for r in agent for name in r["busy"]})
    wall = statistics.median(r["seconds"] for r in agent)
    busy = ", ".join(f"{name} {statistics.median(r['busy'].get(name, 0) for r in agent):.2f}"
                     for name in stages)
    print(f"  agent stages busy, median s (wall {wall:.2f}): {busy}  "
          "(convert = parse + zero + staged writes; write = the data-run writer threads, "
          "mean)")
    print(f"  throughput agent / qemu-img: {ratio:.2f} (median), {best:.2f} (best)   "
          f"target >= {RATIO_TARGET}  {'MET' if ratio >= RATIO_TARGET else 'NOT MET'}")
    print(f"  agent peak extra memory: {peak:.1f} MiB (max of {len(agent)} runs)   "
          f"target <= {MEMORY_TARGET} MiB  {'MET' if peak <= MEMORY_TARGET else 'NOT MET'}")
    peaks = [r["peak_kib"] for r in qemu if r["peak_kib"] is not None]
    print(f"  (qemu-img's whole peak RSS: "
          f"{f'{max(peaks) / 1024:.1f} MiB' if peaks else 'n/a (no /usr/bin/time)'}; "
          "it reads a local file and computes no checksum)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="agent qcow2 write vs qemu-img convert")
    parser.add_argument("--size-mib", type=int, default=1024, help="virtual size")
    parser.add_argument("--allocated", type=int, default=50, help="percent allocated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compress", action="store_true",
                        help="a -c image, half of the data compressible text")
    parser.add_argument("--dir", default="/var/tmp", help="where the loop device's file lives")
    parser.add_argument("--image-dir", default="/dev/shm", help="where the qcow2 lives")
    add_loop_option(parser)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)
    for tool in ("qemu-img", "losetup"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (Debian packages qemu-utils / mount)")
    workdir = Path(tempfile.mkdtemp(prefix="metalcast-qcow2bench-", dir=args.dir))
    imagedir = Path(tempfile.mkdtemp(prefix="metalcast-qcow2bench-", dir=args.image_dir))
    server = loop = None
    try:
        size = args.size_mib * MIB
        image = imagedir / "image.qcow2"
        raw_digest = make_images(workdir / "source.raw", image, args.size_mib,
                                 args.allocated, args.compress)
        (workdir / "source.raw").unlink()
        digest = file_digest(image)
        server, info, _ = start_ready(
            [sys.executable, "-m", "virtlab.imageserver", str(imagedir)], "IMAGESERVER ",
            30, "image server")
        url = info["url"] + "/image.qcow2"
        backing = workdir / "disk-loop.img"
        with open(backing, "wb") as f:
            f.truncate(size + 64 * MIB)
        loop, dio = attach_loop(backing, args.loop_direct_io == "on")
        print(f"qcow2 {args.size_mib} MiB virtual, {args.allocated} % allocated "
              f"({'compressed, half text' if args.compress else 'random, incompressible'}), "
              f"file {image.stat().st_size / MIB:.0f} MiB; target {loop} (loop direct I/O "
              f"{'on' if dio else 'off'}); {args.runs} runs, "
              f"page cache dropped before each; load average {os.getloadavg()[0]:.1f}")
        run_qemu_img(image, loop)                          # warm-up: allocate the file
        agent: list[dict] = []
        qemu: list[dict] = []
        for round_ in range(args.runs):
            order = [("agent", lambda: agent.append(run_agent(url, loop, digest))),
                     ("qemu-img", lambda: qemu.append(run_qemu_img(image, loop)))]
            for _, run in order[round_ % 2:] + order[:round_ % 2]:
                run()
        if agent[-1]["size"] != size or not all(r["direct"] for r in agent):
            raise SystemExit(f"unexpected agent result: {agent[-1]}")
        run_agent(url, loop, digest)
        same = file_digest(loop, size) == raw_digest
        print(f"\nloop device ({loop}), {args.size_mib} MiB virtual; the disk after the agent "
              f"matches qemu-img convert -O raw: {'yes' if same else 'NO'}")
        report(size, agent, qemu)
        print(f"\nload average after: {os.getloadavg()[0]:.1f}")
        return 0 if same else 1
    finally:
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
        if server is not None:
            stop(server.pid, server)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(imagedir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
