"""A/B slot update benchmark: the host update engine's install step (Installer.install,
what ``metalcast-agent update check`` runs after the Omaha answer) against the
reference tools, in the same run.

    sudo .venv/bin/python bench/ab_update.py [--size-mib 1024] [--changed 0.02] [--runs 3]

A disk image file with two slots (USR-A, USR-B) of ``--size-mib`` each, USR-A holding
the old image (bench/delta.py's disk-like block mix); the new image differs in
``--changed`` of its 4 KiB blocks. Images and the delta payload are served by
virtlab.imageserver (its own process, sendfile) on 127.0.0.1 from /var/tmp. Each slot
is written through a loop device over its byte range (slotdev.slot_path), as the
engine does on an image file; page cache dropped before every timed step.

* full: the engine writes the new image into USR-B (signature check, mark unbootable,
  HTTP -> SHA-256 on the fly -> O_DIRECT, fsync, mark for trial) vs
  ``curl | dd of=<USR-B> bs=4M oflag=direct iflag=fullblock conv=fsync`` to the same
  loop device. Target (issue 16): engine >= 0.95x curl|dd.
* delta: the engine fetches the payload and applies it with USR-A as source and USR-B
  as target (every source range verified, every written range read back) vs the
  issue's floor: one ``dd iflag=direct`` read of USR-A + one ``dd oflag=direct``
  write of the changed bytes. Target: <= 1.2x that floor. NOTE: a delta into the
  *other* slot must write every byte of it (the unchanged ranges are copied from the
  active slot: nothing says the passive slot holds them), so the apply also gets
  compared with the floor of that copy: ``dd if=USR-A of=USR-B iflag=direct
  oflag=direct`` (read all + write all), printed beside it.
* delta in place: what the engine (DELTA_IN_PLACE=true) is offered when it names the
  passive slot's version (the version before last, which A/B alternation leaves there): a delta
  from that version, applied onto USR-B itself (slotdelta.apply_in_place: one read
  of USR-B that checks every byte of the result before the first write, then the
  changed writes, those read back). Its floor: one ``dd iflag=direct`` read of
  USR-B + one ``dd oflag=direct`` write of as many bytes as this delta changes
  (about twice the other's, see below). Same target.
  Before each delta run (both kinds) USR-B is reset, untimed, to that version before
  last (``--changed`` of its blocks differ from USR-A's, other blocks than the new
  version's changes), so the in-place delta writes about twice ``--changed``.
"""
from __future__ import annotations

import argparse
import hashlib
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

from cryptography.hazmat.primitives.asymmetric import ed25519

from bench.delta import make_images
from conductor.updates import delta_build
from ramdisk_agent.host.slots import COREOS_USR_TYPE
from ramdisk_agent.host.update.install import Installer
from ramdisk_agent.host.update.slotdev import SlotLayout, slot_path
from ramdisk_agent.host.update.state import Offer
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire import image_signature
from virtlab.process import start_ready, stop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cache import drop_caches

FULL_TARGET, DELTA_TARGET = 0.95, 1.2


