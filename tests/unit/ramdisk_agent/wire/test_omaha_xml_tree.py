"""The bounded Omaha parser (ramdisk_agent/wire/omaha_xml.py) hands expat's element
callbacks to its builder directly, not through ElementTree's XMLParser relay: the tree
it builds must be the one defusedxml's ordinary parse builds, element for element
(tags and attribute names with namespaces too), for real peers' documents, ours, and
odd but well-formed ones; and the guards still refuse what they refused."""
from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml.ElementTree as SafeET
import pytest

from ramdisk_agent.wire import omaha, omaha_xml
from ramdisk_agent.wire.errors import (
    OmahaForbiddenXml,
    OmahaInvalid,
    OmahaLimitExceeded,
    OmahaMalformed,
)

FIXTURES = Path(__file__).parent / "omaha_fixtures"


def _shape(element: ET.Element) -> tuple:
    return (element.tag, element.attrib, element.text, element.tail,
            tuple(_shape(child) for child in element))


def _rendered() -> list[bytes]:
    request = omaha.render_request(omaha.Request((omaha.AppRequest(
        omaha.FLATCAR_APPID, "3510.2.0", "stable", "{b}", "0" * 32, delta_okay=True,
        ping=True, updatecheck=True, events=(omaha.Event(3, 0, 268435500, "3374.2.0"),)),),
        omaha.OsInfo("Chateau", "CoreOS", "3510.2.0_x86_64"), "update_engine-0.4.10"))
    digest = hashlib.sha256(b"payload").digest()
    response = omaha.render_response(omaha.Response((omaha.AppResponse(
        omaha.FLATCAR_APPID, ping=True, events=1, updatecheck=omaha.UpdateCheck(
            "ok", ("http://a/updates/v1/payloads/",), omaha.Manifest(
                "3510.2.0", (omaha.Package(digest.hex(), 7, sha256=digest),), digest,
                signature=bytes(64)))),), 120))
    return [request, response]


ODD = [
    # namespaces on elements and attributes, a default one, a prefixed one
    b'<request xmlns="urn:omaha" xmlns:m="urn:m" protocol="3.0" m:flag="1">'
    b'<app appid="x" m:version="1"/><m:os platform="CoreOS"/></request>',
    # text, tails, CDATA, character and predefined entity references
    b'<request protocol="3.0">text<app appid="a&amp;b&#x41;" version="&lt;1&gt;">'
    b"<![CDATA[ <not-a-tag> ]]></app>tail &#233;</request>",
    b'<?xml version="1.0" encoding="utf-8"?>\n<!-- a comment --><request protocol="3.0"/>',
    "<request protocol='3.0'><app appid='\u00e9\u4e2d' version='1'/></request>".encode(),
]


@pytest.mark.parametrize("body", [path.read_bytes() for path in sorted(
    FIXTURES.glob("*.xml"))] + _rendered() + ODD)
def test_the_tree_is_defusedxmls(body):
    ours = omaha_xml._parse(body, omaha_xml.RESPONSE_BOUNDS)
    reference = SafeET.fromstring(body, forbid_dtd=True)
    assert _shape(ours) == _shape(reference)


def test_namespaced_names_are_written_as_elementtree_writes_them():
    root = omaha_xml._parse(ODD[0], omaha_xml.REQUEST_BOUNDS)
    assert root.tag == "{urn:omaha}request"
    assert root.attrib == {"protocol": "3.0", "{urn:m}flag": "1"}
    assert root[0].attrib == {"appid": "x", "{urn:m}version": "1"}
    assert root[1].tag == "{urn:m}os"


@pytest.mark.parametrize("body, error, words", [
    (b'<request protocol="3.0"><app appid="' + b"x" * 257 + b'" version="1"/></request>',
     OmahaInvalid, "attribute 'appid' is 257 characters"),
    (b"<request " + b" ".join(b'a%d="1"' % n for n in range(33)) + b"/>",
     OmahaLimitExceeded, "more than 32 attributes"),
    (b"<request><a><b><c><d/></c></b></a></request>", OmahaLimitExceeded,
     "deeper than 4"),
    (b'<!DOCTYPE r [<!ENTITY e "x">]><request protocol="3.0"/>', OmahaForbiddenXml,
     "refused XML construct"),
    (b'<request protocol="3.0"><app></request>', OmahaMalformed, "not well-formed"),
])
def test_the_bounds_still_refuse(body, error, words):
    with pytest.raises(error, match=words):
        omaha_xml.read(body, "request", omaha_xml.REQUEST_BOUNDS)
