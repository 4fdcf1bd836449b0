"""Delta payloads: build, verify, apply in place or to another disk, refuse bad ones."""
from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import struct
import zlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from conductor.updates import delta_build, keys
from ramdisk_agent.ramdisk.delta import apply as delta_apply
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

# The read-back and source checks hash ranges on a thread pool; here it runs inline.
pytestmark = pytest.mark.usefixtures("inline_thread_pools")

SIZE = 4 << 20
BLOCK = 4096


def _images(tmp_path, changed: float = 0.02, seed: int = 7):
    rng = random.Random(seed)
    old = bytearray(rng.randbytes(SIZE))
    for offset in range(0, SIZE, 5 * BLOCK):
        old[offset:offset + BLOCK] = bytes(BLOCK)
    new = bytearray(old)
    blocks = rng.sample(range(SIZE // BLOCK), int(SIZE // BLOCK * changed))
    for block in blocks:
        new[block * BLOCK:(block + 1) * BLOCK] = rng.randbytes(BLOCK)
    new[BLOCK:2 * BLOCK] = bytes(BLOCK)  # a block that becomes zero
    (tmp_path / "old.img").write_bytes(old)
    (tmp_path / "new.img").write_bytes(new)
    return tmp_path / "old.img", tmp_path / "new.img", bytes(new)


@pytest.fixture
def key(tmp_path):
    return keys.load_or_create(tmp_path / "keys" / "delta.key")


@pytest.fixture
def built(tmp_path, key):
    old, new, expected = _images(tmp_path)
    result = delta_build.build(old, new, tmp_path / "p.delta", key, version="2.0")
    return old, result, expected


def _disk(tmp_path, old, name="disk.img"):
    disk = tmp_path / name
    shutil.copy(old, disk)
    return disk


def _public(key):
    return fmt.load_public_key(keys.public_pem(key))


def test_applies_in_place_and_is_small(tmp_path, key, built):
    old, result, expected = built
    disk = _disk(tmp_path, old)
    assert result.payload_size < SIZE * 0.03
    applied = delta_apply.apply(str(result.path), str(disk), None, _public(key))
    assert disk.read_bytes() == expected
    assert applied.written_bytes < SIZE * 0.03
    assert applied.verified_bytes > SIZE * 0.9


def test_applies_to_another_disk(tmp_path, key, built):
    old, result, expected = built
    target = tmp_path / "slot-b.img"
    target.write_bytes(bytes(SIZE))
    delta_apply.apply(str(result.path), str(old), str(target), _public(key))
    assert target.read_bytes() == expected


def test_key_file_is_private_and_reused(tmp_path, key):
    path = tmp_path / "keys" / "delta.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys.public_pem(keys.load_or_create(path)) == keys.public_pem(key)


def _refused(tmp_path, key, payload: bytes, old, match: str):
    bad = tmp_path / "bad.delta"
    bad.write_bytes(payload)
    disk = _disk(tmp_path, old, "victim.img")
    before = disk.read_bytes()
    with pytest.raises(DeltaError, match=match):
        delta_apply.apply(str(bad), str(disk), None, _public(key))
    assert disk.read_bytes() == before, "a refused payload must leave the disk untouched"


def test_tampered_manifest_is_refused(tmp_path, key, built):
    old, result, _ = built
    data = bytearray(result.path.read_bytes())
    data[len(fmt.MAGIC) + 10] ^= 0x01
    _refused(tmp_path, key, bytes(data), old, "signature")


def test_tampered_data_is_refused(tmp_path, key, built):
    old, result, _ = built
    data = bytearray(result.path.read_bytes())
    data[-100] ^= 0x01
    _refused(tmp_path, key, bytes(data), old, "data section")


def test_truncated_payload_is_refused(tmp_path, key, built):
    old, result, _ = built
    data = result.path.read_bytes()
    _refused(tmp_path, key, data[:-1], old, "truncated")
    _refused(tmp_path, key, data[:30], old, "truncated")
    _refused(tmp_path, key, b"", old, "bad magic")


def test_other_key_is_refused(tmp_path, key, built):
    old, result, _ = built
    disk = _disk(tmp_path, old)
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(DeltaError, match="signature"):
        delta_apply.apply(str(result.path), str(disk), None, other)


def test_wrong_source_is_refused_before_writing(tmp_path, key, built):
    old, result, _ = built
    disk = _disk(tmp_path, old)
    with open(disk, "r+b") as stream:  # the host drifted from the base image
        stream.seek(SIZE // 2 + 3 * BLOCK)
        stream.write(b"drift")
    before = disk.read_bytes()
    with pytest.raises(DeltaError, match="another image version"):
        delta_apply.apply(str(result.path), str(disk), None, _public(key))
    assert disk.read_bytes() == before


def test_small_disk_is_refused(tmp_path, key, built):
    old, result, _ = built
    disk = tmp_path / "small.img"
    disk.write_bytes(old.read_bytes()[:SIZE // 2])
    with pytest.raises(DeltaError, match="needs"):
        delta_apply.apply(str(result.path), str(disk), None, _public(key))


def _signed(key, manifest: fmt.Manifest, data: bytes = b"") -> bytes:
    stream = io.BytesIO()
    fmt.write_header(stream, manifest, key)
    return stream.getvalue() + data


def _manifest(ops, size, data=b"", source=None):
    return fmt.Manifest(source_size=size if source is None else source, target_size=size,
                        block_size=BLOCK, data_size=len(data),
                        data_sha256=hashlib.sha256(data).digest(),
                        target_sha256=fmt.target_digest(op.sha256 for op in ops),
                        operations=ops)


def test_signed_but_inconsistent_manifests_are_refused(tmp_path, key, built):
    old, _, _ = built
    digest = hashlib.sha256(bytes(BLOCK)).digest()
    gap = [fmt.Operation(fmt.Op.ZERO, BLOCK, BLOCK, digest)]
    _refused(tmp_path, key, _signed(key, _manifest(gap, 2 * BLOCK)), old, "gap")
    short = [fmt.Operation(fmt.Op.ZERO, 0, BLOCK, digest)]
    _refused(tmp_path, key, _signed(key, _manifest(short, 2 * BLOCK)), old, "cover")
    past = [fmt.Operation(fmt.Op.COPY, 0, BLOCK, digest, src=SIZE)]
    _refused(tmp_path, key, _signed(key, _manifest(past, BLOCK, source=SIZE)), old,
             "past the source")
    moved = [fmt.Operation(fmt.Op.COPY, 0, BLOCK, digest, src=BLOCK)]
    _refused(tmp_path, key, _signed(key, _manifest(moved, BLOCK, source=SIZE)), old,
             "in place")
    lie = [fmt.Operation(fmt.Op.ZERO, 0, BLOCK, hashlib.sha256(b"x").digest())]
    _refused(tmp_path, key, _signed(key, _manifest(lie, BLOCK)), old, "zeros")


def test_replace_data_that_lies_is_refused(tmp_path, key, built):
    old, _, _ = built
    blob = zlib.compress(b"a" * BLOCK)
    ops = [fmt.Operation(fmt.Op.REPLACE, 0, BLOCK, hashlib.sha256(b"b" * BLOCK).digest(),
                         offset=0, size=len(blob))]
    _refused(tmp_path, key, _signed(key, _manifest(ops, BLOCK, blob), blob), old,
             "does not match")
    junk = os.urandom(64)
    ops = [fmt.Operation(fmt.Op.REPLACE, 0, BLOCK, hashlib.sha256(b"a" * BLOCK).digest(),
                         offset=0, size=len(junk))]
    _refused(tmp_path, key, _signed(key, _manifest(ops, BLOCK, junk), junk), old, "corrupt")


def test_oversized_manifest_length_is_refused(tmp_path, key, built):
    old, _, _ = built
    payload = fmt.MAGIC + struct.pack(">I", fmt.MAX_MANIFEST_BYTES + 1) + b"x" * 100
    _refused(tmp_path, key, payload, old, "larger than allowed")


def test_identical_images_give_a_tiny_payload(tmp_path, key):
    old, _, _ = _images(tmp_path)
    result = delta_build.build(old, old, tmp_path / "same.delta", key)
    assert result.changed_bytes == 0
    assert result.payload_size < 4096
