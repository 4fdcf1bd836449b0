"""qcow2 images written by the agent while they download, checked against qemu-img.

Every image is made by the real ``qemu-img`` (``convert`` in its layouts: v3, v2,
zlib and zstd compression, extended L2, small and large clusters, metadata
preallocation; ``create`` + ``qemu-io`` for zero clusters, subclusters and a
layout that cannot be streamed), served over loopback HTTP by
``virtlab.imageserver``, written by ``write_image`` onto a disk pre-filled with
0xa5 (so every range the image leaves unallocated must really be zeroed) and compared
byte for byte with ``qemu-img convert -O raw`` of the same file. The server's request
log tells a one-pass conversion (one GET) from the scratch-file fallback (two GETs).
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import subprocess
from pathlib import Path

import pytest

from ramdisk_agent.errors import ImageChecksumError, ImageDownloadError, ImageWriteError
from ramdisk_agent.ramdisk.download import DownloadOptions
from ramdisk_agent.ramdisk.imagewrite import ImageSpec, WriteResult, write_image
from tests.functional.tools import require
from virtlab.imageserver import ImageServer

MIB = 1 << 20
RAW_SIZE = 20 * MIB + 12800       # not a whole number of clusters: a partial last one
DISK_SIZE = 32 * MIB
FILL = b"\xa5"
FAST = DownloadOptions(retry_delay=0.05, timeout=10)
FALLBACK = "cannot be converted while it downloads"


#: qemu-img's LUKS create times its PBKDF by the thread's CPU time; on a loaded
#: machine a round can measure 0 ms and qemu-img gives up with this. Another try is
#: a new measurement.
PBKDF_TIMING = "Unable to get accurate CPU usage"


def qemu(*args: str) -> str:
    tool = require("qemu-io" if args[0] == "io" else "qemu-img")
    cmd = [tool, *args[1:]] if args[0] == "io" else [tool, *args]
    for _ in range(3):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if PBKDF_TIMING not in done.stderr:
            break
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr}"
    return done.stdout


def make_raw(path: Path) -> None:
    """MiBs of random, compressible text and zeros, then a short unaligned tail."""
    rng = random.Random(14)
    with open(path, "wb") as f:
        for i in range(RAW_SIZE // MIB):
            kind = i % 3
            if kind == 0:
                f.write(rng.randbytes(MIB))
            elif kind == 1:
                f.write(bytes(rng.choice(b"metalcast qcow2 ") for _ in range(MIB)))
            else:
                f.write(bytes(MIB))
        f.write(rng.randbytes(RAW_SIZE % MIB))


@pytest.fixture(scope="module")
def raw_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("qcow2-src") / "source.raw"
    make_raw(path)
    return path


@pytest.fixture()
def srv_dir(tmp_path) -> Path:
    (tmp_path / "srv").mkdir()
    return tmp_path / "srv"


@pytest.fixture()
def server(srv_dir):
    srv = ImageServer(str(srv_dir))
    srv.start_background()
    yield srv
    srv.shutdown()
    srv.server_close()


def make_disk(path: Path, size: int = DISK_SIZE) -> str:
    path.write_bytes(FILL * size)
    return str(path)


def spec(url: str, data: bytes) -> ImageSpec:
    return ImageSpec.from_image_info({"urls": [url], "disk_format": "qcow2",
                                      "os_hash_algo": "sha256",
                                      "os_hash_value": hashlib.sha256(data).hexdigest()})


def reference(image: Path, tmp_path: Path) -> bytes:
    """What ``qemu-img convert -O raw`` makes of ``image``."""
    out = tmp_path / f"{image.name}.ref"
    qemu("convert", "-f", "qcow2", "-O", "raw", str(image), str(out))
    return out.read_bytes()


def write_and_compare(server: ImageServer, image: Path, disk: str, tmp_path: Path,
                      scratch_dir: Path | None = None) -> WriteResult:
    """write_image ``image`` onto ``disk``; the disk must match qemu-img's raw output."""
    result = write_image(spec(f"{server.url}/{image.name}", image.read_bytes()), disk, FAST,
                         scratch_dir=str(scratch_dir or tmp_path))
    expected = reference(image, tmp_path)
    assert result.size == len(expected)
    with open(disk, "rb") as f:
        written = f.read(len(expected))
        rest = f.read()
    assert written == expected, f"{image.name}: the disk differs from qemu-img convert -O raw"
    if not disk.startswith("/dev/"):
        assert rest == FILL * len(rest)         # nothing written past the virtual size
    return result


