"""A/B root slots: the ChromeOS/Flatcar GPT attribute bits, read and edited as cgpt does.

Each slot partition carries, in its GPT entry's attribute field (vboot
``cgptlib_internal.h``; GRUB's ``gptprio`` reads the same bits):

- bits 48-51: priority, 15 highest, 0 = never boot;
- bits 52-55: tries left, 0-15;
- bit 56: successful, set once the slot booted and passed its health checks.

Every other attribute bit (required, legacy-BIOS-bootable, the rest of 48-63) is kept.
Edits go through :mod:`ramdisk_agent.host.gptdisk`, which writes both GPT copies in a
crash-safe order and repairs a corrupted primary from the backup first. The operations
are named after Flatcar's scripts: ``flatcar-postinst`` (:meth:`SlotDisk.mark_for_trial`),
``flatcar-setgoodroot`` (:meth:`SlotDisk.mark_good`); :func:`choose_slot` is GRUB's
``gptprio.next``, for the lab firmware and the QEMU initramfs chooser.

The slot group is the partitions sharing the target's type GUID: upstream cgpt ranks
ChromeOS kernel partitions, Flatcar's cgpt (coreos/seismograph) and ``gptprio`` the
CoreOS ``/usr`` type, so one rule covers both.
"""
from __future__ import annotations

import dataclasses
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence

from ramdisk_agent.errors import InvalidSlot
from ramdisk_agent.host import gptdisk

#: Flatcar's USR-A/USR-B type ("CoreOS /usr"); GRUB gptprio.next picks among these.
COREOS_USR_TYPE = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6"
#: ChromeOS kernel partitions; upstream ``cgpt prioritize`` ranks these.
CHROMEOS_KERNEL_TYPE = "fe3a2a5d-4f32-41a7-b725-accc3285a309"

_ATTRS = 48                         # offset of the attribute field in a GPT entry
PRIORITY_SHIFT, TRIES_SHIFT, SUCCESSFUL_SHIFT = 48, 52, 56
_SLOT_MASK = (0xF << PRIORITY_SHIFT) | (0xF << TRIES_SHIFT) | (1 << SUCCESSFUL_SHIFT)
MAX_PRIORITY = MAX_TRIES = 15
#: cgpt prioritize's marker for "the partition being raised": above any real priority.
_RAISED = 99


