"""Pure parts of the QEMU deploy lab's builders: the MBR, the cpio mtimes, library paths."""
from __future__ import annotations

import gzip
import io
import struct

from virtlab import agent_initramfs, boot_disk
from virtlab.initramfs import NewcWriter


def test_mbr_has_boot_code_one_active_linux_partition_and_signature(tmp_path, monkeypatch):
    code = tmp_path / "mbr.bin"
    code.write_bytes(b"\xeb\x63" + b"\x90" * 438)
    monkeypatch.setattr(boot_disk, "MBR_BIN", code)
    size = 32 << 20
    sector = boot_disk.mbr(size)
    assert len(sector) == 512 and sector[510:] == b"\x55\xaa"
    assert sector[:440] == code.read_bytes()
    status, ptype, first, count = struct.unpack_from("<B3xB3xII", sector, 446)
    assert (status, ptype) == (0x80, 0x83)
    assert first * 512 == boot_disk.PART_START
    assert (first + count) * 512 == size            # the partition ends at the disk's end
    assert sector[462:510] == bytes(48)             # no other partitions


def test_disk_initramfs_carries_the_version_and_the_marker_init():
    raw = gzip.decompress(boot_disk.disk_initramfs("7"))
    assert b"VERSION_ID=7" in raw
    assert boot_disk.MARKER.encode() in raw and b"poweroff -f" in raw


def test_newc_file_entries_keep_their_mtime():
    out = io.BytesIO()
    writer = NewcWriter(out)
    writer.file("lib/x.py", b"print()\n", mtime=1700000123)
    header = out.getvalue()[:110]
    assert header[:6] == b"070701"
    assert int(header[6 + 5 * 8:6 + 6 * 8], 16) == 1700000123   # c_mtime, the 6th field


def test_libraries_keep_their_soname_under_the_resolved_directory(tmp_path):
    real = tmp_path / "usr" / "lib"
    real.mkdir(parents=True)
    (tmp_path / "lib").symlink_to(real)
    (real / "libz.so.1.2.13").write_bytes(b"")
    (real / "libz.so.1").symlink_to("libz.so.1.2.13")
    path = agent_initramfs._archive_path(tmp_path / "lib" / "libz.so.1")
    assert path == str(real / "libz.so.1").lstrip("/")
