"""write_image's image_info parsing: the checksum the agent verifies with, or a 400
before anything is downloaded (the policy is ramdisk_agent/wire/checksum.py)."""
from __future__ import annotations

import hashlib

import pytest

from ramdisk_agent.errors import InvalidContent
from ramdisk_agent.ramdisk.imagewrite import ImageSpec

SHA256 = hashlib.sha256(b"image").hexdigest()
SHA512 = hashlib.sha512(b"image").hexdigest()


def image_info(**checksum_fields) -> dict:
    return {"urls": ["http://images.example/disk.raw"], "disk_format": "raw",
            **checksum_fields}


@pytest.mark.parametrize("fields, expected", [
    ({"os_hash_algo": "sha256", "os_hash_value": SHA256}, ("sha256", SHA256)),
    ({"os_hash_algo": "sha512", "os_hash_value": SHA512.upper()}, ("sha512", SHA512)),
    ({"checksum": SHA512}, ("sha512", SHA512)),
    ({"checksum": f"sha256:{SHA256}"}, ("sha256", SHA256)),
])
def test_the_agent_verifies_with_sha2(fields, expected):
    spec = ImageSpec.from_image_info(image_info(**fields))
    assert (spec.hash_algo, spec.hash_value) == expected


@pytest.mark.parametrize("fields, text", [
    ({}, "image_info: the image checksum is missing"),
    ({"checksum": hashlib.md5(b"image").hexdigest()}, "MD5 image checksums are not accepted"),
    ({"os_hash_algo": "md5", "os_hash_value": hashlib.md5(b"image").hexdigest()},
     "MD5 image checksums are not accepted"),
    ({"checksum": hashlib.sha1(b"image").hexdigest()}, "SHA1 image checksums are not accepted"),
    ({"os_hash_algo": "sha256", "os_hash_value": SHA512},
     "os_hash_value is not a sha256 hex digest"),
])
def test_other_checksums_are_refused_before_the_download(fields, text):
    with pytest.raises(InvalidContent) as caught:
        ImageSpec.from_image_info(image_info(**fields))
    assert caught.value.status_code == 400 and text in caught.value.message
    if "not accepted" in text:
        assert "use sha256, sha384, sha512" in caught.value.message
