"""Hostile qcow2 images against the agent's one-pass converter (issue 14).

The converter reads tables an image's author controls while it writes the disk. Each
test takes an image qemu-img made, rewrites what an attacker would (header fields out
of range, an L1 table of a million entries, tables pointing past the end of the file
or back at bytes already passed, a compressed cluster of the largest size over a
deflate bomb), serves it on loopback and writes it with ``write_image``: the result is
a clear error, or exactly what ``qemu-img convert -O raw`` makes of the same file.
Where memory is the attack, the write runs in a process of its own
(``qcow2_write_process``) and the memory it added is checked against the issue's
bound for a qcow2 write (64 MiB).
"""
from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from ramdisk_agent.errors import ImageWriteError
from ramdisk_agent.ramdisk.download import DownloadOptions
from ramdisk_agent.ramdisk.imagewrite import ImageSpec, write_image
from tests.functional.tools import require
from virtlab.imageserver import ImageServer

MIB = 1 << 20
MEMORY_BOUND_MIB = 64
ROOT = Path(__file__).resolve().parents[2]
FAST = DownloadOptions(retry_delay=0.05, timeout=10)
FILL = b"\xa5"


def qemu_img(*args: str) -> None:
    done = subprocess.run([require("qemu-img"), *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def word(data: bytes | bytearray, at: int) -> int:
    return struct.unpack_from(">Q", data, at)[0]


def l1_offset(data: bytes | bytearray) -> int:
    return word(data, 40)


def l2_offset(data: bytes | bytearray, index: int) -> int:
    return word(data, l1_offset(data) + 8 * index) & 0x00FFFFFFFFFFFE00


@pytest.fixture()
def srv(tmp_path):
    (tmp_path / "srv").mkdir()
    server = ImageServer(str(tmp_path / "srv"))
    server.start_background()
    yield server
    server.shutdown()
    server.server_close()


def serve(srv: ImageServer, name: str, data: bytes) -> str:
    Path(srv.root, name).write_bytes(data)
    return f"{srv.url}/{name}"


def spec(url: str, data: bytes) -> ImageSpec:
    return ImageSpec.from_image_info({"urls": [url], "disk_format": "qcow2",
                                      "os_hash_algo": "sha256",
                                      "os_hash_value": hashlib.sha256(data).hexdigest()})


def disk(path: Path, size: int) -> str:
    path.write_bytes(FILL * size)
    return str(path)


def in_child(url: str, data: bytes, target: str, scratch: Path) -> dict:
    """write_image in its own process: its outcome and the memory it added (MiB)."""
    scratch.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "tests.security.qcow2_write_process", url,
                           hashlib.sha256(data).hexdigest(), target, str(scratch)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def reference(tmp_path: Path, data: bytes) -> bytes:
    image, raw = tmp_path / "reference.qcow2", tmp_path / "reference.raw"
    image.write_bytes(data)
    qemu_img("convert", "-f", "qcow2", "-O", "raw", str(image), str(raw))
    return raw.read_bytes()


def gets(srv: ImageServer, name: str) -> int:
    return sum(1 for method, path, _ in srv.requests if method == "GET" and path == f"/{name}")


@pytest.fixture(scope="module")
def small_image(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("qcow2-hostile") / "small.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(path), "8M")
    return path.read_bytes()


@pytest.mark.parametrize("at, fmt, value, message", [
    (20, ">I", 40, "cluster_bits 40 is out of range"),
    (20, ">I", 8, "cluster_bits 8 is out of range"),
    (36, ">I", 0x7FFFFFFF, "L1 table of 2147483647 entries is too large"),
    (24, ">Q", 1 << 62, "too small for a virtual size"),
    (32, ">I", 1, r"encrypted qcow2 images are refused \(crypt_method 1\)"),
    (8, ">Q", 0x200, "backing file are refused"),
    (72, ">Q", 1 << 33, "unknown incompatible features 0x200000000"),
    (100, ">I", 1 << 30, "header_length 1073741824 is invalid"),
])
def test_header_fields_out_of_range_are_refused_before_writing(tmp_path, srv, small_image,
                                                               at, fmt, value, message):
    data = bytearray(small_image)
    struct.pack_into(fmt, data, at, value)
    url = serve(srv, "hostile.qcow2", bytes(data))
    target = disk(tmp_path / "disk.img", 16 * MIB)
    with pytest.raises(ImageWriteError, match=message):
        write_image(spec(url, bytes(data)), target, FAST, scratch_dir=str(tmp_path))
    content = Path(target).read_bytes()
    assert content[:MIB] == bytes(MIB) and content[MIB:] == FILL * (15 * MIB)
    assert gets(srv, "hostile.qcow2") == 1          # refused, not retried with qemu-img


def test_an_l1_table_of_65536_entries_all_pointing_ahead_stays_bounded(tmp_path, srv):
    """2 GiB of 512-byte clusters: 65,536 L1 entries, each naming the same L2 table at
    the end of the file, so every one would wait as a range ahead of the download.
    The converter gives up at its bound and the write goes to qemu-img, in bounded
    memory, and gives qemu-img's result."""
    path = tmp_path / "wide.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(path), "2G")
    data = bytearray(path.read_bytes())
    table = len(data) + -len(data) % 512
    data += bytes(table - len(data) + 512)            # an all-unallocated L2 table
    entries = struct.unpack_from(">I", data, 36)[0]
    assert entries == 65536
    struct.pack_into(f">{entries}Q", data, l1_offset(data), *([table | 1 << 63] * entries))
    target = tmp_path / "disk.img"
    with open(target, "wb") as f:                     # sparse, with marks to be zeroed
        f.truncate(2 << 30)
        for at in (0, 1 << 30, (2 << 30) - MIB):
            f.seek(at)
            f.write(FILL * MIB)
    url = serve(srv, "wide.qcow2", bytes(data))
    outcome = in_child(url, bytes(data), str(target), tmp_path / "scratch")
    assert outcome["error"] is None and outcome["size"] == 2 << 30, outcome
    assert outcome["peak_extra_mib"] <= MEMORY_BOUND_MIB, outcome
    assert gets(srv, "wide.qcow2") == 2               # streamed until the bound, then qemu-img
    with open(target, "rb") as f:
        for at in (0, 1 << 30, (2 << 30) - MIB):
            f.seek(at)
            assert f.read(MIB) == bytes(MIB)


def test_an_l2_table_past_the_end_of_the_file_is_refused(tmp_path, srv):
    path = tmp_path / "far.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(path), "8M")
    data = bytearray(path.read_bytes())
    struct.pack_into(">Q", data, l1_offset(data), 1 << 63 | 1 << 40)
    url = serve(srv, "far.qcow2", bytes(data))
    with pytest.raises(ImageWriteError, match="L2 table at byte 1099511627776 lies beyond "
                                              "the end of the image"):
        write_image(spec(url, bytes(data)), disk(tmp_path / "disk.img", 16 * MIB), FAST,
                    scratch_dir=str(tmp_path))
    assert gets(srv, "far.qcow2") == 1


@pytest.fixture(scope="module")
def fragmented(tmp_path_factory) -> bytes:
    """12 MiB of random data in 4 KiB clusters: six L2 tables, each before its data."""
    work = tmp_path_factory.mktemp("qcow2-fragmented")
    raw = work / "source.raw"
    raw.write_bytes(hashlib.shake_256(b"metalcast").digest(12 * MIB))
    qemu_img("convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", str(raw),
             str(work / "image.qcow2"))
    return (work / "image.qcow2").read_bytes()


def test_a_cluster_mapped_back_past_what_is_kept_goes_to_qemu_img(tmp_path, srv, fragmented):
    """The last L2 table maps its first cluster onto guest 0's data, 10 MiB earlier in the
    file and already written: the converter cannot have kept it and says so; qemu-img
    converts the image, in bounded memory."""
    data = bytearray(fragmented)
    first_data = word(data, l2_offset(data, 0)) & 0x00FFFFFFFFFFFE00
    struct.pack_into(">Q", data, l2_offset(data, 5), 1 << 63 | first_data)
    url = serve(srv, "back.qcow2", bytes(data))
    target = disk(tmp_path / "disk.img", 16 * MIB)
    outcome = in_child(url, bytes(data), target, tmp_path / "scratch")
    assert outcome["error"] is None and outcome["peak_extra_mib"] <= MEMORY_BOUND_MIB, outcome
    assert gets(srv, "back.qcow2") == 2
    expected = reference(tmp_path, bytes(data))
    assert expected[10 * MIB:10 * MIB + 4096] == expected[:4096]
    assert Path(target).read_bytes()[:len(expected)] == expected


def test_a_table_read_as_a_table_and_as_data_gives_what_qemu_img_gives(tmp_path, srv,
                                                                       fragmented):
    """The last L1 entry names the L1 table itself: its entries become L2 entries that
    map the other L2 tables as data. Bytes claimed twice are read once, in one pass."""
    data = bytearray(fragmented)
    struct.pack_into(">Q", data, l1_offset(data) + 8 * 5, 1 << 63 | l1_offset(data))
    url = serve(srv, "self.qcow2", bytes(data))
    target = disk(tmp_path / "disk.img", 16 * MIB)
    write_image(spec(url, bytes(data)), target, FAST, scratch_dir=str(tmp_path))
    assert gets(srv, "self.qcow2") == 1
    expected = reference(tmp_path, bytes(data))
    assert expected[10 * MIB:10 * MIB + 4096] == bytes(data[l2_offset(data, 0):][:4096])
    assert Path(target).read_bytes()[:len(expected)] == expected


def test_a_compressed_cluster_of_the_largest_size_over_a_deflate_bomb(tmp_path, srv):
    """The entry claims the most sectors the format allows (two clusters' worth) over a
    deflate stream of 64 MiB of zeros: the input stops at the entry's size, the output
    at one cluster, as in qemu; memory stays bounded."""
    raw = tmp_path / "text.raw"
    raw.write_bytes((b"metalcast " * 6554)[:64 << 10] + bytes(MIB - (64 << 10)))
    path = tmp_path / "one.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", "-c", str(raw), str(path))
    data = bytearray(path.read_bytes())
    entry_at = l2_offset(data, 0)
    offset = word(data, entry_at) & ((1 << 54) - 1)
    assert word(data, entry_at) & 1 << 62                   # qemu-img compressed it
    packer = zlib.compressobj(9, zlib.DEFLATED, -12)
    bomb = packer.compress(bytes(64 * MIB)) + packer.flush()
    del data[offset:]
    data += bomb + bytes(128 << 10)
    struct.pack_into(">Q", data, entry_at, 1 << 62 | 0xFF << 54 | offset)
    url = serve(srv, "bomb.qcow2", bytes(data))
    target = disk(tmp_path / "disk.img", 4 * MIB)
    outcome = in_child(url, bytes(data), target, tmp_path / "scratch")
    assert outcome["error"] is None and outcome["peak_extra_mib"] <= MEMORY_BOUND_MIB, outcome
    assert gets(srv, "bomb.qcow2") == 1
    expected = reference(tmp_path, bytes(data))
    assert expected == bytes(MIB) and Path(target).read_bytes()[:MIB] == expected
    # the same entry pointing past the end of the file: refused, nothing converted
    struct.pack_into(">Q", data, entry_at, 1 << 62 | 0xFF << 54 | len(data) + 4096)
    url = serve(srv, "bomb-far.qcow2", bytes(data))
    with pytest.raises(ImageWriteError, match="compressed cluster at byte .* lies beyond"):
        write_image(spec(url, bytes(data)), target, FAST, scratch_dir=str(tmp_path))
