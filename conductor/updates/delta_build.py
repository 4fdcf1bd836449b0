"""Build a signed delta payload from two raw disk images (``metalcast image delta``).

The images are compared block by block (4 KiB, the page size every disk and the
agent's O_DIRECT path use): blocks equal at the same offset become ``copy``
operations (applied in place, they cost a read and a hash, no write), all-zero
blocks become ``zero``, everything else ``replace`` with zlib-compressed data.
Runs of one kind merge into one operation of at most MAX_OP bytes, so the agent
can hash large unchanged runs on several cores. The format is
ramdisk_agent/wire/delta_format.py; keys are Ed25519 (conductor/updates/keys.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

from ramdisk_agent.wire import delta_format as fmt

BLOCK = 4096
#: Largest operation: bounds the memory of one replace and spreads hashing.
MAX_OP = 4 << 20
READ = 4 << 20
ZERO_BLOCK = bytes(BLOCK)


@dataclasses.dataclass
class BuildResult:
    """Figures of one build, printed by the CLI and the benchmark."""

    path: Path
    payload_size: int
    operations: int
    changed_bytes: int      #: target bytes carried as data (replace)
    target_size: int


class _Builder:
    """Accumulates operations and the data section while the images stream by."""

    def __init__(self, data_file):
        self.data = data_file
        self.data_size = 0
        self.data_hash = hashlib.sha256()
        self.ops: list[fmt.Operation] = []
        self.kind: fmt.Op | None = None
        self.start = 0
        self.parts: list[bytes] = []
        self.length = 0
        self.changed = 0

    def add(self, kind: fmt.Op, offset: int, block: bytes) -> None:
        if kind is not self.kind or self.length + len(block) > MAX_OP:
            self.flush()
            self.kind, self.start = kind, offset
        self.parts.append(block)
        self.length += len(block)

    def flush(self) -> None:
        if self.kind is None:
            return
        raw = b"".join(self.parts)
        digest = hashlib.sha256(raw).digest()
        extra = {}
        if self.kind is fmt.Op.COPY:
            extra = {"src": self.start}
        elif self.kind is fmt.Op.REPLACE:
            blob = zlib.compress(raw, 6)
            self.data.write(blob)
            self.data_hash.update(blob)
            extra = {"offset": self.data_size, "size": len(blob)}
            self.data_size += len(blob)
            self.changed += len(raw)
        self.ops.append(fmt.Operation(self.kind, self.start, len(raw), digest, **extra))
        self.kind, self.parts, self.length = None, [], 0


def _classify(old: bytes, new: bytes, offset: int, builder: _Builder) -> None:
    """Feed one read window of both images to the builder, block by block."""
    if old == new:  # the common case: a whole unchanged window, one comparison
        builder.add(fmt.Op.COPY, offset, new)
        return
    for pos in range(0, len(new), BLOCK):
        block = new[pos:pos + BLOCK]
        if old[pos:pos + BLOCK] == block:
            kind = fmt.Op.COPY
        elif block == ZERO_BLOCK[:len(block)]:
            kind = fmt.Op.ZERO
        else:
            kind = fmt.Op.REPLACE
        builder.add(kind, offset + pos, block)


def build(old: Path, new: Path, out: Path, private_key, version: str = "",
          progress: Callable[[int, int], None] | None = None) -> BuildResult:
    """Write the payload that turns image ``old`` into image ``new`` to ``out``."""
    old_size, new_size = old.stat().st_size, new.stat().st_size
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out.parent) as data, \
            open(old, "rb") as old_f, open(new, "rb") as new_f:
        builder = _Builder(data)
        offset = 0
        while offset < new_size:
            new_chunk = new_f.read(READ)
            old_chunk = old_f.read(READ) if offset < old_size else b""
            _classify(old_chunk, new_chunk, offset, builder)
            offset += len(new_chunk)
            if progress:
                progress(offset, new_size)
        builder.flush()
        manifest = fmt.Manifest(
            source_size=old_size, target_size=new_size, block_size=BLOCK,
            data_size=builder.data_size, data_sha256=builder.data_hash.digest(),
            target_sha256=fmt.target_digest(op.sha256 for op in builder.ops),
            operations=builder.ops, version=version)
        _assemble(out, manifest, private_key, data)
    return BuildResult(out, out.stat().st_size, len(builder.ops), builder.changed, new_size)


def _assemble(out: Path, manifest: fmt.Manifest, private_key, data) -> None:
    """Header + data section into ``out``, atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            fmt.write_header(stream, manifest, private_key)
            data.seek(0)
            while chunk := data.read(READ):
                stream.write(chunk)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
