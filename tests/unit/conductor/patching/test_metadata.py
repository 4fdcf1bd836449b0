"""metadata.xml parsing rules (specs/starlingx-patching.md §1.4) and round trips."""
from __future__ import annotations

import pytest

from conductor.patching import metadata as md
from conductor.patching import signing


def _xml(body: str) -> bytes:
    return f"<patch>{body}</patch>".encode()


def test_minimal_patch_defaults():
    meta = md.parse(_xml("<id>P1</id>"))
    assert meta.sw_version == "unknown"
    assert meta.reboot_required == "Y"       # absent means reboot required
    assert meta.unremovable == ""             # absent: removable, and show prints nothing
    assert meta.contents == [] and meta.requires == []


@pytest.mark.parametrize("text,expected", [("N", "N"), ("Y", "Y"), ("", "Y"), ("n", "Y"),
                                           ("No", "Y"), (" N ", "N")])
def test_reboot_required_is_yes_unless_exactly_n(text, expected):
    meta = md.parse(_xml(f"<id>P1</id><reboot_required>{text}</reboot_required>"))
    assert meta.reboot_required == expected


def test_full_round_trip():
    meta = md.PatchMetadata(
        id="TEST_0002", sw_version="1.0", summary="s", description="line1\nline2",
        install_instructions="i", warnings="w", status="REL", unremovable="Y",
        reboot_required="N", personalities={"controller": ["a"], "worker": ["a", "b"]},
        contents=["a-1.1-1.noarch.rpm", "1:b-2.0-3.x86_64.rpm"], requires=["TEST_0001"],
        semantics=["pre-apply"])
    again = md.parse(md.to_xml(meta))
    assert again == meta
    query = again.as_query_dict()
    assert query["personality-worker"] == ["a", "b"] and query["requires"] == ["TEST_0001"]
    assert b'  <id>TEST_0002</id>' in md.to_xml(meta)  # minidom, 2-space indent


@pytest.mark.parametrize("element,text", [("<unremovable/>", ""),
                                          ("<unremovable>N</unremovable>", "N"),
                                          ("<unremovable>Y</unremovable>", "Y")])
def test_unremovable_text_is_kept_as_written(element, text):
    """StarlingX's show prints the text unless it is empty, and only "Y" means it."""
    meta = md.parse(_xml(f"<id>P1</id>{element}"))
    assert meta.unremovable == text and meta.as_query_dict()["unremovable"] == text


def test_a_removable_patch_is_written_with_an_empty_unremovable_element():
    """As StarlingX's patch_build writes it (its PatchMetadata.unremovable is None)."""
    xml = md.to_xml(md.PatchMetadata(id="P1", sw_version="1.0")).decode()
    assert "  <unremovable/>\n" in xml
    assert "<unremovable>Y</unremovable>" in md.to_xml(
        md.PatchMetadata(id="P1", sw_version="1.0", unremovable="Y")).decode()


def test_rpm_file_names_are_parsed_from_the_name():
    rpm = md.RpmFile.parse("1:my-pkg-name-2.0.1-3.el8.x86_64.rpm")
    assert (rpm.epoch, rpm.name, rpm.version, rpm.release, rpm.arch) == \
        ("1", "my-pkg-name", "2.0.1", "3.el8", "x86_64")
    assert rpm.file_basename == "my-pkg-name-2.0.1-3.el8.x86_64.rpm"


@pytest.mark.parametrize("body,match", [
    ("", "no <id>"),
    ("<id>../../etc</id>", "not a valid patch ID"),
    ("<id>P1</id><requires><req_patch_id>a/b</req_patch_id></requires>", "not a valid"),
    ("<id>P1</id><contents><rpm>../x-1-1.noarch.rpm</rpm></contents>", "not an RPM"),
    ("<id>P1</id><contents><rpm>notes.txt</rpm></contents>", "not an RPM"),
    ("<id>P1</id><personality type='router'><package>x</package></personality>",
     "unknown personality"),
    ("<id>P1</id><semantics><action>post-apply</action></semantics>", "semantic action"),
])
def test_bad_metadata_is_refused(body, match):
    with pytest.raises(md.PatchFormatError, match=match):
        md.parse(_xml(body))


def test_not_xml_and_entities_are_refused():
    with pytest.raises(md.PatchFormatError, match="well-formed"):
        md.parse(b"<patch><id>x</patch>")
    with pytest.raises(md.PatchFormatError, match="DTD"):
        md.parse(b'<!DOCTYPE p [<!ENTITY e "x">]><patch><id>&e;</id></patch>')
    with pytest.raises(md.PatchFormatError, match="root element"):
        md.parse(b"<other><id>x</id></other>")


def test_v1_checksum_is_all_ones_xor_md5s():
    md5s = ["0" * 31 + "1", "f" * 32]
    value = signing.v1_checksum(md5s)
    assert value == "%x" % (((1 << 128) - 1) ^ 1 ^ ((1 << 128) - 1))
    signing.v1_verify(value.encode(), md5s)
    with pytest.raises(md.PatchFormatError, match="failed verification"):
        signing.v1_verify(value.encode(), ["0" * 32])


#: sw_version values a signed patch used to write its RPMs outside the data dir.
TRAVERSING_RELEASES = ["1.0/../../x", "1.0/../../../../../tmp/escaped", "..", "../x",
                       "/etc", "a/b", ".", "", " 1.0", "1.0\n", "1.0\x00", "-1.0",
                       "x" * 65]


@pytest.mark.parametrize("release", TRAVERSING_RELEASES)
def test_a_sw_version_that_is_not_one_directory_name_is_refused(release):
    meta = md.PatchMetadata(id="EVIL_0001", sw_version=release)
    with pytest.raises(md.PatchFormatError, match="Patch EVIL_0001: Invalid release"):
        md.validate(meta)
    with pytest.raises(md.PatchFormatError, match="Invalid release"):
        md.check_name("release", release)


def test_parse_refuses_a_traversing_sw_version():
    with pytest.raises(md.PatchFormatError, match="Invalid release: '1.0/../../x'"):
        md.parse(_xml("<id>EVIL_0001</id><sw_version>1.0/../../x</sw_version>"))


@pytest.mark.parametrize("release", ["1.0", "19.09", "22.12", "unknown", "2.0_rc-1",
                                     "a" * 64])
def test_ordinary_releases_pass(release):
    assert md.check_name("release", release) == release
    md.validate(md.PatchMetadata(id="P1", sw_version=release))


@pytest.mark.parametrize("filename", [
    "a/b-1-1.noarch.rpm", "x-1-1.no/arch.rpm", "x-1-1.noarch\n.rpm", "x-1..2-1.noarch.rpm",
    "x-1-1.noarch.rpm\n", "x\x00-1-1.noarch.rpm", ".x-1-1.noarch.rpm",
    "x" * 300 + "-1-1.noarch.rpm"])
def test_rpm_file_names_that_are_not_one_safe_file_name_are_refused(filename):
    with pytest.raises(md.PatchFormatError, match="not an RPM file name"):
        md.RpmFile.parse(filename)


@pytest.mark.parametrize("patch_id", ["a..b", "P1\n", "-P1", "P/1", "x" * 129])
def test_patch_ids_are_one_safe_file_name(patch_id):
    with pytest.raises(md.PatchFormatError, match="not a valid patch ID"):
        md.validate(md.PatchMetadata(id=patch_id))
