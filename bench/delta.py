"""Delta payload benchmark: size against the compressed full image, apply time
against writing the full image, both through the agent's real code paths, both
measured in this run.

    .venv/bin/python bench/delta.py [--size-mib 1024] [--changed 0.02] [--work DIR]

The image is made of 4 KiB blocks like a used disk: 30 % zero, 35 % random, 35 %
low-entropy (16 symbols, compresses about 2:1); 2 % of the blocks are replaced by
new blocks of the same mix. The full image is compressed with `zstd -T0 -3` (what
an operator would ship). Both images and the payload are served by
virtlab.imageserver (its own process, sendfile) on 127.0.0.1, and the "disk" is a
file holding the old image before each run:

* "full write": ramdisk_agent.ramdisk.imagewrite.write_image, the agent's write_image for
  a raw image (HTTP stream -> SHA-256 on the fly -> O_DIRECT writes, fsync);
* "delta apply": ramdisk_agent.ramdisk.delta.deploy.write_delta, the agent's write_image
  with image_info["delta"] (download the payload to scratch, verify signature and
  data, hash every unchanged range of the disk, write and read back the changed
  ones).

Also measured in the same runs, as the floor of any apply that checks every
unchanged byte of the disk: one `dd if=DISK of=/dev/null bs=8M iflag=direct` read
of the whole disk, page cache dropped first.

Page cache is dropped before each timed run when running as root.
Targets (issue 5): payload <= 5 % of the compressed full image; apply <= 0.5x full.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conductor.updates import delta_build, keys
from ramdisk_agent.ramdisk.delta import deploy as delta_deploy
from ramdisk_agent.ramdisk.delta import source as delta_source
from ramdisk_agent.ramdisk.download import DownloadOptions
from ramdisk_agent.ramdisk.imagewrite import ImageSpec, write_image
from virtlab.demo.lab import sha256_of
from virtlab.process import start_ready, stop

BLOCK = 4096
LOW_ENTROPY = bytes.maketrans(bytes(range(256)), bytes(b"abcdefghijklmnop"[i % 16]
                                                       for i in range(256)))


def _blocks(rng: random.Random, count: int) -> bytes:
    """``count`` blocks of the disk-like mix."""
    out = bytearray()
    for _ in range(count):
        pick = rng.random()
        if pick < 0.30:
            out += bytes(BLOCK)
        elif pick < 0.65:
            out += os.urandom(BLOCK)
        else:
            out += os.urandom(BLOCK).translate(LOW_ENTROPY)
    return bytes(out)


def make_images(work: Path, size: int, changed: float) -> tuple[Path, Path]:
    rng = random.Random(42)
    old, new = work / "old.img", work / "new.img"
    with open(old, "wb") as stream:
        for _ in range(size // (4 << 20)):
            stream.write(_blocks(rng, 1024))
    shutil.copy(old, new)
    with open(new, "r+b") as stream:
        for block in rng.sample(range(size // BLOCK), int(size // BLOCK * changed)):
            stream.seek(block * BLOCK)
            stream.write(_blocks(rng, 1))
    return old, new


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass  # not root: the figures then include page-cache effects


def full_write(url: str, digest: str, disk: Path) -> float:
    """The agent's write_image of a raw image from ``url`` onto ``disk``."""
    spec = ImageSpec(url=url, disk_format="raw", hash_algo="sha256", hash_value=digest)
    started = time.monotonic()
    write_image(spec, str(disk), DownloadOptions())
    return time.monotonic() - started


def delta_write(url: str, public_pem: str, disk: Path, scratch: Path) -> dict:
    """The agent's write_image with image_info["delta"] onto ``disk`` (in place)."""
    info = {"delta": {"url": url, "public_key": public_pem, "version": "bench"}}
    return delta_deploy.write_delta(info, str(disk), DownloadOptions(), "bench",
                                    scratch_dir=str(scratch))