@dataclasses.dataclass(frozen=True)
class SlotBits:
    """The three fields of one partition's slot state."""

    priority: int
    tries: int
    successful: bool

    @classmethod
    def from_attributes(cls, attributes: int) -> SlotBits:
        return cls((attributes >> PRIORITY_SHIFT) & 0xF, (attributes >> TRIES_SHIFT) & 0xF,
                   bool((attributes >> SUCCESSFUL_SHIFT) & 1))

    def apply(self, attributes: int) -> int:
        """``attributes`` with these bits in place and every other bit as it was."""
        return (attributes & ~_SLOT_MASK) | (self.priority << PRIORITY_SHIFT) \
            | (self.tries << TRIES_SHIFT) | (int(self.successful) << SUCCESSFUL_SHIFT)

    @property
    def bootable(self) -> bool:
        """What gptprio accepts: a priority, and proven or with a try left."""
        return self.priority > 0 and (self.successful or self.tries > 0)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One used partition of the table, with its attribute field."""

    number: int
    type_guid: str
    guid: str
    label: str
    attributes: int

    @property
    def bits(self) -> SlotBits:
        return SlotBits.from_attributes(self.attributes)


@dataclasses.dataclass(frozen=True)
class SlotChoice:
    """What gptprio.next decided: the slot to boot, its bits before and after the boot."""

    number: int
    before: SlotBits
    after: SlotBits

    @property
    def consumed_try(self) -> bool:
        return self.after.tries < self.before.tries


def parse_slots(entries: bytes, entry_size: int) -> list[Slot]:
    """The used partitions of an entry array, in table order."""
    slots = []
    for index in range(len(entries) // entry_size):
        entry = entries[index * entry_size:(index + 1) * entry_size]
        if entry[:16] == bytes(16):
            continue
        attributes = struct.unpack_from("<Q", entry, _ATTRS)[0]
        label = entry[56:128].decode("utf-16-le", "replace").split("\x00", 1)[0]
        slots.append(Slot(index + 1, str(uuid.UUID(bytes_le=entry[:16])),
                          str(uuid.UUID(bytes_le=entry[16:32])), label, attributes))
    return slots


def choose_slot(slots: Sequence[Slot], slot_type: str = COREOS_USR_TYPE) -> SlotChoice | None:
    """GRUB ``gptprio.next``: the highest priority among slots of ``slot_type`` that are
    successful or have tries left (the first in table order on a tie), with one try
    consumed if it has any left (also from a successful slot, as gptprio does); None
    when no slot can boot. Pure: the caller writes ``after`` back."""
    best: Slot | None = None
    for slot in slots:
        if slot.type_guid != slot_type or not slot.bits.bootable:
            continue
        if best is None or slot.bits.priority > best.bits.priority:
            best = slot
    if best is None:
        return None
    before = best.bits
    after = dataclasses.replace(before, tries=max(before.tries - 1, 0))
    return SlotChoice(best.number, before, after)


def prioritized(slots: Sequence[Slot], number: int,
                max_priority: int | None = None) -> dict[int, int]:
    """``cgpt prioritize -i number [-P max_priority]``: the new priority of every slot
    of the target's type.

    The target moves above all others; the others keep their order, equal priorities
    stay equal, and the ranks are renumbered densely downwards from ``max_priority``
    (default: the number of ranks, at most 15), coalescing at 1. Slots at priority 0
    stay at 0: prioritize never makes a slot bootable except the target.
    """
    target = _find(slots, number)
    group = [slot for slot in slots if slot.type_guid == target.type_guid]
    ranks = {slot.number: _RAISED if slot.number == number else slot.bits.priority
             for slot in group}
    levels = sorted({rank for rank in ranks.values() if rank > 0}, reverse=True)
    priority = max_priority if max_priority else min(len(levels), MAX_PRIORITY)
    new_level = {}
    for level in levels:
        new_level[level] = priority
        priority = max(priority - 1, 1)
    return {slot: new_level.get(rank, 0) for slot, rank in ranks.items()}


class SlotDisk:
    """The A/B slots of one disk (image file or block device); each method is one
    atomic rewrite of both GPT copies."""

    def __init__(self, path: str):
        self.path = path

    def slots(self) -> list[Slot]:
        """The used partitions as readers see them (the trusted copy)."""
        table = gptdisk.read(self.path)
        return parse_slots(table.trusted.entries, table.trusted.header.entry_size)

    def bits(self, part: int) -> SlotBits:
        return _find(self.slots(), part).bits

    def repair(self) -> bool:
        """``cgpt repair``: rebuild a missing or differing copy; whether it wrote."""
        return gptdisk.repair(self.path)

    def set_attributes(self, part: int, *, priority: int | None = None,
                       tries: int | None = None, successful: bool | None = None) -> SlotBits:
        """``cgpt add -i part [-P] [-T] [-S]``: the fields given, the rest unchanged."""
        _check(priority=priority, tries=tries)

        def change(bits: SlotBits) -> SlotBits:
            return SlotBits(bits.priority if priority is None else priority,
                            bits.tries if tries is None else tries,
                            bits.successful if successful is None else successful)
        return self._edit(part, {part: change})[part]

    def prioritize(self, part: int, max_priority: int | None = None) -> dict[int, SlotBits]:
        """``cgpt prioritize -i part``: ``part`` first, the others renumbered below it."""
        _check(priority=max_priority, allow_zero=False)
        return self._edit(part, {}, prioritize=True, max_priority=max_priority)

    def mark_good(self, part: int) -> SlotBits:
        """``cgpt add -S1 -T0`` (flatcar-setgoodroot): the booted slot is proven."""
        return self.set_attributes(part, successful=True, tries=0)

    def mark_for_trial(self, part: int, tries: int = 1) -> dict[int, SlotBits]:
        """flatcar-postinst: ``cgpt add -S0 -T<tries>`` then ``cgpt prioritize``, in one
        rewrite, so no crash leaves the slot raised with stale bits or the reverse."""
        _check(tries=tries, allow_zero=False)

        def trial(bits: SlotBits) -> SlotBits:
            return SlotBits(bits.priority, tries, False)
        return self._edit(part, {part: trial}, prioritize=True)

    def mark_unbootable(self, part: int) -> SlotBits:
        """Priority 0 (and no tries, not successful) before the slot is overwritten:
        firmware never picks it, and the old successful bit no longer describes it."""
        return self.set_attributes(part, priority=0, tries=0, successful=False)

    def boot_next(self, slot_type: str = COREOS_USR_TYPE) -> SlotChoice | None:
        """What firmware does at boot: :func:`choose_slot`, its consumed try written back."""
        choice = choose_slot(self.slots(), slot_type)
        if choice is not None and choice.consumed_try:
            self._edit(choice.number, {choice.number: lambda _bits: choice.after})
        return choice

    def _edit(self, part: int, changes: Mapping[int, Callable[[SlotBits], SlotBits]], *,
              prioritize: bool = False, max_priority: int | None = None
              ) -> dict[int, SlotBits]:
        """One rewrite: ``changes`` applied, then the ranking if asked; the new bits of
        every slot of the target's type."""
        result: dict[int, SlotBits] = {}

        def edit(entries: bytearray, header: gptdisk.Header) -> None:
            slots = parse_slots(bytes(entries), header.entry_size)
            target = _find(slots, part, header.entry_count)
            new_bits = {slot.number: slot.bits for slot in slots}
            for number, change in changes.items():
                new_bits[number] = change(new_bits[number])
            if prioritize:
                ranked = prioritized(_with_bits(slots, new_bits), part, max_priority)
                for number, priority in ranked.items():
                    new_bits[number] = dataclasses.replace(new_bits[number],
                                                           priority=priority)
            for slot in slots:
                if new_bits[slot.number] != slot.bits:
                    _store(entries, header.entry_size, slot,
                           new_bits[slot.number].apply(slot.attributes))
            result.update({slot.number: new_bits[slot.number] for slot in slots
                           if slot.type_guid == target.type_guid})
        gptdisk.rewrite(self.path, edit)
        return result


def _find(slots: Sequence[Slot], number: int, entry_count: int | None = None) -> Slot:
    if entry_count is not None and not (isinstance(number, int) and 1 <= number <= entry_count):
        raise InvalidSlot(f"partition {number!r} does not exist: the table has entries "
                          f"1..{entry_count}")
    for slot in slots:
        if slot.number == number:
            return slot
    raise InvalidSlot(f"partition {number} is not a used partition of the table")


def _with_bits(slots: Sequence[Slot], bits: Mapping[int, SlotBits]) -> list[Slot]:
    return [dataclasses.replace(slot, attributes=bits[slot.number].apply(slot.attributes))
            for slot in slots]


def _store(entries: bytearray, entry_size: int, slot: Slot, attributes: int) -> None:
    struct.pack_into("<Q", entries, (slot.number - 1) * entry_size + _ATTRS, attributes)


def _check(*, priority: int | None = None, tries: int | None = None,
           allow_zero: bool = True) -> None:
    low = 0 if allow_zero else 1
    for name, value in (("priority", priority), ("tries", tries)):
        if value is not None and not (isinstance(value, int) and low <= value <= 15):
            raise InvalidSlot(f"{name} must be an integer {low}..15, not {value!r}")
