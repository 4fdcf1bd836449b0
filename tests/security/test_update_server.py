"""Attacks on the image-update server's public routes, replayed against a running
``metalcast serve`` with HTTP basic authentication (its operator routes need it; the
Omaha endpoint, payloads, key and leases do not).

- hostile Omaha XML (entity expansion, external entities, DTDs, deep nesting, too many
  apps or events, bodies over 64 KiB, declared or chunked) gets a 4xx and records
  nothing: the instance table stays as it was;
- a lease with a wrong or no token, or for an unknown node, is a 401 (no lease);
- ``Range`` abuse (reversed, past the end, hundreds of ranges) is bounded;
- payload names that try to leave the payload directory (``..``, encoded slashes, the
  signing key's file name, scratch files) are 404s;
- the operator routes refuse anonymous clients (nothing stored).
"""
from __future__ import annotations

import hashlib

import pytest
import requests

from conductor.updates.catalogue import METALCAST_APPID
from ramdisk_agent.wire import omaha
from tests.functional.conftest import stop_server
from tests.security.http_attacks import basic_auth_server, declared_only, stream_body

IMAGE = b"metalcast-image-v2".ljust(64 << 10, b"\0")
TIMEOUT = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = basic_auth_server(tmp_path_factory.mktemp("updates"))
    auth = (running.username, running.password)
    for version, data in (("1.0.0", b"v1".ljust(64 << 10, b"\0")), ("2.0.0", IMAGE)):
        reply = requests.post(f"{running.url}/updates/v1/images?version={version}"
                              "&channel=stable", data=data, auth=auth, timeout=TIMEOUT)
        assert reply.status_code == 201, reply.text
    running.auth = auth
    yield running
    stop_server(running.process)


def instances(server) -> list:
    reply = requests.get(f"{server.url}/updates/v1/instances", auth=server.auth,
                         timeout=TIMEOUT)
    assert reply.status_code == 200
    return reply.json()["instances"]


def valid_app(machine: str = "attacker") -> str:
    return (f'<app appid="{METALCAST_APPID}" version="1.0.0" track="stable" '
            f'machineid="{machine}"><updatecheck/></app>')


LAUGHS = ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
          + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'
                    for i in range(8))
          + ']><request protocol="3.0">' + valid_app("&i;") + "</request>")