def gets(server: ImageServer, image: Path) -> int:
    return sum(1 for method, path, _ in server.requests
               if method == "GET" and path == f"/{image.name}")


LAYOUTS = {   # name: qemu-img convert options (qcow2 output)
    "v3": [],
    "v2": ["-o", "compat=0.10"],
    "zlib": ["-c"],
    "zstd": ["-c", "-o", "compression_type=zstd"],
    "v2-zlib": ["-c", "-o", "compat=0.10"],
    "extended-l2": ["-o", "extended_l2=on"],
    "clusters-512": ["-o", "cluster_size=512"],
    "clusters-2m": ["-o", "cluster_size=2M"],
    "zlib-clusters-4k": ["-c", "-o", "cluster_size=4096"],
    "metadata-preallocated": ["-o", "preallocation=metadata"],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_qemu_img_convert_layouts_stream_to_the_disk(tmp_path, raw_image, srv_dir, server,
                                                     layout, caplog):
    image = srv_dir / f"{layout}.qcow2"
    qemu("convert", "-f", "raw", "-O", "qcow2", *LAYOUTS[layout], str(raw_image), str(image))
    disk = make_disk(tmp_path / "disk.img")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with caplog.at_level(logging.INFO, logger="ramdisk_agent"):
        result = write_and_compare(server, image, disk, tmp_path, scratch)
    assert gets(server, image) == 1 and FALLBACK not in caplog.text     # one pass
    assert "streamed to" in caplog.text and not list(scratch.iterdir())
    assert result.digest == hashlib.sha256(image.read_bytes()).hexdigest()
    assert result.resumes == 0


def test_zero_clusters_subclusters_and_discards(tmp_path, srv_dir, server):
    """qemu-io writes: data, zero clusters (write -z, preallocated and not), discards,
    and 4 KiB writes that allocate single subclusters of an extended-L2 image."""
    for name, options in (("zeros-v3", "cluster_size=65536"),
                          ("zeros-extl2", "extended_l2=on,cluster_size=65536")):
        image = srv_dir / f"{name}.qcow2"
        qemu("create", "-q", "-f", "qcow2", "-o", options, str(image), "24M")
        qemu("io", "-c", "write -P 0x11 0 6M", "-c", "write -z 1M 1M",
             "-c", "write -z -u 3M 128k", "-c", "discard 4M 64k",
             "-c", "write -P 0x22 8M 4k", "-c", "write -P 0x33 8300k 12k",
             "-c", "write -z 12M 2M", "-c", "write -P 0x44 23M 1M", str(image))
        disk = make_disk(tmp_path / f"{name}.img")
        write_and_compare(server, image, disk, tmp_path)
        assert gets(server, image) == 1


@pytest.mark.parametrize("compress", [["-c"], []], ids=["compressed", "data-runs"])
def test_to_a_loop_device_zeroes_with_blkzeroout(tmp_path, raw_image, srv_dir, server,
                                                 caplog, compress):
    """Compressed clusters are inflated and staged; plain data runs are written from
    the download buffers by the writer threads (several in flight) with O_DIRECT."""
    losetup = require("losetup")
    image = srv_dir / "loop.qcow2"
    qemu("convert", "-f", "raw", "-O", "qcow2", *compress, str(raw_image), str(image))
    backing = make_disk(tmp_path / "loop-backing.img")
    loop = subprocess.run([losetup, "--find", "--show", backing], check=True,
                          capture_output=True, text=True).stdout.strip()
    try:
        with caplog.at_level(logging.INFO, logger="ramdisk_agent"):
            result = write_and_compare(server, image, loop, tmp_path)
    finally:
        subprocess.run([losetup, "-d", loop], check=True)
    assert result.direct_io
    assert "zero ranges by BLKZEROOUT" in caplog.text


def test_a_write_failing_on_a_writer_thread_fails_and_leaves_nothing_bootable(
        tmp_path, raw_image, srv_dir, server):
    """ENOSPC half-way: the disk is a file larger than the tmpfs it lives on, so the
    writer threads' O_DIRECT writes of data runs fail once it is full. The failure is
    reported, and the writes are all over before the start of the disk is zeroed."""
    if os.geteuid():
        pytest.fail("the ENOSPC test mounts a tmpfs: run it as root (CI does)")
    image = srv_dir / "image.qcow2"
    qemu("convert", "-f", "raw", "-O", "qcow2", str(raw_image), str(image))
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(small)],
                   check=True)
    try:
        disk = small / "disk.img"
        with open(disk, "wb") as f:
            f.truncate(DISK_SIZE)
        with pytest.raises(ImageWriteError, match="No space left on device"):
            write_image(spec(f"{server.url}/{image.name}", image.read_bytes()), str(disk),
                        FAST)
        content = disk.read_bytes()
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert content[:MIB] == bytes(MIB)
    assert content[MIB:2 * MIB] == raw_image.read_bytes()[MIB:2 * MIB]   # it was written


