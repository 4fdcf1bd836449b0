"""metadata.xml of a StarlingX patch: one typed object, parsed and written once.

Parsing rules are StarlingX's (specs/starlingx-patching.md §1.4): ``id`` is
required, ``sw_version`` defaults to "unknown", ``reboot_required`` is "Y" unless
the text is exactly "N", a patch is unremovable only when ``unremovable`` says "Y"
(its text is kept as written: patch_build writes an empty element, which ``show``
does not print), contents are RPM file names whose name/version/release/arch come
from the file name.

Every value that becomes a file or directory name is one path component: patch
IDs and releases (``sw_version``, and the release of init_release/del_release)
pass ``check_name``, the one validator of such names; RPM file names (and so
their arch, a directory of the update repo) pass RpmFile.parse's RPM_FILE_RE.
"""
from __future__ import annotations

import dataclasses
import re
import xml.dom.minidom
import xml.etree.ElementTree as ET

from conductor import errors

#: The node types a patch can target; ``--all-nodes`` means all of them.
PERSONALITIES = ("controller", "worker", "worker-lowlatency", "storage",
                 "controller-worker", "controller-worker-lowlatency")
STATUSES = ("REL", "DEV", "OBS")
#: ``[epoch:]name-version-release.arch.rpm``, as StarlingX parses file names.
RPM_NAME_RE = re.compile(r"^(?:(\d+):)?(.+)-([^-]+)-([^-]+)\.([^.-]+)\.rpm$")
#: What a patch ID may look like: it becomes a file name and a URL path segment.
PATCH_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
#: A release (sw_version) names directories: packages/<ver>, feed/rel-<ver>, updates/rel-<ver>.
RELEASE_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,63}")
#: The characters of an RPM file name (``~`` and ``^`` occur in versions), epoch apart.
RPM_FILE_RE = re.compile(r"(?:\d{1,10}:)?[A-Za-z0-9_+~^][A-Za-z0-9._+~^-]{0,250}")
#: Every metadata value that becomes a path component, by what it is (fullmatch),
#: and what the rule says in an error message.
NAME_RULES = {
    "patch ID": (PATCH_ID_RE, "up to 128 letters, digits, '.', '_', '+', '-'"),
    "release": (RELEASE_RE, "one directory name: up to 64 letters, digits, '.', '_', '-'"),
}
#: Text elements in the order patch_build writes them.
TEXT_FIELDS = ("id", "sw_version", "summary", "description", "install_instructions",
               "warnings", "status", "unremovable", "reboot_required",
               "apply_active_release_only")


class PatchFormatError(errors.Invalid):
    """A patch file or its metadata is malformed; the message says what."""

    message = "%(reason)s"


def check_name(kind: str, value: str, patch_id: str = "") -> str:
    """``value`` if it is a safe ``kind`` (a key of NAME_RULES): one path component,
    no ``/``, no ``..``, no control characters. Else PatchFormatError, naming the
    patch when ``patch_id`` is given."""
    rule, hint = NAME_RULES[kind]
    if not isinstance(value, str) or rule.fullmatch(value) is None or ".." in value:
        where = f"Patch {patch_id}: " if patch_id else ""
        raise PatchFormatError(reason=f"{where}Invalid {kind}: {value!r} is not a valid "
                               f"{kind} ({hint})")
    return value


@dataclasses.dataclass(frozen=True)
class RpmFile:
    """One RPM file name of ``contents`` and the NEVRA it encodes."""

    filename: str
    name: str
    version: str
    release: str
    arch: str
    epoch: str = ""

    @classmethod
    def parse(cls, filename: str) -> RpmFile:
        match = RPM_NAME_RE.fullmatch(filename)
        if match is None or RPM_FILE_RE.fullmatch(filename) is None or ".." in filename:
            raise PatchFormatError(reason=f"{filename!r} is not an RPM file name "
                                   "([epoch:]name-version-release.arch.rpm)")
        epoch, name, version, release, arch = match.groups()
        return cls(filename, name, version, release, arch, epoch or "")

    @property
    def file_basename(self) -> str:
        """The name on disk: StarlingX lists ``epoch:`` in contents but not in files."""
        return self.filename.split(":", 1)[1] if ":" in self.filename else self.filename

    @property
    def evr(self) -> tuple[str, str, str]:
        return (self.epoch or "0", self.version, self.release)


