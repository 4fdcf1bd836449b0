"""Reading an untrusted Omaha XML body into an element tree, within fixed bounds.

The Omaha endpoint is public (update clients send no credentials), so what one body
can cost is bounded before and while it is parsed:

- the size (:data:`MAX_BODY`, 64 KiB, Nebraska's ``UpdateMaxRequestSize``) before any
  parsing;
- UTF-8 only (what update_engine sends; a declared other encoding is refused, so a
  UTF-16/UTF-7 trick never reaches the parser);
- defusedxml with DTDs, entity declarations and external references forbidden: the
  billion-laughs expansion and XXE (``file:///etc/passwd``) stop at the declaration;
- while parsing (the tree builder's callbacks, so a hostile body stops early): nesting depth, the
  number of elements and of attributes per element, and each attribute's length.

Every refusal is an :class:`~ramdisk_agent.wire.errors.OmahaError` subclass naming what
is wrong.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

import defusedxml
import defusedxml.ElementTree as SafeET

from ramdisk_agent.wire.errors import (
    OmahaForbiddenXml,
    OmahaInvalid,
    OmahaLimitExceeded,
    OmahaMalformed,
    OmahaTooLarge,
    OmahaUnsupported,
)

PROTOCOL = "3.0"
#: Largest body accepted (the server's request cap; the agent's cap on answers).
MAX_BODY = 64 * 1024
_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_INT = re.compile(r"-?[0-9]{1,10}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
#: A value that :func:`quote` sends as it is: nothing to escape, no control character.
_PLAIN = re.compile(r'[^&<>"\x00-\x1f]*')


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What one document may hold."""

    depth: int
    elements: int
    attributes: int        #: per element
    attribute_length: int  #: characters of one value


#: A request: <request><app><event/></app></request> is depth 3.
REQUEST_BOUNDS = Bounds(depth=4, elements=256, attributes=32, attribute_length=256)
#: A response: response/app/updatecheck/manifest/packages/package is depth 6; URLs
#: (presigned ones included) make the longest values.
RESPONSE_BOUNDS = Bounds(depth=7, elements=256, attributes=32, attribute_length=4096)


def read(body: bytes, root: str, bounds: Bounds) -> ET.Element:
    """The document in ``body`` whose root element must be ``root``."""
    if not isinstance(body, bytes | bytearray):
        raise OmahaMalformed("an Omaha body is bytes")
    if len(body) > MAX_BODY:
        raise OmahaTooLarge(f"body of {len(body)} bytes is over the {MAX_BODY}-byte cap")
    if not body.strip():
        raise OmahaMalformed("empty body")
    try:
        bytes(body).decode("utf-8")
    except UnicodeDecodeError as e:
        raise OmahaMalformed(f"body is not UTF-8 (byte {e.start})") from e
    declared = _DECLARED_ENCODING.match(body)
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise OmahaMalformed(f"declared encoding {declared.group(1).decode('ascii', 'replace')!r}:"
                             " only UTF-8 is accepted")
    element = _parse(bytes(body), bounds)
    if element.tag != root:
        raise OmahaMalformed(f"root element <{element.tag}>, expected <{root}>")
    return element


def _parse(body: bytes, bounds: Bounds) -> ET.Element:
    builder = _BoundedBuilder(bounds)
    parser = SafeET.DefusedXMLParser(target=builder, forbid_dtd=True,
                                     forbid_entities=True, forbid_external=True)
    # defusedxml's guards stay on its expat parser; only the element callbacks go to the
    # builder directly, without ElementTree's pure-Python relay that passes every tag
    # and attribute name through _fixname one call at a time (a third of a request's
    # parse, bench/omaha_wire.py). The tree is the same (tests/unit/ramdisk_agent/wire/
    # test_omaha_xml_tree.py).
    parser.parser.StartElementHandler = builder.start_expat
    parser.parser.EndElementHandler = builder.end
    try:
        parser.feed(body)
        return parser.close()
    except defusedxml.DefusedXmlException as e:
        raise OmahaForbiddenXml(f"refused XML construct: {e}") from e
    except ET.ParseError as e:
        raise OmahaMalformed(f"not well-formed XML: {e}") from e


