"""The ``.patch`` container (specs/starlingx-patching.md §1.1): write and read safely.

A patch is a gzip tar of ``metadata.tar``, ``software.tar``, optional
``semantics.tar``, ``signature`` and ``signature.v2``. Reading treats the file
as hostile until both signatures check out:

* only those five names, each once, each a regular file (no links, devices,
  directories, ``..`` or absolute names) — anything else is refused, not skipped;
* the raw tar headers are checked before tarfile parses them (tarscan.py: no
  oversized pax or long-name header, which tarfile parses in quadratic time);
* declared sizes are capped (``limits``) before a byte is decompressed, so a gzip
  bomb fails fast, and every member is extracted to files we name ourselves;
* the signatures are checked before metadata.xml is parsed;
* the inner tars follow the same rules, and software.tar must hold exactly the
  RPMs metadata.xml lists.

``read`` runs in a limited child process on the server (unpack.py); a full disk
is InsufficientStorage, never "corrupt".
"""
from __future__ import annotations

import dataclasses
import io
import tarfile
import time
from pathlib import Path
from typing import IO

from conductor import errors
from conductor.patching import metadata as md
from conductor.patching import signing, tarscan
from conductor.patching.metadata import PatchFormatError

SIGNED_MEMBERS = ("metadata.tar", "software.tar", "semantics.tar")
MEMBERS = SIGNED_MEMBERS + ("signature", "signature.v2")
REQUIRED = ("metadata.tar", "software.tar", "signature")
SEMANTIC_ACTIONS = ("pre-apply", "pre-remove")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Upper bounds a patch file must stay within."""

    total_bytes: int = 8 << 30      #: all members together, uncompressed
    small_member: int = 16 << 20    #: metadata.tar, semantics.tar, signatures
    rpms: int = 2000                #: RPM files in software.tar
    #: Uncompressed : compressed. RPMs are compressed already, so a real patch is
    #: close to 1:1; a gzip bomb is thousands to one. Checked above 16 MiB.
    max_ratio: int = 100


@dataclasses.dataclass
class PatchFile:
    """A verified patch, unpacked under ``workdir``."""

    metadata: md.PatchMetadata
    rpms: dict[str, Path]           #: file name -> extracted file
    semantics: dict[str, bytes]     #: action -> script
    signer: str                     #: the trusted key that verified signature.v2
    workdir: Path


def _check_member(member: tarfile.TarInfo, allowed, what: str) -> None:
    name = member.name
    if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
        raise PatchFormatError(reason=f"{what}: member {name!r} escapes the archive")
    if not member.isfile():
        raise PatchFormatError(reason=f"{what}: member {name!r} is not a regular file "
                               "(links and devices are refused)")
    if allowed is not None and name not in allowed:
        raise PatchFormatError(reason=f"{what}: unexpected member {name!r}")


def _member_file(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    source = tar.extractfile(member)
    if source is None:  # _check_member lets only regular files through
        raise PatchFormatError(reason=f"{member.name!r} is not a regular file")
    return source


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    source = _member_file(tar, member)
    with open(dest, "wb") as out:
        remaining = member.size
        while remaining:
            chunk = source.read(min(remaining, 1 << 20))
            if not chunk:
                raise PatchFormatError(reason=f"member {member.name!r} is truncated")
            out.write(chunk)
            remaining -= len(chunk)


def _open_tar(source: Path | bytes, what: str, max_headers: int,
              max_data: int = 0) -> tarfile.TarFile:
    """tarfile over ``source`` once tarscan has passed its raw headers."""
    if isinstance(source, bytes):
        tarscan.scan_bytes(source, what, max_headers)
    elif what == "patch":
        tarscan.scan_gzip(source, what, max_headers, max_data)
    else:
        tarscan.scan_file(source, what, max_headers, max_data)
    try:
        if isinstance(source, bytes):
            return tarfile.open(fileobj=io.BytesIO(source), mode="r:")
        return tarfile.open(source, mode="r:gz" if what == "patch" else "r:")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PatchFormatError(reason=f"{what} is not a valid archive: {exc}") from None


def _outer(path: Path, outer_dir: Path, limits: Limits) -> dict[str, Path]:
    found: dict[str, Path] = {}
    total = 0
    budget = max(16 << 20, path.stat().st_size * limits.max_ratio)
    # Each member may carry a pax and a long-name header; a patch has five members.
    with _open_tar(path, "patch", 3 * len(MEMBERS) + 2,
                   min(budget, limits.total_bytes)) as tar:
        try:
            for member in tar:
                _check_member(member, MEMBERS, "patch")
                if member.name in found:
                    raise PatchFormatError(reason=f"patch: member {member.name!r} twice")
                total += member.size
                cap = limits.total_bytes if member.name == "software.tar" else \
                    limits.small_member
                if member.size > cap or total > limits.total_bytes:
                    raise PatchFormatError(reason=f"patch: member {member.name!r} is "
                                           f"{member.size} bytes, larger than allowed")
                if total > budget:
                    raise PatchFormatError(reason="patch: members expand to more than "
                                           f"{limits.max_ratio}x the file size (a "
                                           "compression bomb?)")
                found[member.name] = outer_dir / member.name
                _extract(tar, member, found[member.name])
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            if errors.is_disk_full(exc):
                raise errors.InsufficientStorage(path=outer_dir.parent) from None
            raise PatchFormatError(reason=f"patch archive is corrupt or truncated: "
                                   f"{exc}") from None
    if "signature.v2" not in found:
        raise PatchFormatError(reason="Patch has not been signed")
    missing = [name for name in REQUIRED if name not in found]
    if missing:
        raise PatchFormatError(reason=f"patch: missing member {missing[0]!r}")
    return found


def read(path: Path, trusted: list, workdir: Path, limits: Limits = Limits()) -> PatchFile:
    """Verify and unpack ``path`` into ``workdir`` (which must be empty or absent).

    Parses hostile input in this process: the server calls it through unpack.py.
    """
    try:
        return _read(Path(path), trusted, Path(workdir), limits)
    except OSError as exc:
        if errors.is_disk_full(exc):
            raise errors.InsufficientStorage(path=workdir) from None
        raise


def _read(path: Path, trusted: list, workdir: Path, limits: Limits) -> PatchFile:
    workdir.mkdir(parents=True, exist_ok=True)
    outer_dir = workdir / "outer"
    outer_dir.mkdir()
    members = _outer(path, outer_dir, limits)
    signed = [members[name] for name in SIGNED_MEMBERS if name in members]
    md5s, digest = signing.member_digests(signed)
    signing.v1_verify(members["signature"].read_bytes(), md5s)
    signer = signing.v2_verify(members["signature.v2"].read_bytes(), digest, trusted)
    meta = _metadata(members["metadata.tar"].read_bytes())
    rpms = _software(members["software.tar"], workdir / "software", meta, limits)
    semantics = _semantics(members.get("semantics.tar"), meta)
    return PatchFile(meta, rpms, semantics, signer, workdir)


def _metadata(data: bytes) -> md.PatchMetadata:
    with _open_tar(data, "metadata.tar", 3) as tar:
        members = list(tar)
        if len(members) != 1:
            raise PatchFormatError(reason="metadata.tar must hold exactly metadata.xml")
        _check_member(members[0], ("metadata.xml",), "metadata.tar")
        return md.parse(_member_file(tar, members[0]).read())


def _software(path: Path, dest: Path, meta: md.PatchMetadata, limits: Limits) -> dict:
    dest.mkdir()
    expected = {rpm.file_basename for rpm in meta.rpms}
    rpms: dict[str, Path] = {}
    with _open_tar(path, "software.tar", 3 * limits.rpms + 2, limits.total_bytes) as tar:
        for member in tar:
            _check_member(member, None, "software.tar")
            name = member.name
            if "/" in name or not name.endswith(".rpm") or name in rpms:
                raise PatchFormatError(reason=f"software.tar: unexpected member {name!r}")
            if name not in expected:
                raise PatchFormatError(reason=f"software.tar holds {name}, which "
                                       "metadata.xml does not list")
            if len(rpms) >= limits.rpms:
                raise PatchFormatError(reason="software.tar holds too many RPMs")
            rpms[name] = dest / name
            _extract(tar, member, rpms[name])
    missing = sorted(expected - set(rpms))
    if missing:
        raise PatchFormatError(reason=f"software.tar lacks {missing[0]}, listed in "
                               "metadata.xml")
    return rpms


def _semantics(path: Path | None, meta: md.PatchMetadata) -> dict[str, bytes]:
    scripts: dict[str, bytes] = {}
    if path is not None:
        allowed = {f"{action}/{meta.id}" for action in SEMANTIC_ACTIONS}
        with _open_tar(path.read_bytes(), "semantics.tar", 12) as tar:
            for member in tar:
                if member.isdir() and member.name in SEMANTIC_ACTIONS:
                    continue
                _check_member(member, allowed, "semantics.tar")
                scripts[member.name.split("/")[0]] = _member_file(tar, member).read()
    if sorted(scripts) != sorted(meta.semantics):
        raise PatchFormatError(reason="semantics.tar does not match the <semantics> "
                               "actions of metadata.xml")
    return scripts


# -- writing ------------------------------------------------------------------------
def _tar_bytes(files: list[tuple[str, bytes | Path, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, content, mode in files:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = int(time.time()), mode
            if isinstance(content, Path):
                info.size = content.stat().st_size
                with open(content, "rb") as stream:
                    tar.addfile(info, stream)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def write(out_dir: Path, meta: md.PatchMetadata, rpm_paths: list[Path],
          semantics: dict[str, bytes], private_key) -> Path:
    """Write ``<ID>.patch`` into ``out_dir``, signed with ``private_key``."""
    out_dir = Path(out_dir)
    meta.semantics = sorted(semantics)
    inner = {"metadata.tar": _tar_bytes([("metadata.xml", md.to_xml(meta), 0o644)]),
             "software.tar": _tar_bytes([(p.name, p, 0o644) for p in rpm_paths])}
    if semantics:
        inner["semantics.tar"] = _tar_bytes(
            [(f"{action}/{meta.id}", script, 0o544) for action, script in semantics.items()])
    staged = out_dir / f".{meta.id}.staging"
    staged.mkdir(parents=True, exist_ok=True)
    try:
        paths = []
        for name in SIGNED_MEMBERS:
            if name in inner:
                (staged / name).write_bytes(inner[name])
                paths.append(staged / name)
        md5s, digest = signing.member_digests(paths)
        (staged / "signature").write_bytes(signing.v1_checksum(md5s).encode())
        (staged / "signature.v2").write_bytes(signing.v2_sign(private_key, digest))
        target = out_dir / f"{meta.id}.patch"
        partial = out_dir / f".{meta.id}.patch.part"
        with tarfile.open(partial, "w:gz", format=tarfile.GNU_FORMAT) as tar:
            for name in MEMBERS:
                if (staged / name).exists():
                    tar.add(staged / name, arcname=name)
        partial.replace(target)
        return target
    finally:
        for child in staged.iterdir():
            child.unlink()
        staged.rmdir()
