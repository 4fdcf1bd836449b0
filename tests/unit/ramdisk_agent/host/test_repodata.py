"""Reading repo metadata directly (file:// URLs, recorded XML): compressions and errors."""
from __future__ import annotations

import bz2
import gzip
import lzma

import pytest

from ramdisk_agent.errors import MetadataUnsupported, PatchEngineError
from ramdisk_agent.host import repodata
from ramdisk_agent.wire.packages import Package

PRIMARY = b"""<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" packages="2">
<package type="rpm"><name>pkga</name><arch>noarch</arch>
<version epoch="0" ver="1.1" rel="1"/></package>
<package type="rpm"><name>kern</name><arch>x86_64</arch>
<version epoch="2" ver="5.10" rel="3.el9"/></package>
</metadata>"""
COMPS = b"""<comps><group><id>updates-worker</id><packagelist>
<packagereq type="mandatory">pkgnew</packagereq></packagelist></group></comps>"""
REPOMD = """<repomd xmlns="http://linux.duke.edu/metadata/repo">
<data type="primary"><location href="repodata/p{suffix}"/></data>
<data type="group_gz"><location href="repodata/c.xml.gz"/></data></repomd>"""


def _repo(tmp_path, suffix: str, body: bytes) -> str:
    (tmp_path / "repodata").mkdir()
    (tmp_path / "repodata/repomd.xml").write_text(REPOMD.format(suffix=suffix))
    (tmp_path / f"repodata/p{suffix}").write_bytes(body)
    (tmp_path / "repodata/c.xml.gz").write_bytes(gzip.compress(COMPS))
    return tmp_path.as_uri()


@pytest.mark.parametrize("suffix,compress", [(".xml.gz", gzip.compress),
                                             (".xml.bz2", bz2.compress),
                                             (".xml.xz", lzma.compress),
                                             (".xml", lambda data: data)])
def test_primary_in_every_stdlib_compression(tmp_path, suffix, compress):
    url = _repo(tmp_path, suffix, compress(PRIMARY))
    assert repodata.packages(url) == [Package("pkga", "0", "1.1", "1", "noarch"),
                                      Package("kern", "2", "5.10", "3.el9", "x86_64")]
    assert repodata.group_packages(url, "updates-worker") == ["pkgnew"]
    assert repodata.group_packages(url, "updates-controller") == []


def test_zstd_is_left_to_dnf(tmp_path):
    url = _repo(tmp_path, ".xml.zst", b"\x28\xb5\x2f\xfd")
    with pytest.raises(MetadataUnsupported):
        repodata.packages(url)


def test_broken_metadata_is_a_clear_error(tmp_path):
    url = _repo(tmp_path, ".xml.gz", b"not gzip")
    with pytest.raises(PatchEngineError, match="p.xml.gz is not valid metadata"):
        repodata.packages(url)
    with pytest.raises(PatchEngineError, match="cannot read .*/nowhere/repodata/repomd.xml"):
        repodata.packages((tmp_path / "nowhere").as_uri())
