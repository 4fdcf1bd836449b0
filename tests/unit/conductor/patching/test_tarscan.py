"""Raw tar header checks (conductor/patching/tarscan.py): what tarfile would parse
slowly or mis-bound is refused before tarfile sees it; real archives pass."""
from __future__ import annotations

import gzip
import io
import tarfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conductor.patching import archive, tarscan
from conductor.patching import metadata as md
from conductor.patching.metadata import PatchFormatError


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _pax_record(keyword: str, value: str) -> bytes:
    """``"%d %s=%s\n"`` whose length counts its own digits, as tarfile writes it."""
    body = f" {keyword}={value}\n"
    length = previous = 0
    while True:
        length = len(body) + len(str(previous))
        if length == previous:
            return f"{length}{body}".encode()
        previous = length


def hostile_tar(kind: bytes, payload: bytes, member: str = "metadata.tar") -> bytes:
    """An extended header of ``kind`` carrying ``payload``, then one empty member."""
    return (_header("././@PaxHeader", kind, len(payload)) + _pad(payload) +
            _header(member, tarfile.REGTYPE, 0) + b"\0" * 1024)


@pytest.fixture
def tarfile_never_parses_extended_headers(monkeypatch):
    """Fail if tarfile reaches its (quadratic, CVE-2024-6232) pax or long-name parser."""
    def refuse(self, tar):
        raise AssertionError("tarfile parsed an extended header tarscan should refuse")
    monkeypatch.setattr(tarfile.TarInfo, "_proc_pax", refuse)
    monkeypatch.setattr(tarfile.TarInfo, "_proc_gnulong", refuse)


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.XGLTYPE,
                                  tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                                  tarfile.GNUTYPE_LONGLINK])
def test_a_96_kib_extended_header_is_refused(kind, tarfile_never_parses_extended_headers):
    """The attack: 96 KiB of digits held tarfile's regex (and the GIL) for ~14 s."""
    data = hostile_tar(kind, b"1" * (96 << 10))
    with pytest.raises(PatchFormatError, match="extended tar header of 98304 bytes"):
        tarscan.scan_bytes(data, "metadata.tar", 8)


def test_the_hostile_patch_file_is_refused_by_archive_read(
        tmp_path, tarfile_never_parses_extended_headers):
    patch = tmp_path / "EVIL_0001.patch"
    patch.write_bytes(gzip.compress(hostile_tar(tarfile.XHDTYPE, b"1" * (96 << 10))))
    with pytest.raises(PatchFormatError, match="extended tar header"):
        archive.read(patch, [], tmp_path / "w")
    assert not list((tmp_path / "w" / "outer").iterdir())