@dataclasses.dataclass
class PatchMetadata:
    """Everything metadata.xml says about one patch."""

    id: str
    sw_version: str = "unknown"
    summary: str = ""
    description: str = ""
    install_instructions: str = ""
    warnings: str = ""
    status: str = ""
    unremovable: str = ""
    reboot_required: str = "Y"
    apply_active_release_only: str = ""
    personalities: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    contents: list[str] = dataclasses.field(default_factory=list)
    requires: list[str] = dataclasses.field(default_factory=list)
    semantics: list[str] = dataclasses.field(default_factory=list)

    @property
    def rpms(self) -> list[RpmFile]:
        return [RpmFile.parse(name) for name in self.contents]

    def as_query_dict(self) -> dict:
        """The dict ``/query`` and ``/show`` return for this patch (without states)."""
        result = {field: getattr(self, field) for field in TEXT_FIELDS if field != "id"}
        result["requires"] = list(self.requires)
        for personality, packages in self.personalities.items():
            result[f"personality-{personality}"] = list(packages)
        return result


def _text(root: ET.Element, tag: str) -> str | None:
    node = root.find(tag)
    return None if node is None else (node.text or "").strip()


def parse(data: bytes) -> PatchMetadata:
    """Parse metadata.xml; a PatchFormatError names what is wrong."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise PatchFormatError(reason="metadata.xml must not declare a DTD or entities")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise PatchFormatError(reason=f"metadata.xml is not well-formed XML: {exc}") from None
    if root.tag != "patch":
        raise PatchFormatError(reason="metadata.xml: the root element must be <patch>")
    patch_id = _text(root, "id")
    if not patch_id:
        raise PatchFormatError(reason="metadata.xml has no <id>")
    meta = PatchMetadata(id=patch_id)
    for field in TEXT_FIELDS[1:]:
        value = _text(root, field)
        if value is not None:
            setattr(meta, field, value)
    meta.sw_version = meta.sw_version or "unknown"
    # StarlingX: only the exact "N" means in-service (unremovable: only "Y" marks it).
    meta.reboot_required = "N" if _text(root, "reboot_required") == "N" else "Y"
    for node in root.findall("personality"):
        kind = node.get("type", "")
        meta.personalities[kind] = [(p.text or "").strip() for p in node.findall("package")]
    meta.contents = [(n.text or "").strip() for n in root.findall("contents/rpm")]
    meta.requires = [(n.text or "").strip() for n in root.findall("requires/req_patch_id")]
    meta.semantics = [(n.text or "").strip() for n in root.findall("semantics/action")]
    validate(meta)
    return meta


def validate(meta: PatchMetadata) -> None:
    """Refuse metadata that would be unsafe or meaningless to store."""
    check_name("patch ID", meta.id)
    for value in meta.requires:
        check_name("patch ID", value, meta.id)
    check_name("release", meta.sw_version, meta.id)
    unknown = set(meta.personalities) - set(PERSONALITIES)
    if unknown:
        raise PatchFormatError(reason=f"unknown personality {sorted(unknown)[0]!r}; "
                               f"expected one of {', '.join(PERSONALITIES)}")
    bad = set(meta.semantics) - {"pre-apply", "pre-remove"}
    if bad:
        raise PatchFormatError(reason=f"unknown semantic action {sorted(bad)[0]!r}")
    for rpm in meta.rpms:  # raises on a bad file name
        if rpm.file_basename.startswith("."):
            raise PatchFormatError(reason=f"{rpm.filename!r} is not an RPM file name")


def to_xml(meta: PatchMetadata) -> bytes:
    """metadata.xml as patch_build writes it (minidom, 2-space indent)."""
    validate(meta)
    root = ET.Element("patch")
    for field in TEXT_FIELDS:
        ET.SubElement(root, field).text = getattr(meta, field)
    for kind, packages in meta.personalities.items():
        node = ET.SubElement(root, "personality", type=kind)
        for package in packages:
            ET.SubElement(node, "package").text = package
    for tag, child, values in (("contents", "rpm", meta.contents),
                               ("requires", "req_patch_id", meta.requires),
                               ("semantics", "action", meta.semantics)):
        node = ET.SubElement(root, tag)
        for value in values:
            ET.SubElement(node, child).text = value
    pretty = xml.dom.minidom.parseString(ET.tostring(root)).toprettyxml(indent="  ")
    return pretty.encode()
