"""The .patch container end to end: real RPMs (rpmbuild), the real build command
(`sw-patch-build`), an independent verifier (openssl) and hostile archives."""
from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conductor.patching import archive, signing
from conductor.patching import metadata as md
from conductor.patching.metadata import PatchFormatError
from tests.functional.rpm_tools import build_rpm

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("patchfmt")
    rpms = [build_rpm(work, "labpatch", "1.1", "1"),
            build_rpm(work, "labtool", "2.0", "3")]
    data = work / "data"
    subprocess.run([BIN / "metalcast", "patch", "keygen", "--data-dir", data], check=True,
                   capture_output=True)
    script = work / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    out = work / "out"
    proc = subprocess.run(
        [BIN / "sw-patch-build", "--id", "LAB_0001", "--release", "1.0", "--status", "REL",
         "--reboot-required", "N", "--summary", "fix things", "--desc", "two\nlines",
         "--controller", "labpatch", "--all-nodes", "labtool", "--req", "LAB_0000",
         "--pre-apply", script, "--data-dir", data, "-o", out, *rpms],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    trusted = signing.load_trusted(data / "patching" / "trusted")
    return work, out / "LAB_0001.patch", trusted, data


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def _repack(path: Path, members: dict[str, bytes], extra=None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return path


def test_build_and_read_back(lab, tmp_path):
    _, patch, trusted, _ = lab
    loaded = archive.read(patch, trusted, tmp_path / "w")
    meta = loaded.metadata
    assert meta.id == "LAB_0001" and meta.sw_version == "1.0" and meta.status == "REL"
    assert meta.reboot_required == "N" and meta.requires == ["LAB_0000"]
    assert meta.personalities["controller"] == ["labpatch", "labtool"]
    assert meta.personalities["storage"] == ["labtool"]
    assert sorted(loaded.rpms) == ["labpatch-1.1-1.noarch.rpm", "labtool-2.0-3.noarch.rpm"]
    assert loaded.semantics == {"pre-apply": b"#!/bin/sh\nexit 0\n"}
    assert loaded.signer == "formal-certificate"
    names = [m.name for m in tarfile.open(patch, "r:gz")]
    assert names == ["metadata.tar", "software.tar", "semantics.tar", "signature",
                     "signature.v2"]
    # A removable patch: an empty element, as StarlingX's patch_build writes it.
    with tarfile.open(fileobj=io.BytesIO(_members(patch)["metadata.tar"])) as inner:
        xml = inner.extractfile("metadata.xml").read().decode()
    assert "\n  <unremovable/>\n" in xml and meta.unremovable == ""


def test_signature_v2_verifies_with_openssl(lab, tmp_path):
    """An independent PSS verifier: SHA-256 over the signed tars, salt 32, MGF1-SHA256."""
    _, patch, _, data = lab
    members = _members(patch)
    signed = tmp_path / "signed"
    signed.write_bytes(members["metadata.tar"] + members["software.tar"] +
                       members["semantics.tar"])
    (tmp_path / "sig").write_bytes(members["signature.v2"])
    cert = data / "patching" / "trusted" / "formal-certificate.pem"
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-pubkey", "-noout"], check=True,
                         capture_output=True).stdout
    (tmp_path / "pub.pem").write_bytes(pub)
    proc = subprocess.run(["openssl", "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss",
                           "-sigopt", "rsa_pss_saltlen:32", "-verify", tmp_path / "pub.pem",
                           "-signature", tmp_path / "sig", signed],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "Verified OK" in proc.stdout, proc.stdout + proc.stderr


def test_pkcs1v15_signature_is_accepted(lab, tmp_path):
    _, patch, trusted, data = lab
    members = _members(patch)
    key = data / "patching" / "keys" / "formal-private-key.pem"
    signed = tmp_path / "signed"
    signed.write_bytes(members["metadata.tar"] + members["software.tar"] +
                       members["semantics.tar"])
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key, signed],
                         check=True, capture_output=True).stdout
    members["signature.v2"] = sig
    loaded = archive.read(_repack(tmp_path / "LAB_0001.patch", members), trusted,
                          tmp_path / "w")
    assert loaded.metadata.id == "LAB_0001"


def _refused(patch: Path, trusted, tmp_path, match: str):
    with pytest.raises(PatchFormatError, match=match):
        archive.read(patch, trusted, tmp_path / "w")


def test_tampered_software_fails_v1_and_v2(lab, tmp_path):
    _, patch, trusted, _ = lab
    members = _members(patch)
    software = bytearray(members["software.tar"])
    software[600] ^= 0xFF
    members["software.tar"] = bytes(software)
    _refused(_repack(tmp_path / "a.patch", members), trusted, tmp_path, "failed verification")
    # An attacker who recomputes the keyless v1 checksum still fails v2.
    md5s = [hashlib.md5(members[n]).hexdigest()
            for n in ("metadata.tar", "software.tar", "semantics.tar")]
    members["signature"] = signing.v1_checksum(md5s).encode()
    _refused(_repack(tmp_path / "b.patch", members), trusted, tmp_path / "2",
             "not signed by a trusted key")


