"""A delta applied in place on the passive slot (slotdelta.apply_in_place), on real
files with the real pipeline threads: only the changed ranges are written, and the
slot is still verified byte for byte - a slot that does not hold the delta's source,
a tampered or short payload, and a write that did not land are all refused."""
from __future__ import annotations

import random

import pytest

from conductor.updates import delta_build, keys
from ramdisk_agent.host.update import slotdelta
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

MIB = 1 << 20
BLOCK = 4096
SIZE = 20 * MIB + 3 * BLOCK      # five 4 MiB windows and a bit


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("in-place")
    rng = random.Random(7)
    old = rng.randbytes(SIZE)
    new = bytearray(old)
    for block in rng.sample(range(SIZE // BLOCK), 60):
        new[block * BLOCK:(block + 1) * BLOCK] = rng.randbytes(BLOCK)
    new[BLOCK:3 * BLOCK] = bytes(2 * BLOCK)                 # a zero range too
    (root / "old.img").write_bytes(old)
    (root / "new.img").write_bytes(new)
    key = keys.load_or_create(root / "delta.key")
    made = delta_build.build(root / "old.img", root / "new.img", root / "p.delta", key,
                             version="2")
    return old, bytes(new), made.path, fmt.load_public_key(keys.public_pem(key))


@pytest.fixture
def slot(tmp_path, built):
    path = tmp_path / "passive.img"
    path.write_bytes(built[0])
    return path


def changed_ranges(payload, public) -> list[tuple[int, int]]:
    with open(payload, "rb") as stream:
        manifest, _ = fmt.read_header(stream, public)
    return [(op.dst, op.dst + op.length) for op in manifest.operations
            if op.op is not fmt.Op.COPY]


def test_only_changed_ranges_are_written_and_the_slot_is_the_target(built, slot,
                                                                   monkeypatch):
    old, new, payload, public = built
    written: list[tuple[int, int]] = []
    real_write = slotdelta.DiskTarget.write

    def recording(self, offset, data):
        written.append((offset, offset + len(data)))
        real_write(self, offset, data)
    monkeypatch.setattr(slotdelta.DiskTarget, "write", recording)
    assert slotdelta.apply_in_place(str(payload), str(slot), public, "2") == len(new)
    assert slot.read_bytes() == new
    changed = changed_ranges(payload, public)
    assert sum(end - start for start, end in written) == \
        sum(end - start for start, end in changed) < SIZE // 10
    assert all(any(a <= start and end <= b for a, b in changed) for start, end in written)


def test_a_slot_not_holding_the_source_is_refused(built, slot):
    _, new, payload, public = built
    changed = changed_ranges(payload, public)
    spot = next(o for o in range(0, SIZE, BLOCK)           # a block the delta only copies
                if not any(a <= o < b for a, b in changed))
    data = bytearray(slot.read_bytes())
    data[spot + 5] ^= 1
    slot.write_bytes(bytes(data))
    with pytest.raises(DeltaError, match="do not match their signed digest"):
        slotdelta.apply_in_place(str(payload), str(slot), public, "2")


@pytest.mark.parametrize("spoil", ["tamper", "truncate"])
def test_a_tampered_or_short_payload_writes_nothing(built, slot, tmp_path, spoil):
    old, _, payload, public = built
    bad = tmp_path / "bad.delta"
    data = bytearray(payload.read_bytes())
    if spoil == "tamper":
        data[-100] ^= 0xFF
    else:
        del data[-100:]
    bad.write_bytes(bytes(data))
    with pytest.raises(DeltaError):
        slotdelta.apply_in_place(str(bad), str(slot), public, "2")
    assert slot.read_bytes() == old


def test_a_write_that_did_not_land_is_caught(built, slot, monkeypatch):
    _, _, payload, public = built
    real_write = slotdelta.DiskTarget.write
    dropped: list[int] = []

    def losing(self, offset, data):
        if not dropped:               # the first changed range never reaches the disk
            dropped.append(offset)
            return
        real_write(self, offset, data)
    monkeypatch.setattr(slotdelta.DiskTarget, "write", losing)
    with pytest.raises(DeltaError, match="did not land"):
        slotdelta.apply_in_place(str(payload), str(slot), public, "2")
    assert dropped
