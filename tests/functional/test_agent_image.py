"""The agent's image writer against a real HTTP server, files and a loop device.

The server is ``virtlab.imageserver`` (a real socket server: sendfile, Range,
If-Range, a connection cut after N bytes once). Images are random bytes with an
unaligned tail, so the O_DIRECT path and the buffered tail are both exercised.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import mmap
import os
import subprocess
import threading

import pytest

from ramdisk_agent import gpt
from ramdisk_agent.errors import (
    ImageChecksumError,
    ImageDownloadError,
    ImageWriteError,
    InvalidContent,
)
from ramdisk_agent.ramdisk import configdrive
from ramdisk_agent.ramdisk.download import DownloadOptions
from ramdisk_agent.ramdisk.imagewrite import DiskTarget, ImageSpec, write_image
from tests.functional.tools import require
from virtlab.imageserver import ImageServer

MIB = 1 << 20
IMAGE_SIZE = 9 * MIB + 12345          # crosses two 4 MiB buffers, unaligned tail
DISK_SIZE = 16 * MIB
FAST = DownloadOptions(retry_delay=0.05, timeout=10)


def direct_supported(path: str) -> bool:
    """Whether this filesystem takes O_DIRECT (tmpfs before Linux 6.6 does not)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_DIRECT))
    except OSError:
        return False
    return True


@pytest.fixture()
def image(tmp_path):
    data = os.urandom(IMAGE_SIZE)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "image.raw").write_bytes(data)
    return data


def serve(tmp_path, drop_after=None) -> ImageServer:
    server = ImageServer(str(tmp_path / "srv"), drop_after=drop_after)
    server.start_background()
    return server


@pytest.fixture()
def server(tmp_path, image):
    srv = serve(tmp_path)
    yield srv
    srv.shutdown()
    srv.server_close()


def make_disk(path, size=DISK_SIZE, fill=b"\xa5") -> str:
    path.write_bytes(fill * size)
    return str(path)


def spec(url, data, algo="sha256", fmt="raw") -> ImageSpec:
    return ImageSpec.from_image_info({"urls": [url], "disk_format": fmt, "os_hash_algo": algo,
                                      "os_hash_value": hashlib.new(algo, data).hexdigest()})


@pytest.mark.parametrize("algo", ["sha256", "sha512"])
def test_raw_to_file_hash_on_the_fly(tmp_path, image, server, algo):
    disk = make_disk(tmp_path / "disk.img")
    result = write_image(spec(server.url + "/image.raw", image, algo), disk, FAST)
    content = open(disk, "rb").read()
    assert content[:IMAGE_SIZE] == image
    assert content[IMAGE_SIZE:] == b"\xa5" * (DISK_SIZE - IMAGE_SIZE)  # rest untouched
    assert result.size == IMAGE_SIZE and result.digest == hashlib.new(algo, image).hexdigest()
    assert result.direct_io == direct_supported(disk) and result.resumes == 0
    # what each stage of the pipeline spent working, for the bench to name the bottleneck
    assert set(result.busy) == {"read", "hash", "write", "sync"}
    assert all(0 <= seconds <= result.seconds for seconds in result.busy.values())


def test_legacy_checksum_by_length_and_read_back(tmp_path, image, server):
    disk = make_disk(tmp_path / "disk.img")
    info = {"urls": [server.url + "/image.raw"], "disk_format": "raw",
            "checksum": hashlib.sha512(image).hexdigest()}
    result = write_image(ImageSpec.from_image_info(info), disk, FAST, verify=True)
    assert result.verified and open(disk, "rb").read(IMAGE_SIZE) == image


def test_wrong_checksum_fails_and_wipes_start(tmp_path, image, server):
    disk = make_disk(tmp_path / "disk.img")
    bad = spec(server.url + "/image.raw", image + b"x")
    with pytest.raises(ImageChecksumError, match="checksum mismatch"):
        write_image(bad, disk, FAST)
    content = open(disk, "rb").read()
    assert content[:MIB] == bytes(MIB)                    # boot sector + GPT gone
    assert content[MIB:IMAGE_SIZE] == image[MIB:]         # the rest was written


