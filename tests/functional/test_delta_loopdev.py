"""Delta apply onto a real block device: a loop device over a file.

The agent applies deltas to /dev/sdX, not to files: here the same code runs on a
kernel block device (O_DIRECT and native AIO on a bdev, its own page cache). The
second test replays the fault the read-back exists for, a write the device
acknowledged but did not keep: after the writes are synced, the test puts the old
bytes of one changed block back on the media underneath the loop device (an
O_DIRECT write to the backing file) while the loop device's page cache still holds
the new bytes. A check that read the page cache would pass; the read-back reads the
device and must fail, naming the range.
"""
from __future__ import annotations

import mmap
import os
import random
import subprocess

import pytest

from conductor.updates import delta_build, keys
from ramdisk_agent.ramdisk.delta import apply as delta_apply
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError
from tests.functional.tools import require

MIB = 1 << 20
BLOCK = 4096
SIZE = 24 * MIB


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    """(payload path, public key, old bytes, new bytes, changed block numbers)."""
    root = tmp_path_factory.mktemp("delta-loop")
    rng = random.Random(17)
    old = rng.randbytes(SIZE)
    new = bytearray(old)
    changed = sorted(rng.sample(range(SIZE // BLOCK), SIZE // BLOCK // 50))   # 2 %
    for block in changed:
        new[block * BLOCK:(block + 1) * BLOCK] = rng.randbytes(BLOCK)
    (root / "old.img").write_bytes(old)
    (root / "new.img").write_bytes(new)
    key = keys.load_or_create(root / "delta.key")
    built = delta_build.build(root / "old.img", root / "new.img", root / "v2.delta", key)
    return str(built.path), fmt.load_public_key(keys.public_pem(key)), old, bytes(new), \
        changed


@pytest.fixture
def loop(tmp_path, payload):
    """(loop device, backing file) holding the old image."""
    losetup = require("losetup")
    backing = tmp_path / "backing.img"
    backing.write_bytes(payload[2])
    device = subprocess.run([losetup, "--find", "--show", str(backing)], check=True,
                            capture_output=True, text=True, timeout=30).stdout.strip()
    yield device, backing
    subprocess.run([losetup, "-d", device], check=True, timeout=30)


def test_applies_onto_a_loop_device(payload, loop):
    path, public, _, new, changed = payload
    device, backing = loop
    result = delta_apply.apply(path, device, None, public)
    assert result.written_bytes == len(changed) * BLOCK
    assert list(result.phases)[-1] == "read-back"
    with open(device, "rb") as disk:
        assert disk.read(SIZE) == new
    assert backing.read_bytes() == new


def _put_on_media(backing, offset: int, data: bytes) -> None:
    """Write ``data`` to the backing file with O_DIRECT: the media, not a cache."""
    aligned = mmap.mmap(-1, len(data))
    aligned.write(data)
    fd = os.open(backing, os.O_WRONLY | os.O_DIRECT)
    try:
        assert os.pwritev(fd, [aligned], offset) == len(data)
    finally:
        os.close(fd)
        aligned.close()


def test_a_write_the_device_did_not_keep_is_caught(payload, loop):
    path, public, old, new, changed = payload
    device, backing = loop
    lost = changed[len(changed) // 2] * BLOCK
    cache_said = []

    def lose_one_write(stage, done, total):
        if stage != "read-back" or done != 0:
            return
        with open(device, "rb") as cached:      # the new bytes, now in the page cache
            cached.seek(lost)
            assert cached.read(BLOCK) == new[lost:lost + BLOCK]
        _put_on_media(backing, lost, old[lost:lost + BLOCK])
        with open(device, "rb") as cached:      # the page cache still says "written"
            cached.seek(lost)
            cache_said.append(cached.read(BLOCK))
    # The last close of a block device drops its page cache: hold it open meanwhile,
    # as udev or a mounted partition would, so that the cache can go stale.
    holder = os.open(device, os.O_RDONLY)
    try:
        with pytest.raises(DeltaError, match=f"read-back of bytes {lost}-{lost + BLOCK} "
                           "does not match: the disk is half-written"):
            delta_apply.apply(path, device, None, public, lose_one_write)
    finally:
        os.close(holder)
    assert cache_said == [new[lost:lost + BLOCK]], "the page cache was not left stale"
    data = backing.read_bytes()
    assert data[lost:lost + BLOCK] == old[lost:lost + BLOCK]
    assert data[:lost] == new[:lost] and data[lost + BLOCK:] == new[lost + BLOCK:]
