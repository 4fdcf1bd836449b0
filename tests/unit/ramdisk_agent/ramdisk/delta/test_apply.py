"""Applying a delta (ramdisk_agent/ramdisk/delta/apply.py): the result check still catches
a write that did not land, and the phases are reported. Build, refusals and the source
check are in tests/unit/conductor/updates/test_delta_build.py and test_source.py."""
from __future__ import annotations

import random

import pytest

from conductor.updates import delta_build, keys
from ramdisk_agent.ramdisk.delta import apply as delta_apply
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

pytestmark = pytest.mark.usefixtures("inline_thread_pools")

SIZE = 4 << 20
BLOCK = 4096


@pytest.fixture
def lab(tmp_path):
    """(payload, public key, old bytes, new bytes, changed block numbers, disk)."""
    rng = random.Random(5)
    old = rng.randbytes(SIZE)
    new = bytearray(old)
    changed = sorted(rng.sample(range(SIZE // BLOCK), 40))
    for block in changed:
        new[block * BLOCK:(block + 1) * BLOCK] = rng.randbytes(BLOCK)
    (tmp_path / "old.img").write_bytes(old)
    (tmp_path / "new.img").write_bytes(new)
    key = keys.load_or_create(tmp_path / "delta.key")
    result = delta_build.build(tmp_path / "old.img", tmp_path / "new.img",
                               tmp_path / "p.delta", key)
    disk = tmp_path / "disk.img"
    disk.write_bytes(old)
    return (str(result.path), fmt.load_public_key(keys.public_pem(key)), old, bytes(new),
            changed, disk)


def test_a_write_that_did_not_land_is_caught_by_the_read_back(lab):
    payload, public, old, new, changed, disk = lab
    lost = changed[len(changed) // 2] * BLOCK

    def undo_one_write(stage, done, total):
        if stage == "read-back" and done == 0:   # writes done and synced: lose one
            with open(disk, "r+b") as stream:
                stream.seek(lost)
                stream.write(old[lost:lost + BLOCK])
    with pytest.raises(DeltaError, match=f"read-back of bytes {lost}-.* does not match: "
                       "the disk is half-written"):
        delta_apply.apply(payload, str(disk), None, public, undo_one_write)
    data = disk.read_bytes()
    assert data[lost:lost + BLOCK] == old[lost:lost + BLOCK]
    assert data[:lost] == new[:lost]            # every other write did land


def test_apply_reports_its_phases_and_stages(lab):
    payload, public, _, new, changed, disk = lab
    stages = []
    result = delta_apply.apply(payload, str(disk), None, public,
                               lambda stage, done, total: stages.append((stage, done, total)))
    assert disk.read_bytes() == new
    assert list(result.phases) == ["header", "verify-source", "verify-data", "write",
                                   "read-back"]
    assert result.written_bytes == len(changed) * BLOCK
    order = list(dict.fromkeys(stage for stage, _, _ in stages))
    assert order == ["verify-source", "write", "read-back"]
    assert ("write", 0, result.written_bytes) == next(s for s in stages if s[0] == "write")
    assert stages[-1] == ("read-back", result.written_bytes, result.written_bytes)