def test_unsigned_wrong_key_and_missing_members(lab, tmp_path):
    _, patch, trusted, _ = lab
    members = _members(patch)
    unsigned = {k: v for k, v in members.items() if k != "signature.v2"}
    _refused(_repack(tmp_path / "u.patch", unsigned), trusted, tmp_path / "u",
             "has not been signed")
    other = tmp_path / "other"
    signing.generate(other / "keys", other / "trusted", "formal")
    _refused(patch, signing.load_trusted(other / "trusted"), tmp_path / "k",
             "not signed by a trusted key")
    _refused(patch, [], tmp_path / "n", "no trusted patch keys")
    for name in ("metadata.tar", "software.tar", "signature"):
        partial = {k: v for k, v in members.items() if k != name}
        _refused(_repack(tmp_path / f"m-{name}.patch", partial), trusted,
                 tmp_path / f"m-{name}", f"missing member '{name}'")


@pytest.mark.parametrize("name,kind", [("extra.txt", tarfile.REGTYPE),
                                       ("../evil", tarfile.REGTYPE),
                                       ("/etc/evil", tarfile.REGTYPE),
                                       ("signature.v2", tarfile.SYMTYPE),
                                       ("software.tar", tarfile.LNKTYPE)])
def test_hostile_outer_members_are_refused(lab, tmp_path, name, kind):
    _, patch, trusted, _ = lab
    members = _members(patch)
    if kind != tarfile.REGTYPE:
        members.pop(name)
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd" if kind != tarfile.REGTYPE else ""
    _repack(tmp_path / "h.patch", members, extra=[info])
    _refused(tmp_path / "h.patch", trusted, tmp_path, "escapes|not a regular|unexpected")
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()


def test_duplicate_member_is_refused(lab, tmp_path):
    _, patch, trusted, _ = lab
    members = _members(patch)
    info = tarfile.TarInfo("signature")
    info.size = len(members["signature"])
    with tarfile.open(tmp_path / "d.patch", "w:gz") as tar:
        for name, data in members.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
        tar.addfile(info, io.BytesIO(members["signature"]))
    _refused(tmp_path / "d.patch", trusted, tmp_path, "twice")


def test_hostile_inner_software_member_is_refused(lab, tmp_path):
    """A signed patch whose software.tar smuggles a path: refused, nothing written."""
    work, _, trusted, data = lab
    rpm = next((work / "rpmbuild" / "RPMS" / "noarch").glob("labpatch-*.rpm"))
    meta = md.PatchMetadata(id="LAB_0009", sw_version="1.0", contents=[rpm.name])
    key = signing.load_private(data / "patching" / "keys" / "formal-private-key.pem")
    patch = archive.write(tmp_path, meta, [rpm], {}, key)
    members = _members(patch)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(f"../{rpm.name}")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\xed\xab\xee\xdb"))
    members["software.tar"] = buffer.getvalue()
    md5s = [hashlib.md5(members[n]).hexdigest() for n in ("metadata.tar", "software.tar")]
    digest = hashlib.sha256(members["metadata.tar"] + members["software.tar"]).digest()
    members["signature"] = signing.v1_checksum(md5s).encode()
    members["signature.v2"] = signing.v2_sign(key, digest)
    _refused(_repack(tmp_path / "LAB_0009.patch", members), trusted, tmp_path / "w2",
             "escapes")
    assert not (tmp_path / "w2" / rpm.name).exists()


def test_gzip_bomb_is_refused_fast(lab, tmp_path):
    _, _, trusted, _ = lab
    bomb = tmp_path / "bomb.patch"
    with gzip.open(bomb, "wb", compresslevel=9) as raw:
        info = tarfile.TarInfo("software.tar")
        info.size = 2 << 30
        raw.write(info.tobuf(format=tarfile.GNU_FORMAT))
        zeros = bytes(1 << 20)
        for _ in range(64):  # the first 64 MiB of the 2 GiB member
            raw.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    _refused(bomb, trusted, tmp_path, "bomb|larger than allowed")
    assert not (tmp_path / "w" / "outer" / "software.tar").exists() or \
        (tmp_path / "w" / "outer" / "software.tar").stat().st_size == 0


def test_not_a_patch_and_truncated(lab, tmp_path):
    _, patch, trusted, _ = lab
    junk = tmp_path / "junk.patch"
    junk.write_bytes(b"this is not gzip")
    _refused(junk, trusted, tmp_path / "a", "not a valid archive")
    truncated = tmp_path / "t.patch"
    truncated.write_bytes(patch.read_bytes()[:len(patch.read_bytes()) // 2])
    _refused(truncated, trusted, tmp_path / "b", "corrupt or truncated|not a valid|missing")


def test_build_refuses_bad_input(lab, tmp_path):
    work, _, _, data = lab
    not_rpm = tmp_path / "fake-1.0-1.noarch.rpm"
    not_rpm.write_bytes(b"hello")
    for argv, match in ((["--id", "X", "--release", "1", str(not_rpm)], "not an RPM file"),
                        (["--id", "X", "--release", "1", str(tmp_path / "none.rpm")],
                         "does not exist"),
                        (["--id", "../x", "--release", "1"], "not a valid patch ID")):
        proc = subprocess.run([BIN / "sw-patch-build", *argv, "--data-dir", data,
                               "-o", tmp_path], capture_output=True, text=True)
        assert proc.returncode == 1 and match in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("*.patch"))
    assert shutil.which("openssl")
