"""A repo's metadata read directly over HTTP (or file://): packages and comps groups.

dnf prints groups only in a human layout (``dnf group info``), so the group is
read from the repo itself: ``repodata/repomd.xml`` names the ``group`` (or
``group_gz``) file that ``createrepo_c -g comps.xml`` published. The package list
(``primary``) is read the same way for reports: bench/host_patching.py measures
~6 ms against ~400 ms for ``dnf repoquery``, which matters for a report sent on
every heartbeat. Installs still take dnf's own view (``RpmDnf.available``).
Compressions the stdlib lacks (zstd) raise ``MetadataUnsupported`` so the caller can
fall back to dnf.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

from ramdisk_agent.errors import MetadataUnsupported, PatchEngineError
from ramdisk_agent.wire.packages import Package

REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"
#: file suffix -> decompressor, for the metadata compressions the stdlib reads.
DECOMPRESS = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress,
              ".xml": lambda data: data}


TIMEOUT = 30


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise PatchEngineError(f"cannot read {url}: {exc}") from None


def _locations(base: str) -> dict[str, str]:
    """Metadata type -> href, from the repo's repomd.xml."""
    try:
        root = ET.fromstring(_fetch(f"{base}/repodata/repomd.xml"))
    except ET.ParseError as exc:
        raise PatchEngineError(f"{base}/repodata/repomd.xml is not XML: {exc}") from None
    hrefs: dict[str, str] = {}
    for data in root.iter(f"{REPO_NS}data"):
        location = data.find(f"{REPO_NS}location")
        if location is not None:
            hrefs[data.get("type", "")] = location.get("href", "")
    return hrefs


def _read_xml(base: str, href: str) -> ET.Element:
    decompress = next((fn for suffix, fn in DECOMPRESS.items() if href.endswith(suffix)),
                      None)
    if decompress is None:
        raise MetadataUnsupported(f"{base}/{href}: compression not readable without dnf")
    try:
        return ET.fromstring(decompress(_fetch(f"{base}/{href}")))
    except (ET.ParseError, OSError, EOFError, lzma.LZMAError) as exc:
        raise PatchEngineError(f"{base}/{href} is not valid metadata: {exc}") from None


def packages(repo_url: str) -> list[Package]:
    """Every package the repo's primary metadata lists."""
    base = repo_url.rstrip("/")
    href = _locations(base).get("primary")
    if href is None:
        raise PatchEngineError(f"{base}/repodata/repomd.xml lists no primary metadata")
    found = []
    for pkg in _read_xml(base, href).iter(f"{COMMON_NS}package"):
        version = pkg.find(f"{COMMON_NS}version")
        if version is None:
            raise PatchEngineError(f"{base}/{href}: a package without a version element")
        found.append(Package(pkg.findtext(f"{COMMON_NS}name", ""), version.get("epoch") or "0",
                             version.get("ver", ""), version.get("rel", ""),
                             pkg.findtext(f"{COMMON_NS}arch", "")))
    return found


def group_packages(repo_url: str, group_id: str) -> list[str]:
    """Package names of ``group_id`` in the repo at ``repo_url`` ([] if it has no comps)."""
    base = repo_url.rstrip("/")
    hrefs = _locations(base)
    href = hrefs.get("group") or hrefs.get("group_gz")
    if href is None:
        return []
    for group in _read_xml(base, href).iter("group"):
        if (group.findtext("id") or "").strip() == group_id:
            return [req.text.strip() for req in group.iter("packagereq") if req.text]
    return []
