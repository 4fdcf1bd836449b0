"""RPM version comparison (rpmvercmp / labelCompare), in pure Python.

Shared by the host agent (plan.py) and the conductor (conductor/patching), which
imports it from here as ARCHITECTURE.md has both sides share formats. Neither side
can count on the rpm bindings (the conductor's venv lacks them), and the
comparison runs thousands of times per host report, so it is done here
the way rpm's ``rpmvercmp`` does it: split into alphanumeric segments, ``~``
sorts before anything (pre-releases), ``^`` after the base but before more
segments, numeric segments beat alphabetic ones, numbers compare as integers.
tests/functional/test_patch_rpmver.py checks it against python3-rpm's labelCompare.
"""
from __future__ import annotations

import functools
import re

_SEGMENT = re.compile(r"([0-9]+|[A-Za-z]+|~|\^)")


def _segments(value: str) -> list[str]:
    return _SEGMENT.findall(value)


@functools.lru_cache(maxsize=65536)
def vercmp(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``."""
    if a == b:
        return 0
    left, right = _segments(a), _segments(b)
    while left or right:
        x = left.pop(0) if left else None
        y = right.pop(0) if right else None
        for marker in ("~", "^"):
            if x == marker or y == marker:
                if x == y:
                    break
                if marker == "~":
                    return -1 if x == "~" else 1
                # "^": newer than the same version without it, older than any more segment
                if x is None:
                    return -1
                if y is None:
                    return 1
                return -1 if x == "^" else 1
        else:
            if x is None or y is None:
                return -1 if x is None else 1
            x_num, y_num = x.isdigit(), y.isdigit()
            if x_num != y_num:
                return 1 if x_num else -1
            if x_num:
                x_int, y_int = int(x), int(y)
                if x_int != y_int:
                    return 1 if x_int > y_int else -1
            elif x != y:
                return 1 if x > y else -1
    return 0


def label_compare(a: tuple[str, str, str], b: tuple[str, str, str]) -> int:
    """rpm.labelCompare over (epoch, version, release); empty epoch means 0."""
    for x, y in zip(a, b):
        result = vercmp(x or "0", y or "0") if (x or y) else 0
        if result:
            return result
    return 0


def split_evr(text: str) -> tuple[str, str, str]:
    """``[e:]v-r`` -> (epoch, version, release)."""
    epoch, _, rest = text.rpartition(":") if ":" in text else ("0", "", text)
    version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return epoch or "0", version, release
