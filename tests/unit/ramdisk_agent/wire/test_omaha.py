"""The Omaha v3 wire format (ramdisk_agent/wire/omaha.py) against real peers' bytes.

The fixtures are verbatim documents from flatcar/go-omaha's and flatcar/nebraska's
tests (omaha_fixtures/SOURCES.md). A rendered response is read back the way
update_engine's ``OmahaRequestAction::ParseResponse`` reads it (its XPaths, with the
stdlib parser: our own output is trusted here) so the fields it needs are where it
looks for them.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ramdisk_agent.wire import omaha, omaha_xml
from ramdisk_agent.wire.errors import OmahaInvalid, OmahaMalformed
from ramdisk_agent.wire.omaha import (
    AppRequest,
    AppResponse,
    Event,
    Manifest,
    OsInfo,
    Package,
    Request,
    Response,
    UpdateCheck,
)

FIXTURES = Path(__file__).parent / "omaha_fixtures"
PAYLOAD = b"a payload" * 1000
SHA1, SHA256 = hashlib.sha1(PAYLOAD).digest(), hashlib.sha256(PAYLOAD).digest()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_go_omahas_update_engine_request():
    request = omaha.parse_request(fixture("go_omaha_request.xml"))
    assert request.os == OsInfo("Indy", "Chrome OS", "ForcedUpdate_x86_64", "")
    assert (request.installsource, request.ismachine) == ("ondemandupdate", True)
    (app,) = request.apps
    assert app.appid == "{87efface-864d-49a5-9bb3-4b050a7c227a}"
    assert app.bootid == "{7D52A1CC-7066-40F0-91C7-7CB6A871BFDE}"
    assert (app.machinealias, app.machineid) == ("mymachine",
                                                 "{8BDE4C4D-9083-4D61-B41C-3253212C0C37}")
    assert (app.oem, app.version, app.track) == ("ec3000", "ForcedUpdate", "dev-channel")
    assert (app.ping, app.updatecheck, app.delta_okay) == (True, True, False)
    assert app.events == (Event(3, 2, None, ""),)      # update complete, success-reboot


def test_nebraskas_update_engine_request():
    request = omaha.parse_request(fixture("nebraska_update_engine_request.xml"))
    assert (request.version, request.installsource) == ("update_engine-0.4.10", "scheduler")
    assert request.os == OsInfo("Chateau", "CoreOS", "2512.2.0_x86_64", "")
    (app,) = request.apps
    assert (app.appid, app.version, app.track) == (
        "e96281a6-d1af-4bde-9a0a-97b76e56dc57", "1.2.3", "stable")
    assert (app.oem, app.oemversion, app.alephversion, app.board) == (
        "ami", "0.1.1-r1", "1688.5.3", "amd64-usr")
    assert (app.machineid, app.bootid) == ("INSERTINSTANCEIDHERE",
                                           "{965fb4c5-ad3e-4eb7-a4c2-ca0c0e31ec84}")
    assert app.events == (Event(3, 1),) and app.ping and app.updatecheck


def test_the_padded_64_kib_request_nebraska_accepts_is_accepted():
    body = fixture("nebraska_update_engine_request.xml").replace(b"</request>", b"")
    padding = omaha.omaha_xml.MAX_BODY - len(body) - len(b"<!----></request>\n")
    padded = body + b"<!--" + b"x" * padding + b"--></request>\n"
    assert len(padded) == omaha.omaha_xml.MAX_BODY
    assert omaha.parse_request(padded).apps[0].version == "1.2.3"


def host_request(**app_values) -> Request:
    app = AppRequest(**{"appid": omaha.FLATCAR_APPID, "version": "3510.2.0",
                        "track": "stable", "bootid": "{b0}", "machineid": "0123abcd",
                        "machinealias": "rack 4 / node 7", "oem": "metalcast",
                        "oemversion": "1", "alephversion": "3374.2.0",
                        "board": "amd64-usr", "lang": "en-US", "ping": True,
                        "updatecheck": True,
                        "events": (Event(3, 2, None, "3374.2.0"),), **app_values})
    return Request((app,), OsInfo("Chateau", "CoreOS", "3510.2.0_x86_64"),
                   "update_engine-0.4.10", "update_engine-0.4.10", "scheduler")


def test_a_rendered_request_has_update_engines_layout_and_reads_back():
    request = host_request()
    body = omaha.render_request(request)
    lines = body.decode().splitlines()
    assert lines[:3] == [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<request protocol="3.0" version="update_engine-0.4.10" '
        'updaterversion="update_engine-0.4.10" installsource="scheduler" ismachine="1">',
        '    <os version="Chateau" platform="CoreOS" sp="3510.2.0_x86_64"></os>']
    app_line = next(line for line in lines if line.lstrip().startswith("<app "))
    assert re.findall(r"(\w+)=", app_line) == [   # GetAppXml's order
        "appid", "version", "track", "bootid", "oem", "oemversion", "alephversion",
        "machineid", "machinealias", "lang", "board", "hardware_class", "delta_okay"]
    assert '        <event eventtype="3" eventresult="2" previousversion="3374.2.0">' \
        '</event>' in lines
    assert omaha.parse_request(body) == request


def test_values_are_escaped_and_control_characters_refused():
    request = host_request(machinealias='a "quoted" <b> & \'c\'\nd')
    assert omaha.parse_request(omaha.render_request(request)) == request
    with pytest.raises(OmahaInvalid, match="control character"):
        omaha.render_request(host_request(machinealias="bell\x07"))


def test_each_character_to_escape_round_trips_and_plain_values_go_as_they_are():
    for char in '&<>"\'\t\n\r':
        request = host_request(machinealias=f"x{char}y")
        assert omaha.parse_request(omaha.render_request(request)) == request
    assert omaha_xml.quote("2.0.0-rc.1+b7 é") == '"2.0.0-rc.1+b7 é"'
    assert omaha_xml.quote("a&b") == '"a&amp;b"'
    for code in [*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]:
        with pytest.raises(OmahaInvalid, match="control character"):
            omaha_xml.quote(f"x{chr(code)}")


def test_a_rollback_report_and_flagged_codes_read_plainly():
    request = host_request(updatecheck=True, events=(Event(3, 0, 44),))
    (event,) = omaha.parse_request(omaha.render_request(request)).apps[0].events
    assert event.is_rollback and event.error.text == "44 RollbackError"
    body = omaha.render_request(host_request(events=(Event(3, 0, 268435490),)))
    (event,) = omaha.parse_request(body).apps[0].events
    assert not event.is_rollback
    assert event.error.text == "34 OmahaResponseInvalid, with test Omaha URL flag"


def test_several_apps_in_one_request():
    request = Request(tuple(AppRequest(f"{{app-{i}}}", f"1.{i}", ping=True)
                            for i in range(3)))
    assert [app.appid for app in omaha.parse_request(omaha.render_request(request)).apps] \
        == ["{app-0}", "{app-1}", "{app-2}"]


def test_go_omahas_response_reads_as_update_engine_reads_it():
    response = omaha.parse_response(fixture("go_omaha_response.xml"))
    assert response.elapsed_seconds == 49008
    (app,) = response.apps
    assert (app.appid, app.status, app.ping) == (
        "{87efface-864d-49a5-9bb3-4b050a7c227a}", "ok", True)
    check = app.updatecheck
    assert check.status == "ok" and check.urls == ("http://kam:8080/static/",)
    assert check.payload_urls == ("http://kam:8080/static/update.gz",)
    manifest = check.manifest
    assert manifest.version == "9999.0.0"
    assert manifest.packages == (Package("update.gz", 67546213,
                                         base64.b64decode("+LXvjiaPkeYDLHoNKlf9qbJwvnk=")),)
    assert manifest.sha256 == base64.b64decode("0VAlQW3RE99SGtSB5R4m08antAHO8XDoBMKDyxQT/Mg=")
    assert (manifest.is_delta, manifest.disable_payload_backoff) == (True, False)


def update(**manifest_values) -> Response:
    manifest = Manifest("3510.2.1", (Package("flatcar_production_update.gz", len(PAYLOAD),
                                             SHA1, SHA256),), SHA256,
                        max_failure_count_per_url=10, **manifest_values)
    return Response((AppResponse(omaha.FLATCAR_APPID, ping=True, events=1,
                                 updatecheck=UpdateCheck(
                                     "ok", ("http://appliance:6385/updates/v1/payloads/",),
                                     manifest)),), elapsed_seconds=3600)


def test_a_rendered_update_has_what_update_engine_reads_where_it_reads_it():
    document = ET.fromstring(omaha.render_response(update()))
    assert document.tag == "response" and document.get("protocol") == "3.0"
    assert document.find("daystart").get("elapsed_seconds") == "3600"
    assert document.find("app/updatecheck").get("status") == "ok"
    assert [url.get("codebase") for url in document.findall("app/updatecheck/urls/url")] \
        == ["http://appliance:6385/updates/v1/payloads/"]
    assert document.find("app/updatecheck/manifest").get("version") == "3510.2.1"
    package = document.find("app/updatecheck/manifest/packages/package")
    assert package.get("name") == "flatcar_production_update.gz"
    assert int(package.get("size")) == len(PAYLOAD) > 0
    assert package.get("hash") == base64.b64encode(SHA1).decode()     # Omaha: SHA-1
    assert package.get("hash_sha256") == hashlib.sha256(PAYLOAD).hexdigest()
    (action,) = [a for a in document.findall("app/updatecheck/manifest/actions/action")
                 if a.get("event") == "postinstall"]
    assert base64.b64decode(action.get("sha256")) == SHA256
    assert (action.get("IsDeltaPayload"), action.get("DisablePayloadBackoff"),
            action.get("MaxFailureCountPerUrl")) == ("false", "true", "10")
    assert document.find("app/ping").get("status") == "ok"
    assert [e.get("status") for e in document.findall("app/event")] == ["ok"]


def test_a_rendered_response_reads_back():
    for response in (update(), update(is_delta=True, disable_payload_backoff=False)):
        assert omaha.parse_response(omaha.render_response(response)) == response


def test_noupdate_and_nebraskas_refusals():
    response = Response((
        AppResponse("{a}", updatecheck=UpdateCheck("noupdate", poll_interval=3600)),
        AppResponse("{b}", "error-maxConcurrentUpdatesLimitReached",
                    updatecheck=UpdateCheck("error-internal")),
        AppResponse("{c}", events=2)))
    document = ET.fromstring(omaha.render_response(response))
    apps = document.findall("app")
    assert apps[0].find("updatecheck").attrib == {"status": "noupdate",
                                                  "PollInterval": "3600"}
    assert apps[1].get("status") == "error-maxConcurrentUpdatesLimitReached"
    assert apps[1].find("updatecheck").get("status") == "error-internal"
    assert len(apps[2].findall("event")) == 2 and apps[2].find("updatecheck") is None
    assert omaha.parse_response(omaha.render_response(response)) == response


@pytest.mark.parametrize("response,match", [
    (Response((AppResponse("{a}", "error-madeUp"),)), "app status 'error-madeUp'"),
    (Response((AppResponse("{a}", updatecheck=UpdateCheck("ok")),)), "needs URLs"),
    (Response((AppResponse("{a}", updatecheck=UpdateCheck("maybe")),)), "'maybe'"),
])
def test_a_response_clients_cannot_use_is_not_rendered(response, match):
    with pytest.raises(OmahaInvalid, match=match):
        omaha.render_response(response)


def test_a_digest_of_the_wrong_size_is_not_rendered():
    app = update().apps[0]
    check = app.updatecheck
    wrong = dataclasses.replace(check, manifest=dataclasses.replace(check.manifest,
                                                                    sha256=SHA1))
    with pytest.raises(OmahaInvalid, match="digest of 20 bytes"):
        omaha.render_response(Response((dataclasses.replace(app, updatecheck=wrong),)))


def edit(body: bytes, old: str, new: str) -> bytes:
    assert old.encode() in body
    return body.replace(old.encode(), new.encode())


GOOD = omaha.render_response(update()).decode()
#: what update_engine refuses as OmahaResponseInvalid (34), and what else we refuse
BAD_RESPONSES = [
    ('<updatecheck status="ok">', "<updatecheck>", "missing the 'status'"),
    ('codebase="http://appliance:6385/updates/v1/payloads/"', 'codebase=""', "'codebase'"),
    ('name="flatcar_production_update.gz"', 'name=""', "'name'"),
    (f'size="{len(PAYLOAD)}"', 'size="0"', "size='0' is not an integer 1"),
    (f'size="{len(PAYLOAD)}"', 'size="12kB"', "is not an integer"),
    ('event="postinstall"', 'event="preinstall"', "no postinstall action"),
    (f'sha256="{base64.b64encode(SHA256).decode()}"', 'sha256=""', "'sha256'"),
    (f'sha256="{base64.b64encode(SHA256).decode()}"', 'sha256="not base64!"',
     "not a base64 32-byte digest"),
    (f'hash_sha256="{SHA256.hex()}"', f'hash_sha256="{"0" * 64}"', "differ"),
    ("<urls>", "<urlz>", "not well-formed"),       # <urlz> closed by </urls>
]


@pytest.mark.parametrize("old,new,match", BAD_RESPONSES)
def test_a_response_update_engine_would_refuse_is_refused(old, new, match):
    error = OmahaMalformed if "well-formed" in match else OmahaInvalid
    with pytest.raises(error, match=match):
        omaha.parse_response(edit(GOOD.encode(), old, new))


def test_the_passive_slot_s_version_and_an_in_place_delta_read_back():
    """metalcast's two additions: the request names the passive slot's version, the
    answer says a delta applies onto that slot; update_engine's messages carry neither."""
    app = omaha.AppRequest("{app}", "2.0.0", "stable", delta_okay=True, updatecheck=True,
                           passive_version="1.0.0")
    assert omaha.parse_request(omaha.render_request(omaha.Request((app,)))).apps[0] == app
    plain = omaha.render_request(omaha.Request((omaha.AppRequest("{app}", "2.0.0"),)))
    assert b"metalcast_passive_version" not in plain
    digest = bytes(range(32))
    for base in ("passive", ""):
        manifest = omaha.Manifest("3.0.0", (omaha.Package("d", 10, sha256=digest),), digest,
                                  is_delta=True, delta_base=base)
        body = omaha.render_response(omaha.Response((omaha.AppResponse(
            "{app}", "ok", updatecheck=omaha.UpdateCheck("ok", ("http://a/",), manifest)),)))
        assert (b"MetalcastDeltaBase" in body) == bool(base)
        assert omaha.parse_response(body).apps[0].updatecheck.manifest.delta_base == base
    spoiled = body.replace(b'IsDeltaPayload="true"',
                           b'IsDeltaPayload="true" MetalcastDeltaBase="elsewhere"')
    with pytest.raises(OmahaInvalid, match="MetalcastDeltaBase"):
        omaha.parse_response(spoiled)
