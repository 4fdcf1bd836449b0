"""The source pass and the data check with their real threads
(ramdisk_agent/ramdisk/delta/source.py, apply.py): reads run ahead of the hashing lanes,
and a base disk changed anywhere — at a window edge, inside a range that spans windows,
in the last partial block — is refused before anything is written. A bad data section
stops the source pass early instead of after the whole disk."""
from __future__ import annotations

import hashlib
import io
import os
import random
import threading

import pytest

from conductor.updates import delta_build, keys
from ramdisk_agent.ramdisk.delta import apply as delta_apply
from ramdisk_agent.ramdisk.delta import source
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

MIB = 1 << 20
BLOCK = 4096
SIZE = 40 * MIB + 1000          # twenty 2 MiB windows and a partial last block


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("delta-pipeline")
    rng = random.Random(3)
    old = rng.randbytes(SIZE)
    new = bytearray(old)
    for block in rng.sample(range(SIZE // BLOCK), 200):
        new[block * BLOCK:(block + 1) * BLOCK] = rng.randbytes(BLOCK)
    (root / "old.img").write_bytes(old)
    (root / "new.img").write_bytes(new)
    key = keys.load_or_create(root / "delta.key")
    built = delta_build.build(root / "old.img", root / "new.img", root / "p.delta", key)
    return root, old, bytes(new), built.path, fmt.load_public_key(keys.public_pem(key))


def _copies(payload, public) -> list[fmt.Operation]:
    with open(payload, "rb") as stream:
        manifest, _ = fmt.read_header(stream, public)
    return [op for op in manifest.operations if op.op is fmt.Op.COPY]


def test_the_pass_uses_reader_and_lane_threads_and_checks_every_range(images, tmp_path):
    root, old, _, payload, public = images
    disk = tmp_path / "disk.img"
    disk.write_bytes(old)
    threads = set()
    seen = []

    def progress(done, total):
        threads.update(t.name for t in threading.enumerate())
        seen.append(done)
    copies = _copies(payload, public)
    assert source.verify(str(disk), copies, progress) == sum(op.length for op in copies)
    assert seen[-1] == sum(op.length for op in copies)
    assert len([name for name in threads if "ThreadPoolExecutor" in name]) >= 2


def test_the_next_windows_are_read_while_one_is_hashed(images, tmp_path, monkeypatch):
    """Read-ahead: hashing window 0 waits until window 2 is being read; a pass that
    read and hashed in turn would never get there (the wait would time out)."""
    root, old, _, payload, public = images
    disk = tmp_path / "disk.img"
    disk.write_bytes(old)
    ahead = threading.Event()
    real_preadv, real_feed = os.preadv, source.RangeCheck.feed
    waited = []

    def preadv(fd, buffers, offset):
        if offset >= 2 * source.WINDOW:
            ahead.set()
        return real_preadv(fd, buffers, offset)

    def feed(self, offset, data):
        if offset == 0:
            waited.append(ahead.wait(30))
        return real_feed(self, offset, data)
    monkeypatch.setattr(os, "preadv", preadv)
    monkeypatch.setattr(source.RangeCheck, "feed", feed)
    copies = _copies(payload, public)
    assert source.verify(str(disk), copies, lambda done, total: None) == \
        sum(op.length for op in copies)
    assert waited and all(waited), "window 2 was not read while window 0 was hashed"


def _drift_positions(copies) -> list[int]:
    window_edge = source.WINDOW                      # first byte of the second window
    spanning = next(op for op in copies if op.src < 2 * source.WINDOW < op.src + op.length)
    last = max(copies, key=lambda op: op.src + op.length)
    positions = [0, window_edge - 1, window_edge, 2 * source.WINDOW + 1,
                 last.src + last.length - 1]         # the last byte of the disk image
    assert spanning.src < positions[3] < spanning.src + spanning.length
    return positions


@pytest.mark.parametrize("which", range(5))
def test_a_base_changed_anywhere_is_refused_untouched(images, tmp_path, which):
    root, old, _, payload, public = images
    copies = _copies(payload, public)
    position = _drift_positions(copies)[which]
    drifted = bytearray(old)
    if not any(op.src <= position < op.src + op.length for op in copies):
        pytest.fail(f"byte {position} is not in a copy range of this payload")
    drifted[position] ^= 0x40
    disk = tmp_path / "disk.img"
    disk.write_bytes(drifted)
    with pytest.raises(DeltaError, match="another image version"):
        delta_apply.apply(str(payload), str(disk), None, public)
    assert disk.read_bytes() == drifted


def test_a_bad_data_section_stops_the_source_pass_early(images, tmp_path, monkeypatch):
    root, old, _, payload, public = images
    bad = bytearray(payload.read_bytes())
    bad[-10] ^= 1
    (tmp_path / "bad.delta").write_bytes(bad)
    disk = tmp_path / "disk.img"
    disk.write_bytes(old)
    monkeypatch.setattr(source, "WINDOW", 256 * 1024)    # 160 windows
    data_checked = threading.Event()
    real_check, real_preadv = delta_apply._verify_new_data, os.preadv
    read = []

    def data_check(*args):
        try:
            return real_check(*args)
        finally:
            data_checked.set()

    def preadv(fd, buffers, offset):       # past the first windows: once the data failed
        if offset >= 8 * source.WINDOW:
            assert data_checked.wait(30), "the data check never finished"
        read.append(sum(len(b) for b in buffers))
        return real_preadv(fd, buffers, offset)
    monkeypatch.setattr(delta_apply, "_verify_new_data", data_check)
    monkeypatch.setattr(os, "preadv", preadv)
    with pytest.raises(DeltaError, match="data section does not match"):
        delta_apply.apply(str(tmp_path / "bad.delta"), str(disk), None, public)
    assert disk.read_bytes() == old
    # Stopped within the windows already in flight, not after the whole disk.
    limit = (8 + source.DEPTH + source.READERS) * source.WINDOW
    assert sum(read) <= limit < SIZE


def test_a_read_error_mid_pass_fails_the_pass(images, tmp_path, monkeypatch):
    root, old, _, payload, public = images
    disk = tmp_path / "disk.img"
    disk.write_bytes(old)
    real = os.preadv

    def failing(fd, buffers, offset):
        if offset >= 3 * source.WINDOW:
            raise OSError(5, "Input/output error")
        return real(fd, buffers, offset)
    monkeypatch.setattr(os, "preadv", failing)
    with pytest.raises(OSError, match="Input/output error"):
        source.verify(str(disk), _copies(payload, public), lambda done, total: None)


def test_overlapping_source_ranges_to_another_disk(tmp_path):
    data = os.urandom(12 * MIB)
    ops, position = [], 0
    for src in (5 * MIB, 0, 5 * MIB + 7, 9 * MIB):       # reads the same bytes twice
        ops.append(fmt.Operation(fmt.Op.COPY, position, 3 * MIB,
                                 hashlib.sha256(data[src:src + 3 * MIB]).digest(), src=src))
        position += 3 * MIB
    key = keys.load_or_create(tmp_path / "k")
    manifest = fmt.Manifest(len(data), position, BLOCK, 0, hashlib.sha256(b"").digest(),
                            fmt.target_digest(op.sha256 for op in ops), ops)
    stream = io.BytesIO()
    fmt.write_header(stream, manifest, key)
    (tmp_path / "p.delta").write_bytes(stream.getvalue())
    (tmp_path / "a.img").write_bytes(data)
    (tmp_path / "b.img").write_bytes(bytes(position))
    delta_apply.apply(str(tmp_path / "p.delta"), str(tmp_path / "a.img"),
                      str(tmp_path / "b.img"), fmt.load_public_key(keys.public_pem(key)))
    assert (tmp_path / "b.img").read_bytes() == b"".join(
        data[op.src:op.src + op.length] for op in ops)
