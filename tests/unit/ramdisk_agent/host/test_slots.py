"""The pure parts of the A/B slot bits (ramdisk_agent/host/slots.py): the bit layout,
GRUB gptprio.next's choice, cgpt prioritize's ranking. The disk side is checked
against the real cgpt in tests/functional/test_gpt_slots.py."""
from __future__ import annotations

import pytest

from ramdisk_agent.errors import InvalidSlot
from ramdisk_agent.host.slots import (
    CHROMEOS_KERNEL_TYPE,
    COREOS_USR_TYPE,
    Slot,
    SlotBits,
    choose_slot,
    prioritized,
)

ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"


def slot(number: int, priority: int, tries: int, successful: bool,
         type_guid: str = COREOS_USR_TYPE, other_bits: int = 0) -> Slot:
    return Slot(number, type_guid, f"00000000-0000-0000-0000-{number:012d}", f"P{number}",
                SlotBits(priority, tries, successful).apply(other_bits))


def test_bits_48_to_56_and_nothing_else():
    other = (1 << 63) | (1 << 60) | (1 << 2) | 1      # bit 60, legacy boot, required
    attributes = SlotBits(0xA, 0x5, True).apply(other | (0x1FF << 48))
    assert attributes == other | (0xA << 48) | (0x5 << 52) | (1 << 56)
    assert SlotBits.from_attributes(attributes) == SlotBits(10, 5, True)
    assert SlotBits(0, 0, False).apply(attributes) == other


#: (slots, choice number or None, bits after the boot)
GPTPRIO = [
    # the proven slot with the higher priority; a successful slot with tries keeps its
    # priority but loses a try (gptprio decrements whatever it picks)
    ([slot(3, 1, 0, True), slot(4, 2, 0, True)], 4, SlotBits(2, 0, True)),
    ([slot(3, 1, 0, True), slot(4, 2, 3, True)], 4, SlotBits(2, 2, True)),
    # an update on trial: tried once, then (tries 0, not successful) skipped
    ([slot(3, 1, 0, True), slot(4, 2, 1, False)], 4, SlotBits(2, 0, False)),
    ([slot(3, 1, 0, True), slot(4, 2, 0, False)], 3, SlotBits(1, 0, True)),
    # priority 0 never boots, even proven
    ([slot(3, 0, 0, True), slot(4, 1, 1, False)], 4, SlotBits(1, 0, False)),
    # equal priorities: the first in table order
    ([slot(3, 2, 0, True), slot(4, 2, 0, True)], 3, SlotBits(2, 0, True)),
    # other partition types are not slots
    ([slot(1, 15, 15, True, ESP), slot(3, 1, 0, True)], 3, SlotBits(1, 0, True)),
    # nothing bootable
    ([slot(3, 0, 5, True), slot(4, 3, 0, False)], None, None),
    ([], None, None),
]


@pytest.mark.parametrize("slots,number,after", GPTPRIO)
def test_choose_slot_is_gptprio_next(slots, number, after):
    choice = choose_slot(slots)
    if number is None:
        assert choice is None
        return
    assert choice is not None
    assert (choice.number, choice.after) == (number, after)
    assert choice.before == next(s.bits for s in slots if s.number == number)
    assert choice.consumed_try == (choice.before.tries > 0)


def test_choose_slot_takes_the_slot_type():
    slots = [slot(2, 1, 0, True, CHROMEOS_KERNEL_TYPE), slot(3, 5, 0, True)]
    assert choose_slot(slots, CHROMEOS_KERNEL_TYPE).number == 2


#: priorities of slots 3..6 -> (target, max) -> new priorities (cgpt_prioritize.c)
RANKING = [
    ([2, 1], (4, None), [1, 2]),
    ([0, 0], (4, None), [0, 1]),                 # zeros stay zero, the target rises
    ([3, 3, 1, 0], (6, None), [2, 2, 1, 3]),     # equal stays equal, dense from #ranks
    ([15, 14, 13, 12], (6, 2), [1, 1, 1, 2]),    # coalesced at 1 below max
    ([1, 1, 1, 1], (4, 10), [9, 10, 9, 9]),
    (list(range(1, 16)) + [0], (18, None), [1] + list(range(1, 15)) + [15]),
]


@pytest.mark.parametrize("start,call,expected", RANKING)
def test_prioritized_is_cgpt_prioritize(start, call, expected):
    slots = [slot(n, p, 0, True) for n, p in enumerate(start, start=3)]
    target, top = call
    assert prioritized(slots, target, top) == dict(enumerate(expected, start=3))


def test_prioritized_ranks_only_the_targets_type():
    slots = [slot(1, 7, 0, True, ESP), slot(3, 1, 0, True), slot(4, 1, 0, False)]
    assert prioritized(slots, 4) == {3: 1, 4: 2}


def test_prioritized_refuses_an_unknown_partition():
    with pytest.raises(InvalidSlot, match="partition 9"):
        prioritized([slot(3, 1, 0, True)], 9)
