"""The signature of a full update image, as the update server makes it and hosts check it.

A full image (the payload an Omaha ``ok`` answer points at when it is not a delta) is
signed with the appliance's Ed25519 update key (conductor/updates/keys.py, the key that
also signs delta manifests). What is signed is not the image but a short message that
binds its SHA-256, its size and its version, under a label of its own so a signature made
for one purpose (a delta manifest) can never be replayed as another: a host that checks
the message learns that the appliance published exactly these bytes as this version.

The signature travels in the Omaha answer, base64 in the postinstall action's
``MetalcastSignature`` attribute (update_engine ignores attributes it does not know).
"""
from __future__ import annotations

import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from ramdisk_agent.wire.errors import WireError

LABEL = b"metalcast full image v1\0"
SIGNATURE_SIZE = 64
MAX_VERSION = 255


class ImageSignatureError(WireError):
    """The image's signature is missing, malformed or made by another key."""


def message(sha256: bytes, size: int, version: str) -> bytes:
    """The bytes that are signed for one image."""
    raw_version = version.encode("utf-8")
    if len(sha256) != 32 or size <= 0 or not 0 < len(raw_version) <= MAX_VERSION:
        raise ImageSignatureError("an image signature needs a SHA-256, a positive size "
                                  f"and a version of 1-{MAX_VERSION} bytes")
    return LABEL + sha256 + struct.pack(">QB", size, len(raw_version)) + raw_version


def sign(key: ed25519.Ed25519PrivateKey, sha256: bytes, size: int, version: str) -> bytes:
    """The 64-byte signature of one image."""
    return key.sign(message(sha256, size, version))


def verify(key: ed25519.Ed25519PublicKey, signature: bytes | None, sha256: bytes,
           size: int, version: str) -> None:
    """Nothing when ``signature`` is the trusted key's for this image, else
    :class:`ImageSignatureError` saying what is wrong."""
    if signature is None or len(signature) != SIGNATURE_SIZE:
        raise ImageSignatureError("the update offer carries no 64-byte image signature: "
                                  "the server is not a metalcast appliance or the offer "
                                  "was altered")
    try:
        key.verify(signature, message(sha256, size, version))
    except InvalidSignature:
        raise ImageSignatureError(
            f"the signature of version {version!r} does not verify with the trusted update "
            "key: the image was tampered with or signed by another appliance") from None
