"""The agent's delta deploy (ramdisk_agent/ramdisk/delta/deploy.py): fetch over HTTP (an
in-process virtlab.imageserver on loopback), apply in place, and the failure policy:
untouched disk before the first write, first MiB wiped after writes began."""
from __future__ import annotations

import random

import pytest

from conductor.updates import delta_build, keys
from ramdisk_agent.errors import DeltaDeployError, InvalidContent
from ramdisk_agent.ramdisk.delta import deploy as delta_deploy
from ramdisk_agent.ramdisk.delta import target as delta_target
from ramdisk_agent.ramdisk.download import DownloadOptions
from virtlab.imageserver import ImageServer

SIZE = 4 << 20
BLOCK = 4096
OPTIONS = DownloadOptions(retries=0, timeout=5)


@pytest.fixture
def lab(tmp_path):
    """(server, old bytes, new bytes, signing key, disk path) with a payload served."""
    rng = random.Random(11)
    old = bytearray(rng.randbytes(SIZE))
    new = bytearray(old)
    for block in rng.sample(range(SIZE // BLOCK), 20):
        new[block * BLOCK:(block + 1) * BLOCK] = rng.randbytes(BLOCK)
    (tmp_path / "old.img").write_bytes(old)
    (tmp_path / "new.img").write_bytes(new)
    key = keys.load_or_create(tmp_path / "delta.key")
    delta_build.build(tmp_path / "old.img", tmp_path / "new.img", tmp_path / "v2.delta", key,
                      version="v2")
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(old) + b"\xee" * SIZE)
    server = ImageServer(str(tmp_path))
    thread = server.start_background()
    yield server, bytes(old), bytes(new), key, disk
    server.shutdown()
    server.server_close()
    thread.join(5)


def _info(server, key, name="v2.delta", **extra) -> dict:
    return {"urls": [f"{server.url}/new.img"], "os_hash_algo": "sha256",
            "os_hash_value": "0" * 64,
            "delta": {"url": f"{server.url}/{name}",
                      "public_key": keys.public_pem(key).decode(), **extra}}


def _write(lab, info, tmp_path):
    return delta_deploy.write_delta(info, str(lab[4]), OPTIONS, "node-1",
                                    scratch_dir=str(tmp_path))


def test_applies_in_place_and_reports(lab, tmp_path):
    server, old, new, key, disk = lab
    summary = _write(lab, _info(server, key, version="v2"), tmp_path)
    assert disk.read_bytes() == new + b"\xee" * SIZE
    assert summary["written_bytes"] == 20 * BLOCK
    assert summary["verified_bytes"] == SIZE - 20 * BLOCK
    assert summary["payload_bytes"] == (tmp_path / "v2.delta").stat().st_size
    assert ("GET", "/v2.delta", None) in server.requests
    assert not list(tmp_path.glob("metalcast-delta-*"))  # scratch removed


def test_other_key_leaves_the_disk_untouched(lab, tmp_path):
    server, old, new, _, disk = lab
    other = keys.load_or_create(tmp_path / "other.key")
    with pytest.raises(DeltaDeployError, match="delta failed: manifest "
                       "signature does not verify"):
        _write(lab, _info(server, other), tmp_path)
    assert disk.read_bytes()[:SIZE] == old


def test_wrong_version_is_refused_before_writing(lab, tmp_path):
    server, old, _, key, disk = lab
    with pytest.raises(DeltaDeployError, match="version 'v2'.*asked for 'v3'"):
        _write(lab, _info(server, key, version="v3"), tmp_path)
    assert disk.read_bytes()[:SIZE] == old


def test_payload_larger_than_announced_is_refused(lab, tmp_path):
    server, old, _, key, disk = lab
    with pytest.raises(DeltaDeployError, match="more than the 100 allowed"):
        _write(lab, _info(server, key, size=100), tmp_path)
    assert disk.read_bytes()[:SIZE] == old


def test_missing_payload_is_a_delta_failure(lab, tmp_path):
    server, old, _, key, disk = lab
    with pytest.raises(DeltaDeployError, match="delta failed: .*HTTP 404"):
        _write(lab, _info(server, key, name="nope.delta"), tmp_path)
    assert disk.read_bytes()[:SIZE] == old


def test_failure_after_writes_began_wipes_the_first_mib(lab, tmp_path, monkeypatch):
    server, old, new, key, disk = lab
    real_check = delta_target.ReadBack._check
    lost = []

    def one_write_lost(check, ops):     # the device dropped one write of this group
        op = next((op for op in ops if op.dst >= 1 << 20), None)
        if op is not None and not lost:
            with open(disk, "r+b") as stream:
                stream.seek(op.dst)
                stream.write(old[op.dst:op.dst + op.length])
            lost.append(op)
        return real_check(check, ops)
    monkeypatch.setattr(delta_target.ReadBack, "_check", one_write_lost)
    with pytest.raises(DeltaDeployError, match="half-written") as failed:
        _write(lab, _info(server, key), tmp_path)
    assert f"read-back of bytes {lost[0].dst}-{lost[0].dst + lost[0].length} does not " \
           "match" in failed.value.message
    data = disk.read_bytes()
    assert data[:1 << 20] == bytes(1 << 20)
    expected = bytearray(new)
    expected[lost[0].dst:lost[0].dst + lost[0].length] = old[lost[0].dst:
                                                             lost[0].dst + lost[0].length]
    assert data[1 << 20:SIZE] == expected[1 << 20:]  # the other writes did happen


@pytest.mark.parametrize("delta, message", [
    ({"public_key": "x"}, "http"), ({"url": "ftp://h/p"}, "http"),
    ({"url": "http://h/p"}, "public_key"),
    ({"url": "http://h/p", "public_key": "k", "size": -1}, "positive integer")])
def test_bad_delta_fields_are_refused(delta, message):
    with pytest.raises(InvalidContent, match=message):
        delta_deploy.DeltaSpec.from_image_info({"delta": delta})


def test_unusable_public_key_is_a_delta_failure():
    with pytest.raises(DeltaDeployError, match="unusable delta public key"):
        delta_deploy.DeltaSpec.from_image_info({"delta": {"url": "http://h/p",
                                                          "public_key": "zz"}})