class _BoundedBuilder(ET.TreeBuilder):
    """A tree builder that refuses, as each element starts, what is over the bounds:
    expat stops at once (the refusal propagates out of ``feed``). A target rather than
    iterparse: half the time per request (bench/omaha_wire.py)."""

    def __init__(self, bounds: Bounds):
        super().__init__()
        self.bounds, self.depth, self.elements = bounds, 0, 0

    def start_expat(self, tag: str, pairs: list[str]) -> ET.Element:
        """expat's start callback (``ordered_attributes``: name, value, name, ...),
        names as ElementTree writes them: ``uri}name`` becomes ``{uri}name`` ("}" is
        never part of an XML name, so it only ever separates a namespace)."""
        if "}" in tag:
            tag = "{" + tag
        names = pairs[::2]
        if "}" in "".join(names):
            names = ["{" + name if "}" in name else name for name in names]
        return self.start(tag, dict(zip(names, pairs[1::2])))

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        self.depth, self.elements = self.depth + 1, self.elements + 1
        if self.depth > self.bounds.depth:
            raise OmahaLimitExceeded(f"elements nested deeper than {self.bounds.depth}")
        if self.elements > self.bounds.elements:
            raise OmahaLimitExceeded(f"more than {self.bounds.elements} elements")
        if len(attrs) > self.bounds.attributes:
            raise OmahaLimitExceeded(f"<{tag}> has more than {self.bounds.attributes} "
                                     "attributes")
        if attrs and max(map(len, attrs.values())) > self.bounds.attribute_length:
            name, value = next((n, v) for n, v in attrs.items()
                               if len(v) > self.bounds.attribute_length)
            raise OmahaInvalid(f"<{tag}> attribute {name!r} is {len(value)} characters "
                               f"long (at most {self.bounds.attribute_length})")
        return super().start(tag, attrs)

    def end(self, tag: str) -> ET.Element:
        self.depth -= 1
        return super().end(tag)


# -- attribute values (both directions) ------------------------------------------------

def require_protocol(root: ET.Element) -> None:
    protocol = root.get("protocol")
    if protocol is None:
        raise OmahaInvalid(f"<{root.tag}> has no protocol attribute")
    if protocol != PROTOCOL:
        raise OmahaUnsupported(f"Omaha protocol {protocol!r}: only {PROTOCOL} is spoken")


def required(element: ET.Element, name: str) -> str:
    value = element.get(name)
    if not value:
        raise OmahaInvalid(f"<{element.tag}> is missing the {name!r} attribute")
    return value


def integer(element: ET.Element, name: str, low: int, high: int) -> int:
    text = element.get(name)
    if text is None:
        raise OmahaInvalid(f"<{element.tag}> is missing the {name!r} attribute")
    if not _INT.fullmatch(text.strip()) or not low <= int(text) <= high:
        raise OmahaInvalid(f"<{element.tag}> {name}={text[:40]!r} is not an integer "
                           f"{low}..{high}")
    return int(text)


def b64_digest(element: ET.Element, name: str, size: int) -> bytes:
    text = required(element, name)
    try:
        digest = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != size:
        raise OmahaInvalid(f"<{element.tag}> {name} is not a base64 {size}-byte digest")
    return digest


def digest(value: bytes, size: int) -> bytes:
    if len(value) != size:
        raise OmahaInvalid(f"a digest of {len(value)} bytes where {size} are expected")
    return value


def boolean(value: bool) -> str:
    return "true" if value else "false"


def quote(value: str) -> str:
    """``value`` as a quoted attribute; control characters cannot be sent in XML 1.0."""
    if _PLAIN.fullmatch(value):     # appids, versions, statuses: one scan, no escape()
        return '"' + value + '"'
    if _CONTROL.search(value):
        raise OmahaInvalid(f"control character in attribute value {value[:40]!r}")
    return '"' + escape(value, {'"': "&quot;", "\n": "&#10;", "\r": "&#13;",
                                "\t": "&#9;"}) + '"'