def test_dropped_connection_is_resumed_with_range(tmp_path, image):
    srv = serve(tmp_path, drop_after=5 * MIB + 7)
    try:
        disk = make_disk(tmp_path / "disk.img")
        result = write_image(spec(srv.url + "/image.raw", image), disk, FAST)
    finally:
        srv.shutdown()
        srv.server_close()
    assert open(disk, "rb").read(IMAGE_SIZE) == image
    assert result.resumes == 1
    ranges = [r for _, _, r in srv.requests]
    assert ranges == [None, f"bytes={5 * MIB + 7}-"]


def test_qcow2_converted_to_raw(tmp_path, image):
    qemu_img = require("qemu-img")
    raw = tmp_path / "srv" / "image.raw"
    qcow = tmp_path / "srv" / "image.qcow2"
    subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)],
                   check=True)
    srv = serve(tmp_path)
    try:
        disk = make_disk(tmp_path / "disk.img")
        result = write_image(spec(srv.url + "/image.qcow2", qcow.read_bytes(), fmt="qcow2"),
                             disk, FAST, scratch_dir=str(tmp_path))
    finally:
        srv.shutdown()
        srv.server_close()
    virtual = -(-IMAGE_SIZE // 512) * 512          # qemu-img rounds up to a sector
    assert result.size == virtual
    assert open(disk, "rb").read(IMAGE_SIZE) == image


def test_qcow2_data_declared_raw_is_refused(tmp_path, image):
    qemu_img = require("qemu-img")
    qcow = tmp_path / "srv" / "image.qcow2"
    subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2",
                    str(tmp_path / "srv" / "image.raw"), str(qcow)], check=True)
    srv = serve(tmp_path)
    try:
        disk = make_disk(tmp_path / "disk.img")
        with pytest.raises(ImageWriteError, match="qcow2 but disk_format says raw"):
            write_image(spec(srv.url + "/image.qcow2", qcow.read_bytes()), disk, FAST)
    finally:
        srv.shutdown()
        srv.server_close()


def test_bad_inputs(tmp_path, image, server):
    disk = make_disk(tmp_path / "disk.img", size=4 * MIB)
    with pytest.raises(ImageWriteError, match="does not fit"):
        write_image(spec(server.url + "/image.raw", image), disk, FAST)
    with pytest.raises(ImageDownloadError, match="HTTP 404"):
        write_image(spec(server.url + "/missing.raw", image), disk, FAST)
    with pytest.raises(ImageWriteError, match="does not exist"):
        write_image(spec(server.url + "/image.raw", image), str(tmp_path / "nope"), FAST)
    with pytest.raises(InvalidContent, match="not supported"):
        ImageSpec.from_image_info({"urls": ["http://x/"], "disk_format": "vmdk",
                                   "os_hash_algo": "sha256", "os_hash_value": "0" * 64})
    with pytest.raises(InvalidContent, match="os_hash_algo"):
        ImageSpec.from_image_info({"urls": ["http://x/"], "disk_format": "raw"})


def test_raw_to_loop_device(tmp_path, image, server):
    losetup = require("losetup")
    backing = make_disk(tmp_path / "loop.img")
    loop = subprocess.run([losetup, "--find", "--show", backing], check=True,
                          capture_output=True, text=True).stdout.strip()
    try:
        result = write_image(spec(server.url + "/image.raw", image, "sha512"), loop, FAST,
                             verify=True)
    finally:
        subprocess.run([losetup, "-d", loop], check=True)
    assert result.direct_io and result.verified
    assert open(backing, "rb").read(IMAGE_SIZE) == image


