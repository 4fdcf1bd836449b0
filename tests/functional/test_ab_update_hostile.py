"""A hostile or broken update server against the host update engine: every bad answer
is refused with a clear error and an update_engine code, nothing is made bootable,
the running slot is untouched, and nothing is written beyond the passive slot."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from conductor.updates import delta_build
from ramdisk_agent.host.update.config import METALCAST_APPID
from tests.functional.ab_host import MIB, Host, cgpt_bits, change, make_image
from tests.functional.omaha_peer import Responder
from tests.functional.test_ab_update import pem
from tests.functional.tools import require_all

SLOT = 4 * MIB
BOMB = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b'<response protocol="3.0"><app appid="&c;" status="ok"/></response>')


@pytest.fixture(autouse=True)
def tools():
    require_all(["cgpt", "sgdisk", "losetup"])


@pytest.fixture
def setup(tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    with Responder(key, METALCAST_APPID) as server:
        v1 = make_image(tmp_path / "v1.img", SLOT, 1)
        v2 = change(v1, tmp_path / "v2.img", 2)
        host = Host(tmp_path / "host", server.url, SLOT, v1, "1.0.0", pem(key))
        with open(host.disk, "rb") as disk:
            before = disk.read()
        server.publish("2.0.0", v2)
        yield host, server, v1, before
        host.detach_loops()


def refused(host: Host, v1, text: str) -> str:
    done = host.run("check", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert text in done.stderr, done.stderr
    assert cgpt_bits(host.disk, 4)[:3] == (0, 0, 0)
    assert host.slot_bytes(3) == v1.read_bytes()
    return done.stderr


@pytest.mark.parametrize("answer,text", [
    (BOMB, "invalid"),
    (b"<response protocol='3.0'>" + b"<x/>" * (300 << 10) + b"</response>", "over"),
    (b"not xml at all", "invalid"),
    (b'<response protocol="2.0"/>', "invalid"),
    (b'<response protocol="3.0"><app appid="{other}" status="ok"/></response>',
     "did not answer"),
    (b'<response protocol="3.0"><app appid="' + METALCAST_APPID.encode() +
     b'" status="error-updatesDisabled"/></response>', "refused"),
    (b'<response protocol="3.0"><app appid="' + METALCAST_APPID.encode() +
     b'" status="ok"><updatecheck status="ok"><urls/></updatecheck></app></response>',
     "invalid"),
])
def test_bad_omaha_answers_change_nothing(setup, answer, text):
    host, server, v1, before = setup
    server.raw_answer = answer
    refused(host, v1, text)
    with open(host.disk, "rb") as disk:
        assert disk.read() == before                     # not even the GPT bits moved
    assert "LAST_ERROR=" in host.run("status").stdout


@pytest.mark.parametrize("no_length", [False, True])
def test_a_payload_longer_than_offered_is_refused(setup, no_length):
    """Signed and offered with a size 4 KiB short: refused from the Content-Length, or
    without one, when a byte arrives beyond the offered size."""
    host, server, v1, _ = setup
    server.size_lie, server.no_length = -4096, no_length
    server.publish("2.0.0", host.root.parent / "v2.img")
    refused(host, v1, "longer than" if no_length else "the offer said")


@pytest.mark.parametrize("no_length", [False, True])
def test_a_payload_shorter_than_offered_is_refused(setup, tmp_path, no_length):
    host, server, v1, _ = setup
    server.size_lie, server.no_length = 4096, no_length
    server.publish("2.0.0", make_image(tmp_path / "small.img", SLOT - MIB, 5))
    refused(host, v1, "offer said")


def test_an_offer_larger_than_the_slot_is_refused_before_writing(setup, tmp_path):
    host, server, v1, _ = setup
    big = make_image(tmp_path / "big.img", SLOT + MIB, 3)
    server.publish("3.0.0", big)
    refused(host, v1, "holds")
    assert server.served == []


def test_an_unreachable_server_is_a_clear_error(setup):
    host, server, v1, _ = setup
    host.conf(SERVER="http://127.0.0.1:9/v1/update/")
    assert "cannot be reached" in refused(host, v1, "error:")


@pytest.mark.parametrize("spoil", ["foreign key", "data flipped", "truncated"])
def test_a_bad_delta_falls_back_to_the_full_image(setup, tmp_path, spoil):
    """A delta that does not verify (another key's signature, a flipped data byte, cut
    short - each re-offered under its new SHA-256, so only the delta's own checks can
    catch it) is reported (3/0) and the full image installed instead."""
    host, server, v1, _ = setup
    v2 = host.root.parent / "v2.img"
    delta = tmp_path / "v2.delta"
    signer = ed25519.Ed25519PrivateKey.generate() if spoil == "foreign key" else server.key
    delta_build.build(v1, v2, delta, signer, "2.0.0")
    raw = bytearray(delta.read_bytes())
    if spoil == "data flipped":
        raw[-1] ^= 1
    elif spoil == "truncated":
        del raw[-100:]
    delta.write_bytes(bytes(raw))
    release = server.publish("2.0.0", v2, {"1.0.0": delta})
    host.know(v2, "2.0.0")
    done = host.run("check")
    assert "Update succeeded -- reboot needed." in done.stdout
    assert server.served == [release.deltas["1.0.0"], release.full]
    assert [e.error_code for e in server.events_of(3, 0)] == [28]
    assert host.slot_bytes(4) == v2.read_bytes()
    assert cgpt_bits(host.disk, 4)[:3] == (2, 1, 0)


@pytest.mark.parametrize("status,body,text", [
    (200, b"not json", "failed"), (200, b"[1, 2]", "HTTP 200"),
    (200, b'{"held": true, "ttl": "soon"}', "malformed"),
    (500, b'{"error": "boom"}', "HTTP 500"), (401, b"{}", "metalcast host token"),
    (200, b'{"a":' * 100000 + b"1" + b"}" * 100000, "failed")])
def test_bad_lease_answers_never_lead_to_a_reboot(setup, status, body, text):
    host, server, v1, _ = setup
    server.tokens = {"node-here": "t2"}
    host.token("node-here", "t2")
    host.conf(REBOOT_STRATEGY="lease")
    host.know(host.root.parent / "v2.img", "2.0.0")
    host.run("check")
    server.lease_raw = (status, body)
    done = host.run("reboot", check=False)
    assert done.returncode == 1 and text in done.stderr, done.stderr
    assert not host.marker.exists()
