"""Delta payload benchmark: size against the compressed full image, apply time
against writing the full image, both measured in this run.

    .venv/bin/python bench/delta.py [--size-mib 1024] [--changed 0.02] [--work DIR]

The image is made of 4 KiB blocks like a used disk: 30 % zero, 35 % random, 35 %
low-entropy (16 symbols, compresses about 2:1); 2 % of the blocks are replaced by
new blocks of the same mix. The full image is compressed with `zstd -T0 -3` (what
an operator would ship). "Full write" is the agent's path without the network:
read the raw image, SHA-256 it, write it with O_DIRECT, fsync. "Delta apply" is
ramdisk_agent.delta.apply in place: verify signature and data, hash every
unchanged range (the source check), write and read back the changed ones.
Page cache is dropped before each timed run when running as root.
Targets (issue 5): payload <= 5 % of the compressed full image; apply <= 0.5x full.
"""
from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conductor.updates import delta_build, keys  # noqa: E402
from ramdisk_agent.delta import apply as delta_apply  # noqa: E402
from ramdisk_agent.delta import format as fmt  # noqa: E402

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


def full_write(src: Path, dst: Path) -> float:
    """Read, hash and O_DIRECT-write the whole image (the agent's full-image work)."""
    chunk = 4 << 20
    buf = mmap.mmap(-1, chunk)
    digest = hashlib.sha256()
    started = time.monotonic()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0), 0o600)
    with open(src, "rb", buffering=0) as stream:
        offset = 0
        while (got := stream.readinto(buf)) > 0:
            digest.update(memoryview(buf)[:got])
            os.pwrite(fd, memoryview(buf)[:got], offset)
            offset += got
    os.fsync(fd)
    os.close(fd)
    return time.monotonic() - started


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
    public = fmt.load_public_key(keys.public_pem(key))
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
    fulls, applies = [], []
    for _ in range(args.runs):
        target = work / "disk.img"
        target.unlink(missing_ok=True)
        drop_caches()
        fulls.append(full_write(new, target))
        shutil.copy(old, target)
        drop_caches()
        started = time.monotonic()
        delta_apply.apply(str(work / "update.delta"), str(target), None, public)
        applies.append(time.monotonic() - started)
        assert _same(target, new), "applied disk differs from the new image"
    full, apply_s = min(fulls), min(applies)
    print(f"full write (read+sha256+O_DIRECT, {args.size_mib} MiB): best {full:.2f} s "
          f"of {[round(x, 2) for x in fulls]} ({size / full / 1e6:.0f} MB/s)")
    print(f"delta apply (verify+write+read-back): best {apply_s:.2f} s of "
          f"{[round(x, 2) for x in applies]} -> apply/full = {apply_s / full:.2f}x "
          f"[target <= 0.5x: {'PASS' if apply_s / full <= 0.5 else 'FAIL'}]")
    print(f"load average after: {os.getloadavg()}")
    return 0


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
