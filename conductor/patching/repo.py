"""The RPM side of patching: headers, the base feed, and the update repository.

The one place metalcast runs ``rpm`` and ``createrepo_c``; their failures become
``PatchingError`` here. The update repo of release V is ``repo/rel-V`` with
``Packages/<arch>/*.rpm``, a ``comps.xml`` holding one group ``updates-<node type>``
per personality (the packages patches add to that node type), and repodata
made by ``createrepo_c --update -g comps.xml``. Hosts reach it over HTTP.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from conductor import errors
from conductor.patching import metadata as md
from conductor.patching.store import atomic_write, confined

# The host agent's NEVRA record and rpm --qf format: one definition for both sides.
from ramdisk_agent.wire.packages import QUERY_FORMAT, Package
from ramdisk_agent.wire.rpmver import label_compare

TOOL_TIMEOUT = 300


class PatchingError(errors.MetalcastError):
    """A patching operation failed; the message is what the operator sees."""

    status_code = 500
    message = "%(reason)s"


def _run(argv: list, what: str, writes: Path | None = None) -> str:
    """Run a tool; a failure is PatchingError, a full disk under ``writes``
    InsufficientStorage (createrepo_c says so only in its text)."""
    tool = shutil.which(str(argv[0]))
    if tool is None:
        raise PatchingError(reason=f"{argv[0]} is not installed (Debian package "
                            f"{'rpm' if argv[0] == 'rpm' else 'createrepo-c'})")
    try:
        proc = subprocess.run([tool, *argv[1:]], capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise PatchingError(reason=f"{what} did not finish in {TOOL_TIMEOUT}s") from None
    if proc.returncode != 0:
        if writes is not None and "No space left on device" in proc.stderr:
            raise errors.InsufficientStorage(path=writes)
        raise PatchingError(reason=f"{what} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def headers(paths: list[Path]) -> dict[Path, Package]:
    """NEVRA of each RPM file, read from its header in one ``rpm -qp`` call."""
    if not paths:
        return {}
    out = _run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", QUERY_FORMAT,
                *map(str, paths)], "reading RPM headers")
    lines = [line for line in out.splitlines() if line.count("\t") == 4]
    if len(lines) != len(paths):
        raise PatchingError(reason="rpm could not read every RPM header")
    return {path: Package.parse_line(line) for path, line in zip(paths, lines)}


def base_packages(feed: Path) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(name, arch) -> highest (epoch, version, release) in a release's base feed.

    File names are trusted here (the feed is the operator's own installed load),
    as StarlingX's BasePackageData does; patch RPMs are read from their headers.
    """
    result: dict[tuple[str, str], tuple[str, str, str]] = {}
    for path in feed.rglob("*.rpm"):
        try:
            rpm = md.RpmFile.parse(path.name)
        except md.PatchFormatError:
            continue
        key, evr = (rpm.name, rpm.arch), rpm.evr
        if key not in result or label_compare(evr, result[key]) > 0:
            result[key] = evr
    return result


class UpdateRepo:
    """``repo/rel-<ver>`` of one release: add and remove RPMs, then regenerate."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    def package_path(self, arch: str, filename: str) -> Path:
        return confined(self.dir / "Packages", arch, filename)

    def add(self, arch: str, source: Path) -> Path:
        dest = self.package_path(arch, source.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            try:
                os.link(source, tmp)  # same file system: no copy
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        except OSError:             # a full disk: no partial file stays behind
            tmp.unlink(missing_ok=True)
            raise
        return dest

    def remove(self, arch: str, filename: str) -> None:
        self.package_path(arch, filename).unlink(missing_ok=True)

    def regenerate(self, groups: dict[str, list[str]]) -> None:
        """Write comps.xml with ``updates-<type>`` groups and refresh the repodata."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "Packages").mkdir(exist_ok=True)
        atomic_write(self.dir / "comps.xml", comps_xml(groups))
        argv = ["createrepo_c", "-q", "--update", "-g", "comps.xml", str(self.dir)]
        if not (self.dir / "repodata").exists():
            argv.remove("--update")
        _run(argv, "createrepo_c", writes=self.dir.parent.parent)


def comps_xml(groups: dict[str, list[str]]) -> bytes:
    """comps.xml: for each node type, its packages as mandatory packagereqs."""
    root = ET.Element("comps")
    for personality in md.PERSONALITIES:
        group = ET.SubElement(root, "group")
        ET.SubElement(group, "id").text = f"updates-{personality}"
        ET.SubElement(group, "name").text = f"updates-{personality}"
        ET.SubElement(group, "default").text = "true"
        ET.SubElement(group, "uservisible").text = "true"
        reqs = ET.SubElement(group, "packagelist")
        for package in sorted(set(groups.get(personality, []))):
            ET.SubElement(reqs, "packagereq", type="mandatory").text = package
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root) + b"\n"
