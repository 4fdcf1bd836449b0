"""A delta applied in place on the passive slot (slotdelta.apply_in_place), on real
files with the real reader, hashing and AIO threads: only the changed ranges are
written, and the slot is still verified byte for byte - a slot that does not hold the
delta's source, new data that does not match its digest, a tampered or short payload
are all refused before the first write, and a write that did not land is caught by
the read-back."""
from __future__ import annotations

import dataclasses
import io
import random

import pytest

from conductor.updates import delta_build, keys
from ramdisk_agent.host.update import slotdelta
from ramdisk_agent.ramdisk.delta import target as delta_target
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
    return old, bytes(new), made.path, fmt.load_public_key(keys.public_pem(key)), key


@pytest.fixture
def slot(tmp_path, built):
    path = tmp_path / "passive.img"
    path.write_bytes(built[0])
    return path


@pytest.fixture
def writes(monkeypatch) -> list[tuple[int, int]]:
    """Every range the applier sends to the slot (delta/target.py's writer)."""
    sent: list[tuple[int, int]] = []
    real_send = delta_target._Writer.send

    def recording(writer, batch):
        sent.extend((offset, offset + length) for offset, length, _ in batch.requests)
        sent.extend((offset, offset + len(data)) for offset, data in batch.buffered)
        real_send(writer, batch)
    monkeypatch.setattr(delta_target._Writer, "send", recording)
    return sent


def changed_ranges(payload, public) -> list[tuple[int, int]]:
    with open(payload, "rb") as stream:
        manifest, _ = fmt.read_header(stream, public)
    return [(op.dst, op.dst + op.length) for op in manifest.operations
            if op.op is not fmt.Op.COPY]


def test_only_changed_ranges_are_written_and_the_slot_is_the_target(built, slot, writes):
    old, new, payload, public, _ = built
    assert slotdelta.apply_in_place(str(payload), str(slot), public, "2") == len(new)
    assert slot.read_bytes() == new
    changed = changed_ranges(payload, public)
    assert sum(end - start for start, end in writes) == \
        sum(end - start for start, end in changed) < SIZE // 10
    assert all(any(a <= start and end <= b for a, b in changed) for start, end in writes)


def test_a_slot_not_holding_the_source_is_refused_before_any_write(built, slot, writes):
    _, new, payload, public, _ = built
    changed = changed_ranges(payload, public)
    spot = next(o for o in range(0, SIZE, BLOCK)           # a block the delta only copies
                if not any(a <= o < b for a, b in changed))
    data = bytearray(slot.read_bytes())
    data[spot + 5] ^= 1
    slot.write_bytes(bytes(data))
    with pytest.raises(DeltaError, match="differs from the payload's base"):
        slotdelta.apply_in_place(str(payload), str(slot), public, "2")
    assert writes == []
    assert slot.read_bytes() == bytes(data)


def test_new_data_not_matching_its_digest_is_refused_before_any_write(built, slot, tmp_path,
                                                                      writes):
    """A payload signed with the right key whose one replace digest is wrong (the
    target digest made to add up): the result's check in the single pass refuses it."""
    old, _, payload, public, key = built
    raw = payload.read_bytes()
    with open(payload, "rb") as stream:
        manifest, header = fmt.read_header(stream, public)
    index = next(i for i, op in enumerate(manifest.operations) if op.op is fmt.Op.REPLACE)
    ops = list(manifest.operations)
    ops[index] = dataclasses.replace(ops[index], sha256=bytes(32))
    forged = dataclasses.replace(manifest, operations=ops,
                                 target_sha256=fmt.target_digest(op.sha256 for op in ops))
    head = io.BytesIO()
    fmt.write_header(head, forged, key)
    bad = tmp_path / "bad.delta"
    bad.write_bytes(head.getvalue() + raw[header:])
    with pytest.raises(DeltaError, match=f"replace at {ops[index].dst}"):
        slotdelta.apply_in_place(str(bad), str(slot), public, "2")
    assert writes == []
    assert slot.read_bytes() == old


@pytest.mark.parametrize("spoil", ["tamper", "truncate"])
def test_a_tampered_or_short_payload_writes_nothing(built, slot, tmp_path, spoil):
    old, _, payload, public, _ = built
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
    old, _, payload, public, _ = built
    real_send = delta_target._Writer.send
    dropped: list[tuple[int, int, int]] = []

    def losing(writer, batch):
        if not dropped and batch.requests:  # the first run never reaches the disk
            dropped.append(batch.requests.pop(0))
        real_send(writer, batch)
    monkeypatch.setattr(delta_target._Writer, "send", losing)
    with pytest.raises(DeltaError, match="read-back of bytes .* does not match"):
        slotdelta.apply_in_place(str(payload), str(slot), public, "2")
    offset, length, _ = dropped[0]
    assert slot.read_bytes()[offset:offset + length] == old[offset:offset + length]
