"""The image checksum policy (ramdisk_agent/wire/checksum.py), table by table: which
algorithms exist and are accepted, every shape a checksum comes in, every refusal."""
from __future__ import annotations

import hashlib

import pytest

from ramdisk_agent.wire import checksum
from ramdisk_agent.wire.checksum import Checksum
from ramdisk_agent.wire.errors import ChecksumError

DIGESTS = {name: hashlib.new(name, b"image").hexdigest()
           for name in ("md5", "sha1", "sha256", "sha384", "sha512")}


def test_sha2_is_accepted_and_md5_sha1_are_refused():
    assert checksum.ACCEPTED == ("sha256", "sha384", "sha512")
    assert {name for name, algo in checksum.ALGORITHMS.items() if not algo.accepted} \
        == {"md5", "sha1"}


@pytest.mark.parametrize("name", sorted(checksum.ALGORITHMS))
def test_each_hex_length_is_hashlibs(name):
    algo = checksum.ALGORITHMS[name]
    assert algo.hex_length == len(DIGESTS[name])
    assert checksum.BY_HEX_LENGTH[algo.hex_length] is algo


#: (os_hash_algo, os_hash_value, checksum) -> what the image is verified with.
ACCEPTED = [
    (("sha256", DIGESTS["sha256"], None), ("sha256", DIGESTS["sha256"])),
    (("SHA512", DIGESTS["sha512"].upper(), None), ("sha512", DIGESTS["sha512"])),
    ((" sha384 ", f" {DIGESTS['sha384']}\n", None), ("sha384", DIGESTS["sha384"])),
    ((None, None, DIGESTS["sha256"]), ("sha256", DIGESTS["sha256"])),      # bare, by length
    ((None, None, DIGESTS["sha384"]), ("sha384", DIGESTS["sha384"])),
    ((None, None, DIGESTS["sha512"]), ("sha512", DIGESTS["sha512"])),
    ((None, None, f"sha512:{DIGESTS['sha512']}"), ("sha512", DIGESTS["sha512"])),
    ((None, None, f"SHA256:{DIGESTS['sha256'].upper()}"), ("sha256", DIGESTS["sha256"])),
    # The pair wins over the legacy checksum; half a pair falls back to it (Ironic).
    (("sha256", DIGESTS["sha256"], DIGESTS["sha512"]), ("sha256", DIGESTS["sha256"])),
    (("sha256", None, DIGESTS["sha512"]), ("sha512", DIGESTS["sha512"])),
    ((None, DIGESTS["sha256"], DIGESTS["sha384"]), ("sha384", DIGESTS["sha384"])),
]


@pytest.mark.parametrize("fields, expected", ACCEPTED)
def test_accepted_shapes(fields, expected):
    assert checksum.parse(*fields) == Checksum(*expected)


#: (os_hash_algo, os_hash_value, checksum) -> what the refusal must say.
REFUSED = [
    ((None, None, None), "the image checksum is missing: set os_hash_algo + os_hash_value, "
                         "or checksum (a sha256, sha384, sha512 hex digest)"),
    (("", "", ""), "the image checksum is missing"),
    (("md5", DIGESTS["md5"], None), "MD5 image checksums are not accepted (collisions are "
                                    "practical); use sha256, sha384, sha512"),
    (("sha1", DIGESTS["sha1"], None), "SHA1 image checksums are not accepted"),
    ((None, None, DIGESTS["md5"]), "MD5 image checksums are not accepted"),      # by length
    ((None, None, DIGESTS["sha1"]), "SHA1 image checksums are not accepted"),
    ((None, None, f"md5:{DIGESTS['md5']}"), "MD5 image checksums are not accepted"),
    (("crc32", "cbf43926", None), "unknown image checksum algorithm 'crc32'; accepted: "
                                  "sha256, sha384, sha512"),
    ((None, None, "sha3_256:" + "0" * 64), "unknown image checksum algorithm 'sha3_256'"),
    (("sha256", "not hex!", None), "os_hash_value is not a sha256 hex digest (64 hex "
                                   "digits): 'not hex!'"),
    (("sha256", DIGESTS["sha512"], None), "os_hash_value is not a sha256 hex digest"),
    ((None, None, "sha256:" + "0" * 63), "checksum is not a sha256 hex digest"),
    ((None, None, "0" * 50), "checksum is not a hex digest of a known length: "
                             "'0000000000000000...'; accepted: sha256 (64 digits), "
                             "sha384 (96 digits), sha512 (128 digits)"),
    ((None, None, "z" * 64), "checksum is not a hex digest of a known length"),
    ((None, None, "https://images/SHA256SUMS"), "checksum is a URL: checksum files are "
                                                "not supported"),
    ((None, None, 5), "checksum must be a string, not int"),
    (("sha256", 12345, None), "os_hash_value must be a string, not int"),
]


@pytest.mark.parametrize("fields, text", REFUSED)
def test_refusals_say_why(fields, text):
    with pytest.raises(ChecksumError) as caught:
        checksum.parse(*fields)
    assert text in str(caught.value)


def test_refusals_name_the_callers_fields():
    names = checksum.FieldNames("image_os_hash_algo", "image_os_hash_value", "image_checksum")
    with pytest.raises(ChecksumError, match="set image_os_hash_algo \\+ image_os_hash_value, "
                                            "or image_checksum"):
        checksum.parse(names=names)
    with pytest.raises(ChecksumError, match="^image_checksum is not a hex digest"):
        checksum.parse(checksum="abc", names=names)


def test_text_form_round_trips():
    parsed = checksum.parse_text(DIGESTS["sha256"])
    assert str(parsed) == f"sha256:{DIGESTS['sha256']}"
    assert checksum.parse_text(str(parsed)) == parsed
    assert parsed.image_info_fields() == {"os_hash_algo": "sha256",
                                          "os_hash_value": DIGESTS["sha256"]}
