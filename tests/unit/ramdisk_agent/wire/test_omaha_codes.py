"""update_engine's error codes and flags (ramdisk_agent/wire/omaha_codes.py)."""
from __future__ import annotations

import pytest

from ramdisk_agent.wire import omaha_codes


def test_the_table_covers_every_base_code_0_to_44():
    assert set(range(45)) <= set(omaha_codes.ACTION_CODES)
    named = {10: "PayloadHashMismatchError", 12: "DownloadPayloadVerificationError",
             29: "DownloadOperationHashMismatch", 34: "OmahaResponseInvalid",
             44: "RollbackError"}
    assert {code: omaha_codes.ACTION_CODES[code] for code in named} == named


@pytest.mark.parametrize("raw,text", [
    (0, "0 Success"),
    (268435490, "34 OmahaResponseInvalid, with test Omaha URL flag"),   # Nebraska#371
    ((1 << 30) | (1 << 29) | 10,
     "10 PayloadHashMismatchError, with resumed and test image flags"),
    ((1 << 31) | 44, "44 RollbackError, with dev mode flag"),
    (-(1 << 31) + 29, "29 DownloadOperationHashMismatch, with dev mode flag"),  # as %d
    (2404, "2404 OmahaRequestHTTPResponse 404"),
    ((1 << 28) | 2503, "2503 OmahaRequestHTTPResponse 503, with test Omaha URL flag"),
    (77, "77 unknown"),
])
def test_decode_splits_base_code_and_flags(raw, text):
    code = omaha_codes.decode(raw)
    assert code.text == text
    assert code.raw == raw & 0xFFFFFFFF and code.base == code.raw & 0x0FFFFFFF


def test_flags_are_the_four_high_bits():
    assert omaha_codes.FLAG_MASK == 0xF0000000
    assert omaha_codes.decode(0xF0000000 | 44).flags == (
        "dev mode", "resumed", "test image", "test Omaha URL")
    assert omaha_codes.decode(0xF0000000 | 44).is_rollback
