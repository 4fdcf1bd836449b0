"""Root device hints (``node.properties.root_device``), matched like Ironic does.

Supported hints: ``size`` (GiB; an integer or an operator string ``">= 40"``,
``"<= 100"``, ``"> 10"``, ``"< 10"``, ``"== 20"``, ``"!= 20"``), ``model``,
``vendor``, ``serial``, ``wwn`` (exact, case-insensitive; ``"s== X"`` is accepted
too), ``name`` (``/dev/sda`` or ``sda``, or the disk file path in the virtual lab)
and ``rotational`` (bool). Without hints the smallest disk of at least 4 GiB is
chosen, else the smallest disk, which is what IPA's default does. Unknown hint
names are an error rather than silently ignored.
"""
from __future__ import annotations

import operator
import os
from collections.abc import Callable, Iterable

from ramdisk_agent.errors import DeviceNotFound, InvalidContent
from ramdisk_agent.inventory import Disk

GIB = 1 << 30
MIN_DEFAULT_SIZE = 4 * GIB
SIZE_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
            ">": operator.gt, "<": operator.lt, "=": operator.eq}
STRING_HINTS = ("model", "vendor", "serial", "wwn")


def _parse_size(value) -> tuple:
    """Hint value -> (operator function, GiB)."""
    if isinstance(value, bool):
        raise InvalidContent(f"Invalid root device hint size {value!r}")
    if isinstance(value, (int, float)):
        return operator.eq, float(value)
    text = str(value).strip()
    for symbol in sorted(SIZE_OPS, key=len, reverse=True):
        if text.startswith(symbol):
            op, text = SIZE_OPS[symbol], text[len(symbol):].strip()
            break
    else:
        op = operator.eq
    try:
        return op, float(text)
    except ValueError:
        raise InvalidContent(f"Invalid root device hint size {value!r}") from None


def _string_value(value) -> str:
    text = str(value).strip()
    if text.startswith("s== "):
        text = text[4:]
    return text.lower()


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidContent(f"Invalid root device hint rotational {value!r}")


def _same_name(hint: str, disk_name: str) -> bool:
    hint = str(hint)
    if "/" not in hint:
        return os.path.basename(disk_name) == hint
    return os.path.normpath(hint) == os.path.normpath(disk_name)


def matches(disk: Disk, hints: dict) -> bool:
    """True when ``disk`` satisfies every hint."""
    for key, value in hints.items():
        if key == "size":
            op, gib = _parse_size(value)
            if not op(disk.size // GIB, gib):
                return False
        elif key in STRING_HINTS:
            if (getattr(disk, key) or "").lower() != _string_value(value):
                return False
        elif key == "name":
            if not _same_name(value, disk.name):
                return False
        elif key == "rotational":
            if disk.rotational != _bool(value):
                return False
        else:
            raise InvalidContent(_unsupported(key))
    return True


def _unsupported(key) -> str:
    return (f"Unsupported root device hint {key!r}; supported: "
            f"{', '.join(sorted(READERS))}")


#: Hint name -> how its value is read (raises InvalidContent when it cannot be).
READERS: dict[str, Callable[[object], object]] = {
    "size": _parse_size, "rotational": _bool, "name": str,
    **{key: _string_value for key in STRING_HINTS}}


def check(hints) -> None:
    """Refuse (InvalidContent) hints that ``matches`` could not read, before any disk is
    looked at: the command's validator runs this in the request."""
    if hints is None:
        return
    if not isinstance(hints, dict):
        raise InvalidContent('"node.properties.root_device" must be an object of root '
                             f"device hints, not {type(hints).__name__}")
    for key, value in hints.items():
        if key not in READERS:
            raise InvalidContent(_unsupported(key))
        READERS[key](value)


def select_root_disk(disks: Iterable[Disk], hints: dict | None) -> Disk:
    """The disk to deploy to; DeviceNotFound when none matches."""
    disks = list(disks)
    if not disks:
        raise DeviceNotFound("No disk found on this machine")
    if hints:
        found = [d for d in disks if matches(d, hints)]
        if not found:
            raise DeviceNotFound(f"No disk matches the root device hints {hints}")
        return found[0]
    big = [d for d in disks if d.size >= MIN_DEFAULT_SIZE]
    return min(big or disks, key=lambda d: d.size)
