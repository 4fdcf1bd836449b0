"""The parent's side of the patch reader process (conductor/patching/unpack.py):
what a child answers is checked again, and its failures read as refusals. The
process itself runs in tests/security/ (a unit test starts none)."""
from __future__ import annotations

import base64
import dataclasses
import errno
import signal

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conductor import errors
from conductor.patching import archive, unpack
from conductor.patching import metadata as md
from conductor.patching.metadata import PatchFormatError

RPM = "labtool-2.0-3.noarch.rpm"


def _answer(workdir, **changes) -> dict:
    (workdir / "software").mkdir(parents=True, exist_ok=True)
    (workdir / "software" / RPM).write_bytes(b"\xed\xab\xee\xdb")
    meta = md.PatchMetadata(id="LAB_0001", sw_version="1.0", contents=[RPM],
                            semantics=["pre-apply"])
    answer = {"ok": True, "metadata": dataclasses.asdict(meta),
              "rpms": {RPM: str(workdir / "software" / RPM)},
              "semantics": {"pre-apply": base64.b64encode(b"#!/bin/sh\n").decode()},
              "signer": "formal"}
    answer.update(changes)
    return answer


def test_a_good_answer_becomes_a_patch_file(tmp_path):
    loaded = unpack._patch_file(_answer(tmp_path), tmp_path)
    assert loaded.metadata.id == "LAB_0001" and loaded.semantics == {"pre-apply":
                                                                     b"#!/bin/sh\n"}
    assert loaded.rpms[RPM] == (tmp_path / "software" / RPM).resolve()


def test_an_answer_with_a_traversing_sw_version_is_refused_again(tmp_path):
    answer = _answer(tmp_path)
    answer["metadata"]["sw_version"] = "1.0/../../x"
    with pytest.raises(PatchFormatError, match="Invalid release"):
        unpack._patch_file(answer, tmp_path)


def test_an_answer_pointing_outside_the_work_directory_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.rpm"
    outside.write_bytes(b"x")
    work = tmp_path / "work"
    with pytest.raises(PatchFormatError, match="outside its work directory"):
        unpack._patch_file(_answer(work, rpms={RPM: str(outside)}), work)
    link = work / "software" / "link.rpm"
    link.symlink_to(work / "software" / RPM)
    with pytest.raises(PatchFormatError, match="outside its work directory"):
        unpack._patch_file(_answer(work, rpms={RPM: str(link)}), work)


def test_an_answer_whose_contents_disagree_is_refused(tmp_path):
    with pytest.raises(PatchFormatError, match="RPM list does not match"):
        unpack._patch_file(_answer(tmp_path, rpms={}), tmp_path)
    with pytest.raises(PatchFormatError, match="semantics.tar does not match"):
        unpack._patch_file(_answer(tmp_path, semantics={}), tmp_path)


def test_a_child_that_died_is_explained():
    limits = unpack.ProcessLimits(cpu_seconds=7)
    assert "more than 7 s of CPU" in unpack._death(-signal.SIGXCPU, limits)
    assert "more than 7 s of CPU" in unpack._death(-signal.SIGKILL, limits)
    assert "larger than allowed" in unpack._death(-signal.SIGXFSZ, limits)
    assert "exit status 1" in unpack._death(1, limits)


@pytest.mark.parametrize("raised, kind", [
    (OSError(errno.ENOSPC, "No space left on device"), "nospace"),
    (PatchFormatError(reason="Patch has not been signed"), "format"),
    (MemoryError(), "format"),
    (KeyError("surprise"), "internal")])
def test_the_child_answers_each_failure_with_its_kind(tmp_path, monkeypatch, raised, kind):
    def read(*args):
        if isinstance(raised, OSError):   # archive.read's own translation
            raise errors.InsufficientStorage(path=tmp_path)
        raise raised
    monkeypatch.setattr(archive, "read", read)
    answer = unpack._serve({"path": str(tmp_path / "x.patch"), "workdir": str(tmp_path),
                            "trusted_dir": str(tmp_path)}, archive.Limits(),
                           unpack.ProcessLimits())
    assert answer["ok"] is False and answer["kind"] == kind


def test_a_nospace_answer_is_insufficient_storage(tmp_path):
    child = unpack._Child(archive.Limits(), unpack.ProcessLimits())
    with pytest.raises(errors.InsufficientStorage, match="no space left on device"):
        child._answer(tmp_path / "x.patch", tmp_path, {"ok": False, "kind": "nospace"})
    with pytest.raises(PatchFormatError, match="has not been signed"):
        child._answer(tmp_path / "x.patch", tmp_path,
                      {"ok": False, "kind": "format", "error": "Patch has not been signed"})


@pytest.mark.parametrize("where", ["_extract", "_read"])
def test_archive_read_reports_a_full_disk_as_such(tmp_path, monkeypatch, where):
    """It was "patch archive is corrupt or truncated: [Errno 28] ..." before."""
    rpm = tmp_path / RPM
    rpm.write_bytes(b"\xed\xab\xee\xdb" + b"x" * 4000)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    meta = md.PatchMetadata(id="LAB_0001", sw_version="1.0", contents=[RPM])
    patch = archive.write(tmp_path, meta, [rpm], {}, key)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(archive, where, full)
    with pytest.raises(errors.InsufficientStorage,
                       match=f"no space left on device: free space in {tmp_path / 'w'}"):
        archive.read(patch, [("formal", key.public_key())], tmp_path / "w")