def test_a_gzip_header_bomb_is_refused_after_its_first_block(
        tmp_path, tarfile_never_parses_extended_headers, monkeypatch):
    """256 KiB of gzip declaring a 256 MiB pax header (tarfile would read it into
    memory and run its regex over it): refused having decompressed almost nothing."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as stream:
        stream.write(_header("././@PaxHeader", tarfile.XHDTYPE, 256 << 20))
        digits = b"1" * (1 << 20)
        for _ in range(256):
            stream.write(digits)
    patch = tmp_path / "BOMB_0001.patch"
    patch.write_bytes(raw.getvalue())
    assert patch.stat().st_size < 512 << 10
    decompressed = []
    real_read = gzip.GzipFile.read

    def counting_read(self, size=-1):
        chunk = real_read(self, size)
        decompressed.append(len(chunk))
        return chunk
    monkeypatch.setattr(gzip.GzipFile, "read", counting_read)
    with pytest.raises(PatchFormatError, match="extended tar header of 268435456 bytes"):
        archive.read(patch, [], tmp_path / "w")
    assert sum(decompressed) <= 1 << 20


@pytest.mark.parametrize("keyword, value", [("size", "0"), ("GNU.sparse.map", "0,10"),
                                            ("GNU.sparse.major", "1")])
def test_pax_records_that_move_member_boundaries_are_refused(keyword, value):
    """A pax ``size`` would make tarfile read a header where tarscan skipped data."""
    data = hostile_tar(tarfile.XHDTYPE, _pax_record(keyword, value))
    with pytest.raises(PatchFormatError, match="pax keyword"):
        tarscan.scan_bytes(data, "software.tar", 8)


def test_sparse_members_and_bad_headers_are_refused():
    sparse = _header("x.rpm", tarfile.GNUTYPE_SPARSE, 0) + b"\0" * 1024
    with pytest.raises(PatchFormatError, match="sparse"):
        tarscan.scan_bytes(sparse, "software.tar", 8)
    corrupt = bytearray(_header("x.rpm", tarfile.REGTYPE, 0) + b"\0" * 1024)
    corrupt[0] ^= 0xFF
    with pytest.raises(PatchFormatError, match="bad checksum"):
        tarscan.scan_bytes(bytes(corrupt), "software.tar", 8)
    many = b"".join(_header(f"{i}.rpm", tarfile.REGTYPE, 0) for i in range(10))
    with pytest.raises(PatchFormatError, match="more than 8 tar headers"):
        tarscan.scan_bytes(many + b"\0" * 1024, "software.tar", 8)


def test_too_many_extended_header_bytes_in_one_archive_are_refused():
    one = _pad(_pax_record("path", "a" * 8000))
    member = _header("x.rpm", tarfile.REGTYPE, 0)
    data = (_header("././@PaxHeader", tarfile.XHDTYPE, len(one)) + one + member) * 140
    with pytest.raises(PatchFormatError, match="extended tar headers exceed"):
        tarscan.scan_bytes(data + b"\0" * 1024, "software.tar", 1000)


def test_declared_data_beyond_the_budget_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.tar"
    path.write_bytes(_header("software.tar", tarfile.REGTYPE, 1 << 40) + b"\0" * 1024)
    with pytest.raises(PatchFormatError, match="compression bomb"):
        tarscan.scan_file(path, "patch", 8, 1 << 30)


def test_data_that_looks_like_a_header_is_skipped_as_tarfile_skips_it():
    """A member's data may hold anything, a fake pax header too: it is data."""
    fake = hostile_tar(tarfile.XHDTYPE, b"1" * (96 << 10))
    data = _header("inner.tar", tarfile.REGTYPE, len(fake)) + _pad(fake) + b"\0" * 1024
    tarscan.scan_bytes(data, "outer", 8)
    assert [m.name for m in tarfile.open(fileobj=io.BytesIO(data))] == ["inner.tar"]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT,
                                 tarfile.USTAR_FORMAT])
def test_real_archives_pass(fmt):
    """Python's own writers: pax headers for long names and float mtimes, GNU long
    names, a V7-style directory, directories with a size tarfile ignores."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name in ("pre-apply", ("long-" * 19 + "x.rpm") if fmt != tarfile.USTAR_FORMAT
                     else "short.rpm", "b.rpm"):
            info = tarfile.TarInfo(name)
            data = name.encode() * 300
            info.size, info.mtime = len(data), time.time()
            if name == "pre-apply":
                info.type, info.size = tarfile.DIRTYPE, 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    tarscan.scan_bytes(buffer.getvalue(), "software.tar", 16)


def test_a_written_patch_passes(tmp_path):
    rpm = tmp_path / "labtool-2.0-3.noarch.rpm"
    rpm.write_bytes(b"\xed\xab\xee\xdb" + b"x" * 5000)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    meta = md.PatchMetadata(id="LAB_0001", sw_version="1.0", contents=[rpm.name])
    patch = archive.write(tmp_path, meta, [rpm], {"pre-apply": b"#!/bin/sh\n"}, key)
    tarscan.scan_gzip(patch, "patch", 17, 1 << 30)
    loaded = archive.read(patch, [("dev", key.public_key())], tmp_path / "w")
    assert sorted(loaded.rpms) == [rpm.name] and loaded.semantics
    assert Path(loaded.rpms[rpm.name]).read_bytes() == rpm.read_bytes()