def test_refused_direct_writes_fall_back_for_both_writers(tmp_path):
    """Two threads write disjoint ranges (as the two writer threads do) and the
    device refuses their O_DIRECT writes (EINVAL: here, offsets off the sector
    size): every range lands through the buffered descriptor. The barrier starts
    both together, so their refusals often overlap (a second refusal after the first
    switch, which must not close the descriptor the other thread is using); that
    overlap is a race, the content check holds on every run."""
    losetup = require("losetup")
    backing = make_disk(tmp_path / "loop.img")
    loop = subprocess.run([losetup, "--find", "--show", backing], check=True,
                          capture_output=True, text=True).stdout.strip()
    piece, data = 256 << 10, os.urandom(32 * (256 << 10))
    errors: list[BaseException] = []
    together = threading.Barrier(2, timeout=30)     # both refused at the same time
    try:
        target = DiskTarget(loop)
        assert target.direct_used

        def write(first: int) -> None:
            buffer = mmap.mmap(-1, piece)        # page-aligned, as the image writer's
            try:
                together.wait()
                for at in range(first * piece, len(data), 2 * piece):
                    buffer[:] = data[at:at + piece]
                    target.write(at + 100, memoryview(buffer))
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
        threads = [threading.Thread(target=write, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        target.close()
    finally:
        subprocess.run([losetup, "-d", loop], check=True)
    assert errors == [] and not target.direct_used
    with open(backing, "rb") as disk:
        disk.seek(100)
        assert disk.read(len(data)) == data


def test_configdrive_partition(tmp_path):
    sgdisk = require("sgdisk")
    disk = make_disk(tmp_path / "disk.img", size=128 * MIB, fill=b"\0")
    image_size = 40 * MIB                       # the "image" ends well before the disk
    subprocess.run([sgdisk, "-a", "1", "-n", "1:2048:+16M", "-t", "1:EF00", str(disk)],
                   check=True, capture_output=True)
    os.truncate(disk, image_size)               # GPT backup at 40 MiB, like an image
    subprocess.run([sgdisk, "-e", str(disk)], check=True, capture_output=True)
    os.truncate(disk, 128 * MIB)                # now the image sits on a bigger disk
    payload = os.urandom(300_000)
    value = base64.b64encode(gzip.compress(payload)).decode()
    number = configdrive.write(disk, value)
    table = gpt.read_table(disk)
    part = next(p for p in table.partitions if p.number == number)
    assert part.name == "config-2" and number == 2
    assert part.last_lba * 512 >= 127 * MIB
    with open(disk, "rb") as f:
        f.seek(part.first_lba * 512)
        assert f.read(len(payload)) == payload
    check = subprocess.run([sgdisk, "-v", disk], capture_output=True, text=True)
    assert "No problems found" in check.stdout
    with pytest.raises(InvalidContent, match="base64|gzip"):
        configdrive.write(disk, "H4sI!!not-valid")


def test_from_the_appliance_boot_http_server(tmp_path, image):
    """The conductor's own image server (conductor.netboot.http) as the peer."""
    from conductor.netboot.http import BootHttpServer
    boot = BootHttpServer(tmp_path / "srv", "127.0.0.1", 0)
    boot.start()
    try:
        disk = make_disk(tmp_path / "disk.img")
        result = write_image(spec(boot.url + "/image.raw", image, "sha512"), disk, FAST,
                             verify=True)
    finally:
        boot.stop()
    assert result.verified and open(disk, "rb").read(IMAGE_SIZE) == image


def test_https_download_verified_and_refused(tmp_path, image):
    from ramdisk_agent.server import make_certificate
    cert, key, _ = make_certificate("127.0.0.1", str(tmp_path))
    srv = ImageServer(str(tmp_path / "srv"), tls=(cert, key))
    srv.start_background()
    try:
        assert srv.url.startswith("https://")
        disk = make_disk(tmp_path / "disk.img")
        pinned = DownloadOptions(ca_file=cert, retry_delay=0.05)
        write_image(spec(srv.url + "/image.raw", image), disk, pinned)
        assert open(disk, "rb").read(IMAGE_SIZE) == image
        with pytest.raises(ImageDownloadError, match="TLS verification"):
            write_image(spec(srv.url + "/image.raw", image), disk, FAST)
        assert open(disk, "rb").read(MIB) == bytes(MIB)      # wiped after the failure
        write_image(spec(srv.url + "/image.raw", image), disk,
                    DownloadOptions(insecure=True, retry_delay=0.05))
        assert open(disk, "rb").read(IMAGE_SIZE) == image
    finally:
        srv.shutdown()
        srv.server_close()