def late_l1_image(srv_dir: Path, name: str, data_mib: int) -> Path:
    """A table after the data it maps: growing the image past its L1 table makes
    qemu-img resize move the L1 table to the end of the file."""
    image = srv_dir / f"{name}.qcow2"
    qemu("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", str(image), "24M")
    qemu("io", "-c", f"write -P 0x5a 0 {data_mib}M", "-c", "write -z 22M 64k", str(image))
    qemu("resize", "-q", str(image), "30M")
    return image


def test_table_after_its_data_within_the_bound_still_streams(tmp_path, srv_dir, server,
                                                              caplog):
    image = late_l1_image(srv_dir, "late-small", 4)
    disk = make_disk(tmp_path / "disk.img")
    with caplog.at_level(logging.INFO, logger="ramdisk_agent"):
        write_and_compare(server, image, disk, tmp_path)
    assert gets(server, image) == 1 and FALLBACK not in caplog.text


def test_non_streamable_layout_falls_back_to_scratch_and_qemu_img(tmp_path, srv_dir,
                                                                  server, caplog):
    image = late_l1_image(srv_dir, "late-big", 20)     # more than RETAIN_LIMIT before L1
    disk = make_disk(tmp_path / "disk.img")
    with caplog.at_level(logging.INFO, logger="ramdisk_agent"):
        write_and_compare(server, image, disk, tmp_path)
    assert gets(server, image) == 2                    # streamed, then into the scratch file
    assert FALLBACK in caplog.text and "no longer kept" in caplog.text