HOSTILE = {
    "billion laughs": LAUGHS,
    "external entity": '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM '
                       '"file:///etc/passwd">]><request protocol="3.0">'
                       + valid_app("&x;") + "</request>",
    "external DTD": '<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:1/x.dtd">'
                    '<request protocol="3.0">' + valid_app() + "</request>",
    "deep nesting": '<request protocol="3.0">' + "<a>" * 5000 + "</a>" * 5000 + "</request>",
    "too many apps": '<request protocol="3.0">' + valid_app() * 50 + "</request>",
    "too many events": f'<request protocol="3.0"><app appid="{METALCAST_APPID}" '
                       'version="1.0.0" track="stable" machineid="attacker">'
                       + '<event eventtype="3" eventresult="0" errorcode="44"/>' * 50
                       + "</app></request>",
    "wrong protocol": '<request protocol="2.0">' + valid_app() + "</request>",
    "no app": '<request protocol="3.0"></request>',
    "not xml": "this is not xml",
    "NUL": '<request protocol="3.0">\0' + valid_app() + "</request>",
    "latin-1 declared": '<?xml version="1.0" encoding="ISO-8859-1"?><request '
                        'protocol="3.0">' + valid_app("\xe9") + "</request>",
    "empty": "",
    "huge attribute": f'<request protocol="3.0"><app appid="{METALCAST_APPID}" '
                      f'version="1.0.0" track="stable" machineid="{"m" * 60000}">'
                      "<updatecheck/></app></request>",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_omaha_requests_are_refused_and_record_nothing(server, kind):
    before = instances(server)
    body = HOSTILE[kind].encode("latin-1" if "latin" in kind else "utf-8")
    reply = requests.post(f"{server.url}/v1/update/", data=body, timeout=TIMEOUT,
                          headers={"Content-Type": "text/xml"})
    assert reply.status_code in (400, 413), (kind, reply.status_code, reply.text[:300])
    assert "passwd" not in reply.text and "root:" not in reply.text
    assert instances(server) == before


def test_an_omaha_body_over_64_kib_is_refused_before_it_is_read(server):
    status, _headers, body = declared_only(server.url, "POST", "/v1/update/", 65537)
    assert status == 413, body
    total = 64 << 20
    status, sent = stream_body(server.url, "POST", "/v1/update/", total, chunked=True)
    assert status in (413, None) and sent < total // 8   # what socket buffers took


def test_a_valid_check_without_credentials_is_answered(server):
    body = omaha.render_request(omaha.Request((omaha.AppRequest(
        METALCAST_APPID, "1.0.0", "stable", machineid="c" * 32, updatecheck=True),)))
    reply = requests.post(f"{server.url}/v1/update/", data=body, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    answer = omaha.parse_response(reply.content).apps[0]
    assert answer.updatecheck.status == "ok"
    # the answer names the one payload to fetch, nothing of other versions or hosts
    assert "1.0.0" not in reply.text.replace('version="1.0.0"', "")
    assert [i["machineid"] for i in instances(server)].count("c" * 32) == 1


@pytest.mark.parametrize("body", [
    {"node": "00000000-0000-0000-0000-000000000000", "agent_token": "x" * 43,
     "action": "acquire"},
    {"node": "no-such-node", "agent_token": "x", "action": "acquire"},
    {"node": "no-such-node", "agent_token": "x", "action": "release"},
])
def test_a_lease_without_a_valid_host_agent_token_is_a_401(server, body):
    reply = requests.post(f"{server.url}/updates/v1/leases", json=body, timeout=TIMEOUT)
    assert reply.status_code == 401, reply.text
    status = requests.get(f"{server.url}/updates/v1/leases", auth=server.auth,
                          timeout=TIMEOUT).json()
    assert all(not group["holders"] for group in status["groups"])


@pytest.mark.parametrize("body", [[], {"node": 1}, {"node": "n", "agent_token": "t",
                                                    "action": "steal"},
                                  {"node": "n", "agent_token": "t", "action": "acquire",
                                   "group": "../x"}])
def test_a_malformed_lease_request_is_a_400(server, body):
    reply = requests.post(f"{server.url}/updates/v1/leases", json=body, timeout=TIMEOUT)
    assert reply.status_code == 400, reply.text


PAYLOAD = f"/updates/v1/payloads/{hashlib.sha256(IMAGE).hexdigest()}"


@pytest.mark.parametrize("header", [
    "bytes=999999999-", "bytes=10-5", "bytes=-0", "bytes=abc",
    "bytes=" + ",".join("0-" for _ in range(300)),
    "bytes=" + ",".join(f"{n}-{n}" for n in range(500)),
])
def test_range_abuse_is_bounded(server, header):
    reply = requests.get(server.url + PAYLOAD, headers={"Range": header}, timeout=TIMEOUT)
    assert reply.status_code in (200, 206, 416), reply.status_code
    assert len(reply.content) <= len(IMAGE) + 64 << 10


def test_a_resumed_download_gets_the_rest(server):
    reply = requests.get(server.url + PAYLOAD, headers={"Range": "bytes=1000-"},
                         timeout=TIMEOUT)
    assert reply.status_code == 206 and reply.content == IMAGE[1000:]


@pytest.mark.parametrize("name", [
    "..%2F..%2Fkeys%2Fdelta_ed25519.key", "..%2Fkeys", "%2e%2e", "..",
    "../../keys/delta_ed25519.key", ".upload-x", "A" * 64,
    hashlib.sha256(b"").hexdigest(), "%00", "0" * 65,
])
def test_payload_names_cannot_leave_the_payload_directory(server, name):
    for auth in (None, server.auth):   # anonymous: 401 where the path left the route
        reply = requests.get(f"{server.url}/updates/v1/payloads/{name}", auth=auth,
                             timeout=TIMEOUT)
        assert reply.status_code in (400, 401 if auth is None else 404, 404), \
            (name, reply.status_code)
        assert b"PRIVATE KEY" not in reply.content


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/updates/v1/images"), ("POST", "/updates/v1/images?version=9.9.9"),
    ("DELETE", "/updates/v1/images/1.0.0"), ("PUT", "/updates/v1/channels/stable"),
    ("PUT", "/updates/v1/groups/stable"), ("GET", "/updates/v1/instances"),
    ("PUT", "/updates/v1/leases/default"),
])
def test_operator_routes_need_credentials(server, method, path):
    reply = requests.request(method, server.url + path, data=b"x", timeout=TIMEOUT)
    assert reply.status_code == 401, reply.text
    images = requests.get(f"{server.url}/updates/v1/images", auth=server.auth,
                          timeout=TIMEOUT).json()["images"]
    assert [i["version"] for i in images] == ["1.0.0", "2.0.0"]


def test_the_public_key_is_public_and_only_the_public_key(server):
    reply = requests.get(f"{server.url}/updates/v1/key", timeout=TIMEOUT)
    assert reply.status_code == 200 and b"BEGIN PUBLIC KEY" in reply.content
    assert b"PRIVATE" not in reply.content