class PhaseLog(logging.Handler):
    """The in-place applier's own split of each apply (its "applied" log line:
    header, verify-source, verify-data, write, read-back), to print beside the figure."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.splits: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("Delta %s applied:") and record.args:
            self.splits.append(str(record.args[-1]))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def make_disk(work: Path, size: int, old: Path) -> SlotLayout:
    disk = work / "disk.img"
    with open(disk, "wb") as handle:
        handle.truncate(2 * size + (4 << 20))
    mib = size >> 20
    subprocess.run(["sgdisk", "-o", f"-n3:2048:+{mib}M", f"-t3:{COREOS_USR_TYPE}", "-c3:USR-A",
                    f"-n4:0:+{mib}M", f"-t4:{COREOS_USR_TYPE}", "-c4:USR-B", str(disk)],
                   check=True, capture_output=True)
    layout = SlotLayout(str(disk), ("USR-A", "USR-B"), active="USR-A")
    active, _ = layout.active_and_passive()
    with slot_path(str(disk), active) as device:
        subprocess.run(["dd", f"if={old}", f"of={device}", "bs=8M", "oflag=direct",
                        "conv=fsync", "status=none"], check=True)
    layout.gpt.set_attributes(active.number, priority=1, tries=0, successful=True)
    return layout


def timed(action) -> float:
    drop_caches()
    started = time.monotonic()
    action()
    return time.monotonic() - started


def shell(command: str) -> None:
    subprocess.run(["bash", "-c", "set -o pipefail; " + command], check=True)


def run(work: Path, args) -> int:
    size = args.size_mib << 20
    print(f"load average before: {os.getloadavg()}")
    if not drop_caches():
        print("NOT ROOT: the page cache cannot be dropped; figures include its effects")
    old, new = make_images(work, size, args.changed)
    older = make_older(work, old, size, args.changed)
    key = ed25519.Ed25519PrivateKey.generate()
    built = delta_build.build(old, new, work / "update.delta", key, version="2")
    in_place = delta_build.build(older, new, work / "passive.delta", key, version="2")
    new_sha, delta_sha = sha256_file(new), sha256_file(work / "update.delta")
    changed = changed_bytes(work / "update.delta", key)
    layout = make_disk(work, size, old)
    active, passive = layout.active_and_passive()
    installer = Installer(layout, key.public_key(), str(work / "scratch"), host="bench")
    server, ready, _ = start_ready([sys.executable, "-m", "virtlab.imageserver", str(work)],
                                   "IMAGESERVER ", 30, "image server")
    base = ready["url"]
    full = Offer("2", f"{base}/new.img", size, new_sha, False,
                 image_signature.sign(key, bytes.fromhex(new_sha), size, "2").hex(),
                 passive.number)
    delta = Offer("2", f"{base}/update.delta", built.payload_size, delta_sha, True, None,
                  passive.number)
    local = Offer("2", f"{base}/passive.delta", in_place.payload_size,
                  sha256_file(work / "passive.delta"), True, None, passive.number, "passive")
    local_changed = changed_bytes(work / "passive.delta", key)
    phases = PhaseLog()
    applier = logging.getLogger("ramdisk_agent.ramdisk.delta.apply")
    applier.addHandler(phases)
    applier.setLevel(logging.INFO)
    figures: dict[str, list[float]] = {k: [] for k in (
        "engine", "curl|dd", "delta", "in-place", "read", "write", "read-B", "write-B",
        "copy")}
    try:
        for index in range(args.runs):
            order = ["engine", "curl|dd"] if index % 2 == 0 else ["curl|dd", "engine"]
            for name in order:
                if name == "engine":
                    figures[name].append(timed(lambda: installer.install(full, active,
                                                                         passive)))
                else:
                    with slot_path(layout.disk, passive) as device:
                        figures[name].append(timed(lambda: shell(
                            f"curl -sf {full.url} | dd of={device} bs=4M oflag=direct "
                            "iflag=fullblock conv=fsync,notrunc status=none")))
            # the passive slot holds the version before last, as A/B alternation leaves it
            for name, offer in (("delta", delta), ("in-place", local)):
                with slot_path(layout.disk, passive) as device:
                    shell(f"dd if={older} of={device} bs=8M oflag=direct conv=fsync,notrunc "
                          "status=none")
                figures[name].append(timed(lambda offer=offer: installer.install(
                    offer, active, passive)))
                if index == 0:
                    with slot_path(layout.disk, passive) as device:
                        assert sha256_file(Path(device)) == new_sha, f"{name}: slot B is " \
                            "not the new image"
            with slot_path(layout.disk, active) as source, \
                    slot_path(layout.disk, passive) as target:
                figures["read"].append(timed(lambda: shell(
                    f"dd if={source} of=/dev/null bs=8M iflag=direct status=none")))
                figures["write"].append(timed(lambda: shell(
                    f"dd if=/dev/zero of={target} bs=4M count={changed} iflag=count_bytes "
                    "oflag=direct conv=notrunc,fsync status=none")))
                # the in-place floor: USR-B read, this delta's changed bytes written
                figures["read-B"].append(timed(lambda: shell(
                    f"dd if={target} of=/dev/null bs=8M iflag=direct status=none")))
                figures["write-B"].append(timed(lambda: shell(
                    f"dd if=/dev/zero of={target} bs=4M count={local_changed} "
                    "iflag=count_bytes oflag=direct conv=notrunc,fsync status=none")))
                figures["copy"].append(timed(lambda: shell(
                    f"dd if={source} of={target} bs=8M iflag=direct oflag=direct "
                    "conv=notrunc,fsync status=none")))
    finally:
        stop(server.pid, server)
        applier.removeHandler(phases)
    report(figures, size, changed, built.payload_size, local_changed, in_place.payload_size)
    best = figures["in-place"].index(min(figures["in-place"]))
    if len(phases.splits) == len(figures["in-place"]):
        print(f"  where the best in-place apply's time went (the applier's split): "
              f"{phases.splits[best]}")
    print(f"load average after: {os.getloadavg()}")
    return 0


def make_older(work: Path, old: Path, size: int, changed: float) -> Path:
    """The version before ``old``: ``changed`` of its 4 KiB blocks differ (other ones
    than old -> new changes, mostly)."""
    older = work / "older.img"
    shutil.copy(old, older)
    rng = random.Random(7)
    with open(older, "r+b") as stream:
        for block in rng.sample(range(size // 4096), int(size // 4096 * changed)):
            stream.seek(block * 4096)
            stream.write(rng.randbytes(4096))
    return older


def changed_bytes(payload: Path, key) -> int:
    """Bytes the delta at ``payload`` writes (its operations that are not copies)."""
    with open(payload, "rb") as stream:
        manifest, _ = fmt.read_header(stream, key.public_key())
    return sum(op.length for op in manifest.operations if op.op is not fmt.Op.COPY)


def report(f: dict[str, list[float]], size: int, changed: int, payload: int,
           local_changed: int, local_payload: int) -> None:
    def rate(seconds: float) -> float:
        return size / seconds / 1e6
    print(f"slot {size >> 20} MiB; runs: " + "; ".join(
        f"{name} " + "/".join(f"{s:.2f}" for s in secs) + " s" for name, secs in f.items()))
    engine, ref = min(f["engine"]), min(f["curl|dd"])
    ratio = ref / engine
    print(f"full image into the passive slot: engine best {rate(engine):.0f} MB/s (median "
          f"{rate(statistics.median(f['engine'])):.0f}), curl|dd oflag=direct best "
          f"{rate(ref):.0f} MB/s (median {rate(statistics.median(f['curl|dd'])):.0f}) -> "
          f"engine/curl|dd = {ratio:.3f}x [target >= {FULL_TARGET}x: "
          f"{'PASS' if ratio >= FULL_TARGET else 'FAIL'}]")
    delta = min(f["delta"])
    floor = min(r + w for r, w in zip(f["read"], f["write"], strict=True))
    copy = min(f["copy"])
    print(f"delta ({changed / size:.1%} of the slot changed, payload {payload / 2**20:.1f} "
          f"MiB): engine best {delta:.2f} s; issue floor = dd read of the active slot "
          f"{min(f['read']):.2f} s + dd write of the {changed / 2**20:.1f} MiB changed "
          f"{min(f['write']):.2f} s = {floor:.2f} s -> {delta / floor:.2f}x [target <= "
          f"{DELTA_TARGET}x: {'PASS' if delta / floor <= DELTA_TARGET else 'FAIL'}]")
    local = min(f["in-place"])
    floor_b = min(r + w for r, w in zip(f["read-B"], f["write-B"], strict=True))
    print(f"delta in place (DELTA_IN_PLACE=true; from the version before last, which the "
          f"passive slot holds: {local_changed / size:.1%} of the slot to write, payload "
          f"{local_payload / 2**20:.1f} MiB): engine best {local:.2f} s (median "
          f"{statistics.median(f['in-place']):.2f}); its floor = dd read of the passive slot "
          f"{min(f['read-B']):.2f} s + dd write of the {local_changed / 2**20:.1f} MiB it "
          f"changes {min(f['write-B']):.2f} s = {floor_b:.2f} s -> {local / floor_b:.2f}x "
          f"[target <= {DELTA_TARGET}x: {'PASS' if local / floor_b <= DELTA_TARGET else 'FAIL'}]"
          f"; each run: " + "/".join(f"{a / (r + w):.2f}x" for a, r, w in zip(
              f["in-place"], f["read-B"], f["write-B"], strict=True)))
    print(f"  slot-to-slot floor (dd copy of the active slot into the passive one: every "
          f"byte read and written, as any delta into the other slot must) {copy:.2f} s -> "
          f"engine/that = {delta / copy:.2f}x (for information)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--changed", type=float, default=0.02)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", help="work directory (default: a temp dir in /var/tmp)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="metalcast-ab-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(work, args)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
