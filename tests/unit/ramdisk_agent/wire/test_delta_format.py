"""The delta manifest's operation rows: each kind read back as written, and a row a
hostile or broken builder could send refused with DeltaError (never another error)."""
from __future__ import annotations

import hashlib

import pytest

from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

DIGEST = hashlib.sha256(b"x").digest()


@pytest.mark.parametrize("op", [
    fmt.Operation(fmt.Op.COPY, 4096, 8192, DIGEST, src=12288),
    fmt.Operation(fmt.Op.REPLACE, 0, 4096, DIGEST, offset=10, size=99),
    fmt.Operation(fmt.Op.ZERO, 8192, 4096, DIGEST),
])
def test_each_kind_reads_back_as_written(op):
    assert fmt.Operation.from_json(op.to_json()) == op


@pytest.mark.parametrize("row, message", [
    (["move", 0, 4096, DIGEST.hex(), 0], "unknown kind"),
    ([["copy"], 0, 4096, DIGEST.hex(), 0], "malformed"),
    (["copy", 0, 4096, DIGEST.hex()], "malformed"),            # no source offset
    (["replace", 0, 4096, DIGEST.hex(), 5], "malformed"),      # no compressed size
    (["zero", 0, 4096, "zz"], "malformed"),
    (["zero", 0, "many", DIGEST.hex()], "malformed"),
    (["zero", 0, 4096, DIGEST.hex()[:-2]], "out of range"),    # 31-byte digest
    (["zero", -4096, 4096, DIGEST.hex()], "out of range"),
    (["zero", 0, 0, DIGEST.hex()], "out of range"),
    (["copy", 0, 4096, DIGEST.hex(), -1], "out of range"),
    (["replace", 0, 4096, DIGEST.hex(), 0, -5], "out of range"),
])
def test_a_bad_row_is_refused(row, message):
    with pytest.raises(DeltaError, match=message):
        fmt.Operation.from_json(row)
