"""Build a signed ``.patch`` from RPM files: what StarlingX's ``patch_build`` does."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from conductor.patching import archive, signing
from conductor.patching import metadata as md
from conductor.patching.metadata import PatchFormatError

#: The four bytes every RPM file starts with (the "lead").
RPM_MAGIC = b"\xed\xab\xee\xdb"


@dataclasses.dataclass
class BuildRequest:
    """patch_build's options, one field each."""

    id: str
    release: str
    rpms: list[Path]
    status: str = "DEV"
    unremovable: bool = False
    reboot_required: str = "Y"
    summary: str = ""
    description: str = ""
    warnings: str = ""
    install_instructions: str = ""
    requires: list[str] = dataclasses.field(default_factory=list)
    personalities: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    pre_apply: Path | None = None
    pre_remove: Path | None = None
    apply_active_release_only: bool = False


def _check_rpm(path: Path) -> None:
    if not path.is_file():
        raise PatchFormatError(reason=f"{path} does not exist")
    with open(path, "rb") as stream:
        if stream.read(4) != RPM_MAGIC:
            raise PatchFormatError(reason=f"{path} is not an RPM file")
    md.RpmFile.parse(path.name)


def build(request: BuildRequest, key_path: Path, out_dir: Path) -> Path:
    """Write ``<id>.patch`` to ``out_dir`` and return its path."""
    if not request.release:
        raise PatchFormatError(reason="--release is required")
    if request.status not in md.STATUSES:
        raise PatchFormatError(reason=f"--status must be one of {', '.join(md.STATUSES)}")
    if request.reboot_required not in ("Y", "N"):
        raise PatchFormatError(reason="--reboot-required must be Y or N")
    names = [path.name for path in request.rpms]
    if len(set(names)) != len(names):
        raise PatchFormatError(reason="the same RPM file name is given twice")
    for path in request.rpms:
        _check_rpm(path)
    meta = md.PatchMetadata(
        id=request.id, sw_version=request.release, summary=request.summary,
        description=request.description, install_instructions=request.install_instructions,
        warnings=request.warnings, status=request.status,
        unremovable="Y" if request.unremovable else "",  # <unremovable/>, as patch_build
        reboot_required=request.reboot_required,
        apply_active_release_only="Y" if request.apply_active_release_only else "",
        personalities={k: sorted(set(v)) for k, v in request.personalities.items() if v},
        contents=sorted(names), requires=sorted(set(request.requires)))
    semantics = {action: Path(script).read_bytes()
                 for action, script in (("pre-apply", request.pre_apply),
                                        ("pre-remove", request.pre_remove)) if script}
    key = signing.load_private(key_path)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return archive.write(Path(out_dir), meta, list(request.rpms), semantics, key)
