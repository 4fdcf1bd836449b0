"""The create options of a patch strategy, checked once at the edge (400 otherwise).

StarlingX's VIM API (specs/starlingx-patching.md §6.1): ``controller-apply-type``,
``storage-apply-type``, ``worker-apply-type`` and ``default-instance-action`` are
required; ``swift-apply-type`` defaults to ignore, ``max-parallel-worker-hosts`` to
2 (2..100), ``alarm-restrictions`` to strict. ``parallel`` controllers are accepted
here and fail the build, as StarlingX does. Unknown keys are refused: a misspelt
option silently ignored would build a strategy the operator did not ask for.
"""
from __future__ import annotations

from typing import Any

from conductor import errors
from ramdisk_agent.wire import checksum
from ramdisk_agent.wire.errors import ChecksumError

APPLY_TYPES = ("serial", "parallel", "ignore")
CHOICES: dict[str, tuple[str, ...]] = {
    "controller-apply-type": APPLY_TYPES,
    "storage-apply-type": APPLY_TYPES,
    "swift-apply-type": APPLY_TYPES,
    "worker-apply-type": APPLY_TYPES,
    "default-instance-action": ("migrate", "stop-start"),
    "alarm-restrictions": ("strict", "relaxed"),
}
REQUIRED = ("controller-apply-type", "storage-apply-type", "worker-apply-type",
            "default-instance-action")
DEFAULTS: dict[str, Any] = {"swift-apply-type": "ignore", "max-parallel-worker-hosts": 2,
                            "alarm-restrictions": "strict"}
MIN_PARALLEL, MAX_PARALLEL = 2, 100
#: Order of the keys in the strategy JSON (StarlingX's).
ORDER = ("controller-apply-type", "storage-apply-type", "swift-apply-type",
         "worker-apply-type", "max-parallel-worker-hosts", "default-instance-action",
         "alarm-restrictions")


def _known_only(body: dict[str, Any], order: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(order))
    if unknown:
        raise errors.InvalidParameter(
            f"Unknown strategy option(s): {', '.join(unknown)}; the options are "
            f"{', '.join(order)}.")


def _one_of(values: dict[str, Any], key: str, choices: tuple[str, ...]) -> None:
    if values[key] not in choices:
        raise errors.InvalidParameter(
            f"Invalid value for {key}: {values[key]!r}; expected one of "
            f"{', '.join(choices)}.")


def _max_parallel(values: dict[str, Any]) -> None:
    parallel = values["max-parallel-worker-hosts"]
    if not isinstance(parallel, int) or isinstance(parallel, bool):
        raise errors.InvalidParameter("Invalid value for max-parallel-worker-hosts: "
                                      f"expected an integer ({MIN_PARALLEL}..{MAX_PARALLEL}).")
    if not MIN_PARALLEL <= parallel <= MAX_PARALLEL:
        raise errors.InvalidParameter("Invalid value for max-parallel-worker-hosts")


def parse(body: dict[str, Any]) -> dict[str, Any]:
    """The options of a create request body, with defaults, in StarlingX's order."""
    _known_only(body, ORDER)
    for key in REQUIRED:
        if body.get(key) is None:
            raise errors.InvalidParameter(f"Mandatory field '{key}' missing.")
    values = dict(DEFAULTS)
    values.update({k: v for k, v in body.items() if v is not None})
    for key, choices in CHOICES.items():
        _one_of(values, key, choices)
    _max_parallel(values)
    return {key: values[key] for key in ORDER}


#: The image-update strategy (metalcast's own, the same engine): a rolling re-image
#: of the active hosts through the ramdisk (rebuild), with a delta payload when given.
IMAGE_ORDER = ("image", "image-checksum", "delta-url", "delta-version",
               "worker-apply-type", "max-parallel-worker-hosts", "alarm-restrictions")
IMAGE_TEXT = ("image", "image-checksum", "delta-url", "delta-version")


def parse_image(body: dict[str, Any]) -> dict[str, Any]:
    """The options of an image-update create body, with defaults."""
    _known_only(body, IMAGE_ORDER)
    for key in ("image", "image-checksum"):
        if not body.get(key):
            raise errors.InvalidParameter(f"Mandatory field '{key}' missing.")
    for key in IMAGE_TEXT:
        if key in body and body[key] is not None and not isinstance(body[key], str):
            raise errors.InvalidParameter(f"Invalid value for {key}: expected a string.")
    try:
        checksum.parse_text(body["image-checksum"], "image-checksum")
    except ChecksumError as exc:
        raise errors.InvalidParameter(f"Invalid value for image-checksum: {exc}.") from None
    values = {"delta-url": None, "delta-version": None, "worker-apply-type": "serial",
              "max-parallel-worker-hosts": 2, "alarm-restrictions": "strict"}
    values.update({k: v for k, v in body.items() if v is not None})
    _one_of(values, "worker-apply-type", ("serial", "parallel"))
    _one_of(values, "alarm-restrictions", CHOICES["alarm-restrictions"])
    _max_parallel(values)
    return {key: values[key] for key in IMAGE_ORDER}
