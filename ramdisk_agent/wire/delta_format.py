"""The delta payload format: a signed operation list that turns one disk into another.

A payload file is::

    b"MCDELTA1\\n"                          magic and format version
    u32 big-endian  manifest length (L)
    L bytes         the manifest: zlib-compressed canonical JSON (see Manifest)
    64 bytes        Ed25519 signature over the L manifest bytes
    ...             the data section: compressed blobs of the "replace" operations

The manifest names the source and target disk sizes, the block size, the SHA-256 of
the data section, and the operations in target order. Each operation covers
``[dst, dst+length)`` of the target and carries the SHA-256 of those target bytes:

* ``copy``: the bytes come from ``src`` of the source disk (the same offset when the
  payload is applied in place); their hash is also the check of the source.
* ``replace``: the bytes are ``data[offset:offset+size]`` of the data section,
  zlib-compressed.
* ``zero``: the bytes are zeros.

The target digest is SHA-256 over the concatenated per-operation digests (a hash
list): verifying a whole 1 GiB target then costs one pass of hashing, not two, and
the list still pins every byte. Both sides import this module; the conductor builds
payloads (conductor/updates/delta_build.py), the agent applies them (apply.py).
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import struct
import zlib
from collections.abc import Iterable
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ramdisk_agent.wire.errors import DeltaError

MAGIC = b"MCDELTA1\n"
FORMAT_VERSION = 1
SIGNATURE_SIZE = 64
#: Refuse manifests larger than this (compressed): a hostile header must not make
#: the agent allocate gigabytes.
MAX_MANIFEST_BYTES = 64 << 20
_LEN = struct.Struct(">I")


class Op(str, enum.Enum):
    """Operation kinds."""

    COPY = "copy"        #: target bytes come from the source disk
    REPLACE = "replace"  #: target bytes come (compressed) from the data section
    ZERO = "zero"        #: target bytes are zero


_KINDS = {kind.value: kind for kind in Op}


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    """One contiguous target range and where its bytes come from."""

    op: Op
    dst: int
    length: int
    sha256: bytes
    src: int = 0          #: copy: source offset
    offset: int = 0       #: replace: start in the data section
    size: int = 0         #: replace: compressed size in the data section

    def to_json(self) -> list[str | int]:
        row: list[str | int] = [self.op.value, self.dst, self.length, self.sha256.hex()]
        if self.op is Op.COPY:
            row.append(self.src)
        elif self.op is Op.REPLACE:
            row.extend((self.offset, self.size))
        return row

    @classmethod
    def from_json(cls, row: list[Any]) -> Operation:
        # Called once per operation (~20,000 for 2 % of a 1 GiB image) before the
        # apply can start: a table lookup and positional fields, not Op() and keyword
        # dicts, halve the manifest's parse time.
        try:
            kind, dst, length, digest = (_KINDS[row[0]], int(row[1]), int(row[2]),
                                         bytes.fromhex(row[3]))
            src, offset, size = (int(row[4]), 0, 0) if kind is Op.COPY else (
                (0, int(row[4]), int(row[5])) if kind is Op.REPLACE else (0, 0, 0))
        except KeyError:
            raise DeltaError(f"malformed operation {row!r}: unknown kind") from None
        except (ValueError, IndexError, TypeError) as exc:
            raise DeltaError(f"malformed operation {row!r}: {exc}") from None
        if dst < 0 or length <= 0 or len(digest) != 32 or min(src, offset, size) < 0:
            raise DeltaError(f"operation out of range: {row!r}")
        return cls(kind, dst, length, digest, src, offset, size)


@dataclasses.dataclass
class Manifest:
    """What a payload promises: sizes, operations, and the digests that check them."""

    source_size: int
    target_size: int
    block_size: int
    data_size: int
    data_sha256: bytes
    target_sha256: bytes
    operations: list[Operation]
    version: str = ""      #: free text, e.g. the target image's version

    def encode(self) -> bytes:
        doc = {"format": FORMAT_VERSION, "version": self.version,
               "source_size": self.source_size, "target_size": self.target_size,
               "block_size": self.block_size, "data_size": self.data_size,
               "data_sha256": self.data_sha256.hex(),
               "target_sha256": self.target_sha256.hex(),
               "operations": [op.to_json() for op in self.operations]}
        return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)

    @classmethod
    def decode(cls, blob: bytes) -> Manifest:
        try:
            doc = json.loads(zlib.decompressobj().decompress(blob, 256 << 20))
            if doc.get("format") != FORMAT_VERSION:
                raise DeltaError(f"unsupported delta format {doc.get('format')!r}")
            manifest = cls(int(doc["source_size"]), int(doc["target_size"]),
                           int(doc["block_size"]), int(doc["data_size"]),
                           bytes.fromhex(doc["data_sha256"]),
                           bytes.fromhex(doc["target_sha256"]),
                           [Operation.from_json(row) for row in doc["operations"]],
                           str(doc.get("version", "")))
        except DeltaError:
            raise
        except (ValueError, KeyError, TypeError, zlib.error) as exc:
            raise DeltaError(f"malformed manifest: {exc}") from None
        manifest.check_layout()
        return manifest

    def check_layout(self) -> None:
        """Operations must tile the target exactly and stay inside both disks."""
        position = 0
        for op in self.operations:
            if op.dst != position:
                raise DeltaError(f"operations leave a gap or overlap at byte {position}")
            position += op.length
            if op.op is Op.COPY and op.src + op.length > self.source_size:
                raise DeltaError(f"copy at {op.dst} reads past the source disk")
            if op.op is Op.REPLACE and op.offset + op.size > self.data_size:
                raise DeltaError(f"replace at {op.dst} reads past the data section")
        if position != self.target_size:
            raise DeltaError(f"operations cover {position} bytes, target is "
                             f"{self.target_size}")


def target_digest(op_digests: Iterable[bytes]) -> bytes:
    """The whole-target digest: SHA-256 over the per-operation digests in order."""
    digest = hashlib.sha256()
    for value in op_digests:
        digest.update(value)
    return digest.digest()


def write_header(stream: BinaryIO, manifest: Manifest,
                 private_key: ed25519.Ed25519PrivateKey) -> int:
    """Write magic, manifest and signature; returns the header length."""
    blob = manifest.encode()
    signature = private_key.sign(blob)
    stream.write(MAGIC + _LEN.pack(len(blob)) + blob + signature)
    return len(MAGIC) + _LEN.size + len(blob) + SIGNATURE_SIZE


def read_header(stream: BinaryIO, public_key: ed25519.Ed25519PublicKey) -> tuple[Manifest, int]:
    """Read and verify the header; returns (manifest, header length).

    The signature is checked before the manifest is parsed, so nothing an attacker
    wrote is interpreted unless the trusted key signed it.
    """
    head = stream.read(len(MAGIC) + _LEN.size)
    if len(head) < len(MAGIC) + _LEN.size or not head.startswith(MAGIC):
        raise DeltaError("not a metalcast delta payload (bad magic)")
    (length,) = _LEN.unpack(head[len(MAGIC):])
    if length > MAX_MANIFEST_BYTES:
        raise DeltaError(f"manifest of {length} bytes is larger than allowed")
    blob = stream.read(length)
    signature = stream.read(SIGNATURE_SIZE)
    if len(blob) != length or len(signature) != SIGNATURE_SIZE:
        raise DeltaError("payload is truncated inside its header")
    try:
        public_key.verify(signature, blob)
    except InvalidSignature:
        raise DeltaError("manifest signature does not verify with the trusted key: the "
                         "payload was tampered with or signed by another key") from None
    return Manifest.decode(blob), len(head) + length + SIGNATURE_SIZE


def load_public_key(data: bytes) -> ed25519.Ed25519PublicKey:
    """An Ed25519 public key from PEM, or from 32 raw bytes / their hex."""
    try:
        if data.strip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            raw = bytes.fromhex(data.decode().strip()) if len(data.strip()) == 64 else data
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DeltaError(f"unusable delta public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise DeltaError("the delta public key is not an Ed25519 key")
    return key
