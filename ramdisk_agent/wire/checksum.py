"""The image checksum policy, one for the conductor and the agent.

An image's expected digest comes in one of Ironic's shapes: an algorithm + value
pair (``os_hash_algo``/``os_hash_value``, what Glance records; ``image_os_hash_*`` in
instance_info), or the legacy ``checksum`` (``image_checksum``): ``"<algo>:<hex>"``,
or bare hex whose length names the algorithm. :func:`parse` turns any of them into a
:class:`Checksum` or raises :class:`ChecksumError` naming the accepted algorithms.
The conductor parses instance_info before a deploy starts (400); the agent parses
image_info again, as it may be driven by another conductor: the same function, so
the two sides never disagree.

Only SHA-2 is accepted. MD5 is refused as Ironic refuses it since 2023.2 (``[agent]
allow_md5_checksum = False``): collisions are cheap, so a matching MD5 does not prove
the image is the one meant. SHA-1 has practical collisions too (SHAttered, 2017) and
the Ironic spec names no reason to keep it, so it is refused the same way. The
refused algorithms stay in the table so a bare MD5 or SHA-1 digest is recognised and
refused by name rather than reported as an unknown length.
"""
from __future__ import annotations

import dataclasses
import re

from ramdisk_agent.wire.errors import ChecksumError

_HEX = re.compile(r"[0-9a-f]+")


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One hash algorithm as checksums name it."""

    name: str          #: the hashlib name, as in ``os_hash_algo``
    hex_length: int    #: digits of its hex digest: how a bare checksum is recognised
    accepted: bool     #: whether an image may be verified with it


ALGORITHMS: dict[str, Algorithm] = {algo.name: algo for algo in (
    Algorithm("md5", 32, accepted=False),
    Algorithm("sha1", 40, accepted=False),
    Algorithm("sha256", 64, accepted=True),
    Algorithm("sha384", 96, accepted=True),
    Algorithm("sha512", 128, accepted=True),
)}
BY_HEX_LENGTH: dict[int, Algorithm] = {algo.hex_length: algo for algo in ALGORITHMS.values()}
ACCEPTED: tuple[str, ...] = tuple(name for name, algo in ALGORITHMS.items() if algo.accepted)
_ACCEPTED_TEXT = ", ".join(ACCEPTED)


@dataclasses.dataclass(frozen=True)
class Checksum:
    """An accepted algorithm and the expected hex digest (lower case)."""

    algo: str
    value: str

    def __str__(self) -> str:
        return f"{self.algo}:{self.value}"

    def image_info_fields(self) -> dict[str, str]:
        """The ``os_hash_algo``/``os_hash_value`` pair of the agent's image_info."""
        return {"os_hash_algo": self.algo, "os_hash_value": self.value}


@dataclasses.dataclass(frozen=True)
class FieldNames:
    """What each side calls the three fields, so an error names the one to fix."""

    algo: str = "os_hash_algo"
    value: str = "os_hash_value"
    checksum: str = "checksum"


#: The agent's image_info names (IPA's); the conductor's instance_info has its own.
IMAGE_INFO_FIELDS = FieldNames()


def parse(algo: object = None, value: object = None, checksum: object = None,
          names: FieldNames = IMAGE_INFO_FIELDS) -> Checksum:
    """The expected checksum: the algo + value pair when both are set, else ``checksum``."""
    if algo and value:
        return _checked(_text(algo, names.algo), _text(value, names.value), names.value)
    if checksum:
        return parse_text(checksum, names.checksum)
    raise ChecksumError(f"the image checksum is missing: set {names.algo} + {names.value}, "
                        f"or {names.checksum} (a {_ACCEPTED_TEXT} hex digest)")


def parse_text(checksum: object, field: str = "checksum") -> Checksum:
    """``"<algo>:<hex>"`` or bare hex, its algorithm told by its length."""
    text = _text(checksum, field)
    if text.startswith(("http:", "https:", "file:")):
        raise ChecksumError(f"{field} is a URL: checksum files are not supported, give "
                            f"the hex digest itself")
    algo, sep, value = text.partition(":")
    if sep:
        return _checked(algo, value, field)
    found = BY_HEX_LENGTH.get(len(text)) if _HEX.fullmatch(text) else None
    if found is None:
        raise ChecksumError(f"{field} is not a hex digest of a known length: "
                            f"{_excerpt(text)}; accepted: {_lengths()}")
    return _checked(found.name, text, field)


def _checked(algo: str, value: str, field: str) -> Checksum:
    known = ALGORITHMS.get(algo)
    if known is None:
        raise ChecksumError(f"unknown image checksum algorithm {algo!r}; accepted: "
                            f"{_ACCEPTED_TEXT}")
    if not known.accepted:
        raise ChecksumError(f"{algo.upper()} image checksums are not accepted (collisions "
                            f"are practical); use {_ACCEPTED_TEXT}")
    if not _HEX.fullmatch(value) or len(value) != known.hex_length:
        raise ChecksumError(f"{field} is not a {algo} hex digest ({known.hex_length} hex "
                            f"digits): {_excerpt(value)}")
    return Checksum(algo, value)


def _text(raw: object, field: str) -> str:
    if not isinstance(raw, str):
        raise ChecksumError(f"{field} must be a string, not {type(raw).__name__}")
    return raw.strip().lower()


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= 20 else text[:16] + "...")


def _lengths() -> str:
    return ", ".join(f"{name} ({ALGORITHMS[name].hex_length} digits)" for name in ACCEPTED)