def test_backing_file_is_refused_before_writing(tmp_path, srv_dir, server):
    base = tmp_path / "base.qcow2"
    qemu("create", "-q", "-f", "qcow2", str(base), "8M")
    image = srv_dir / "overlay.qcow2"
    qemu("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(image))
    disk = make_disk(tmp_path / "disk.img")
    with pytest.raises(ImageWriteError, match="backing file are refused"):
        write_image(spec(f"{server.url}/{image.name}", image.read_bytes()), disk, FAST)
    content = Path(disk).read_bytes()
    assert content[:MIB] == bytes(MIB) and content[MIB:] == FILL * (DISK_SIZE - MIB)


def test_encrypted_image_is_refused(tmp_path, srv_dir, server):
    image = srv_dir / "luks.qcow2"
    qemu("create", "-q", "-f", "qcow2", "--object", "secret,id=sec0,data=not-a-real-secret",
         "-o", "encrypt.format=luks,encrypt.key-secret=sec0", str(image), "8M")
    disk = make_disk(tmp_path / "disk.img")
    with pytest.raises(ImageWriteError, match="encrypted qcow2 images are refused"):
        write_image(spec(f"{server.url}/{image.name}", image.read_bytes()), disk, FAST)
    assert Path(disk).read_bytes()[:MIB] == bytes(MIB)


def test_image_larger_than_the_disk_is_refused_before_writing(tmp_path, srv_dir, server):
    image = srv_dir / "big.qcow2"
    qemu("create", "-q", "-f", "qcow2", str(image), "64M")
    disk = make_disk(tmp_path / "disk.img")
    with pytest.raises(ImageWriteError, match="does not fit"):
        write_image(spec(f"{server.url}/{image.name}", image.read_bytes()), disk, FAST)
    content = Path(disk).read_bytes()
    assert content[:MIB] == bytes(MIB) and content[MIB:] == FILL * (DISK_SIZE - MIB)


@pytest.mark.parametrize("checksum_of", ["truncated", "full"])
def test_truncated_download_fails_and_leaves_nothing_bootable(tmp_path, raw_image, srv_dir,
                                                              server, checksum_of):
    full = srv_dir / "full.qcow2"
    qemu("convert", "-f", "raw", "-O", "qcow2", str(raw_image), str(full))
    data = full.read_bytes()
    cut = srv_dir / "cut.qcow2"
    cut.write_bytes(data[:len(data) * 2 // 3])     # the server has only part of it
    disk = make_disk(tmp_path / "disk.img")
    image_info = spec(f"{server.url}/{cut.name}",
                      cut.read_bytes() if checksum_of == "truncated" else data)
    with pytest.raises(ImageWriteError, match="truncated"):
        write_image(image_info, disk, FAST)
    assert Path(disk).read_bytes()[:MIB] == bytes(MIB)


def test_connection_cut_without_resume_fails(tmp_path, raw_image, srv_dir):
    image = srv_dir / "image.qcow2"
    qemu("convert", "-f", "raw", "-O", "qcow2", str(raw_image), str(image))
    srv = ImageServer(str(srv_dir), drop_after=5 * MIB + 3)
    srv.start_background()
    try:
        disk = make_disk(tmp_path / "disk.img")
        with pytest.raises(ImageDownloadError, match="failed at byte"):
            write_image(spec(f"{srv.url}/{image.name}", image.read_bytes()), disk,
                        DownloadOptions(retries=0, timeout=10))
    finally:
        srv.shutdown()
        srv.server_close()
    assert Path(disk).read_bytes()[:MIB] == bytes(MIB)


def test_dropped_connection_is_resumed_mid_conversion(tmp_path, raw_image, srv_dir):
    image = srv_dir / "image.qcow2"
    qemu("convert", "-f", "raw", "-O", "qcow2", "-c", str(raw_image), str(image))
    srv = ImageServer(str(srv_dir), drop_after=3 * MIB + 777)
    srv.start_background()
    try:
        disk = make_disk(tmp_path / "disk.img")
        result = write_and_compare(srv, image, disk, tmp_path)
    finally:
        srv.shutdown()
        srv.server_close()
    assert result.resumes == 1
    assert [r for _, _, r in srv.requests] == [None, f"bytes={3 * MIB + 777}-"]


def test_tampered_image_fails_the_checksum(tmp_path, raw_image, srv_dir, server):
    image = srv_dir / "image.qcow2"
    qemu("convert", "-f", "raw", "-O", "qcow2", str(raw_image), str(image))
    original = image.read_bytes()
    tampered = bytearray(original)
    tampered[len(original) // 2] ^= 0x01          # inside a data cluster: converts fine
    image.write_bytes(tampered)
    disk = make_disk(tmp_path / "disk.img")
    with pytest.raises(ImageChecksumError, match="checksum mismatch"):
        write_image(spec(f"{server.url}/{image.name}", original), disk, FAST)
    assert Path(disk).read_bytes()[:MIB] == bytes(MIB)


def test_raw_bytes_declared_qcow2_are_refused(tmp_path, raw_image, srv_dir, server):
    image = srv_dir / "really-raw.qcow2"
    image.write_bytes(raw_image.read_bytes()[:2 * MIB])
    disk = make_disk(tmp_path / "disk.img")
    with pytest.raises(ImageWriteError, match="does not start with the qcow2 magic"):
        write_image(spec(f"{server.url}/{image.name}", image.read_bytes()), disk, FAST)
    assert os.path.getsize(disk) == DISK_SIZE