def zstd_size(path: Path) -> tuple[int, float]:
    started = time.monotonic()
    proc = subprocess.run(["zstd", "-T0", "-3", "-c", str(path)], check=True,
                          stdout=subprocess.PIPE)
    return len(proc.stdout), time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--changed", type=float, default=0.02)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--work", help="work directory (default: a temp dir in /var/tmp)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="metalcast-delta-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(work, args)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, args) -> int:
    size = args.size_mib << 20
    print(f"load average before: {os.getloadavg()}")
    old, new = make_images(work, size, args.changed)
    key = keys.load_or_create(work / "delta.key")
    started = time.monotonic()
    built = delta_build.build(old, new, work / "update.delta", key, version="bench")
    build_s = time.monotonic() - started
    full_zst, zst_s = zstd_size(new)
    ratio = built.payload_size / full_zst
    print(f"image {args.size_mib} MiB, {args.changed:.1%} of blocks changed")
    print(f"payload {built.payload_size / 2**20:.2f} MiB ({built.operations} operations, "
          f"built in {build_s:.1f} s); full image zstd -3: {full_zst / 2**20:.1f} MiB "
          f"({zst_s:.1f} s) -> payload/full = {ratio:.2%} "
          f"[target <= 5%: {'PASS' if ratio <= 0.05 else 'FAIL'}]")
    digest = sha256_of(new)
    server, ready, _ = start_ready([sys.executable, "-m", "virtlab.imageserver", str(work)],
                                   "IMAGESERVER ", 30, "image server")
    try:
        fulls, applies, reads = _timed_runs(work, args.runs, ready["url"], digest,
                                            keys.public_pem(key).decode())
    finally:
        stop(server.pid, server)
    full, apply_s = min(fulls), min(applies, key=lambda r: r["seconds"])
    print(f"full write (agent write_image: HTTP -> sha256 -> O_DIRECT, {args.size_mib} "
          f"MiB): best {full:.2f} s of {[round(x, 2) for x in fulls]} "
          f"({size / full / 1e6:.0f} MB/s)")
    print(f"delta apply (agent write_image with delta: download "
          f"{apply_s['download_seconds']:.2f} s + verify/write/read-back "
          f"{apply_s['apply_seconds']:.2f} s): best {apply_s['seconds']:.2f} s of "
          f"{[round(r['seconds'], 2) for r in applies]} -> apply/full = "
          f"{apply_s['seconds'] / full:.2f}x "
          f"[target <= 0.5x: {'PASS' if apply_s['seconds'] / full <= 0.5 else 'FAIL'}]")
    print("  where that apply's time went: " + ", ".join(
        f"{phase} {secs:.2f} s" for phase, secs in apply_s["phases"].items()))
    read = min(reads)
    print(f"read floor (dd iflag=direct bs=8M of the whole disk, nothing written): best "
          f"{read:.2f} s of {[round(x, 2) for x in reads]} = {read / full:.2f}x the full write; "
          f"the source check reads every unchanged byte once, so apply/full cannot go "
          f"below this on this disk")
    floor = hash_floor(size)
    print(f"SHA-256 of {args.size_mib} MiB in memory on {delta_source.WORKERS} threads: "
          f"{floor:.2f} s (the CPU floor of the source check; the full write hashes as "
          f"much on one thread)")
    print(f"load average after: {os.getloadavg()}")
    return 0


def hash_floor(size: int) -> float:
    """Seconds to SHA-256 ``size`` bytes of memory on the source check's threads."""
    block = os.urandom(8 << 20)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(delta_source.WORKERS) as pool:
        list(pool.map(lambda _: hashlib.sha256(block).digest(), range(size // len(block))))
    return time.monotonic() - started


def _timed_runs(work: Path, runs: int, base: str, digest: str, pem: str):
    """Alternate full write, delta apply and a dd read of the disk ``runs`` times,
    each write from the old disk."""
    fulls, applies, reads = [], [], []
    disk = work / "disk.img"
    for _ in range(runs):
        shutil.copy(work / "old.img", disk)
        drop_caches()
        fulls.append(full_write(f"{base}/new.img", digest, disk))
        assert _same(disk, work / "new.img"), "full write differs from the new image"
        shutil.copy(work / "old.img", disk)
        drop_caches()
        started = time.monotonic()
        result = delta_write(f"{base}/update.delta", pem, disk, work)
        result["seconds"] = time.monotonic() - started
        applies.append(result)
        assert _same(disk, work / "new.img"), "applied disk differs from the new image"
        drop_caches()
        reads.append(dd_read(disk))
    return fulls, applies, reads


def dd_read(disk: Path) -> float:
    """Seconds for coreutils dd to read all of ``disk`` with O_DIRECT, 8 MiB blocks."""
    started = time.monotonic()
    subprocess.run(["dd", f"if={disk}", "of=/dev/null", "bs=8M", "iflag=direct",
                    "status=none"], check=True)
    return time.monotonic() - started


def _same(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(8 << 20), fb.read(8 << 20)
            if x != y:
                return False
            if not x:
                return True


if __name__ == "__main__":
    sys.exit(main())
