"""DNS registration against a real BIND 9 on 127.0.0.1 (tests/functional/dns_peers.py).

The adapter tests drive ``conductor.dns.rfc2136`` directly and read the result back
with ``dig``; the end-to-end tests run ``metalcast serve`` with a ``[dns]`` section
and deploy fake-hardware nodes through the API.
"""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from conductor import errors
from conductor.config import from_options
from conductor.dns import rfc2136 as dns
from tests.functional.conftest import BIN_DIR, start_server, stop_server
from tests.functional.dhcp_peers import DhcpLab, ExternalDnsmasq
from tests.functional.dns_peers import KEY_NAME, LOCKED_ZONE, REVERSE_V4, ZONE, Named
from tests.functional.helpers import api_call, provision, unique, wait_node
from tests.waiting import wait_until

V4, V4_OTHER, V6 = "10.77.0.5", "10.77.1.9", "fd77::5"


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    server = Named(tmp_path_factory.mktemp("named"))
    yield server
    server.stop()


def client(named: Named, **overrides) -> dns.Rfc2136Dns:
    section = named.settings(**overrides)
    return dns.build(from_options({f"dns.{key}": value for key, value in section.items()}))


def fqdn(label: str) -> str:
    return f"{label}.{ZONE}."


# -- the adapter ---------------------------------------------------------------------
def test_register_replace_and_unregister(named):
    dns_client, label = client(named), unique("web")
    assert dns_client.register(label, [V4, V6]) == []
    assert named.records(fqdn(label), V4, V6) == {
        "A": [V4], "AAAA": [V6], V4: [fqdn(label)], V6: [fqdn(label)]}
    # registering again replaces: one A record, the AAAA gone, twice is the same
    dns_client.register(label, [V4_OTHER])
    dns_client.register(label, [V4_OTHER])
    assert named.records(fqdn(label), V4_OTHER) == {"A": [V4_OTHER], "AAAA": [],
                                                    V4_OTHER: [fqdn(label)]}
    dns_client.unregister(label, [V4_OTHER, V4, V6])
    assert named.records(fqdn(label), V4_OTHER, V4, V6) == {
        "A": [], "AAAA": [], V4_OTHER: [], V4: [], V6: []}


def test_unregister_removes_only_its_own_records(named):
    dns_client, mine, theirs = client(named), unique("mine"), unique("theirs")
    dns_client.register(mine, ["10.77.2.1"])
    dns_client.register(theirs, ["10.77.2.2"])
    dns_client.unregister(mine, ["10.77.2.2"])   # not mine: nothing to remove
    assert named.dig(fqdn(theirs), "A") == ["10.77.2.2"]
    assert named.dig("-x", "10.77.2.2") == [fqdn(theirs)]
    dns_client.unregister(theirs, ["10.77.2.2"])
    assert named.dig(fqdn(theirs), "A") == []


def test_pointer_without_reverse_zone_is_skipped_with_a_note(named):
    label = unique("norev")
    notes = client(named).register(label, ["192.0.2.7", V4])
    assert notes == ["PTR for 192.0.2.7 skipped: the DNS server has no zone holding "
                     "7.2.0.192.in-addr.arpa."]
    assert named.dig(fqdn(label), "A") == sorted(["192.0.2.7", V4])
    assert named.dig("-x", V4) == [fqdn(label)]
    configured = client(named, reverse_zone_v4=REVERSE_V4)
    notes = configured.register(label, ["192.0.2.8"])
    assert notes == [f"PTR for 192.0.2.8 skipped: outside the configured reverse zone "
                     f"{REVERSE_V4}."]
    configured.unregister(label, ["192.0.2.8", V4])


def test_tcp_transport(named):
    label = unique("tcp")
    client(named, protocol="tcp").register(label, [V6])
    assert named.dig(fqdn(label), "AAAA") == [V6]
    assert named.dig("-x", V6) == [fqdn(label)]


@pytest.mark.parametrize("overrides, expected", [
    ({"tsig_secret": "c2VjcmV0LXRoYXQtbmFtZWQtZG9lcy1ub3Qta25vdw=="}, "(BADSIG)"),
    ({"tsig_key_name": "no-such-key"}, "does not know TSIG key 'no-such-key'"),
    ({"tsig_algorithm": "hmac-sha512"}, "with algorithm hmac-sha512 (BADKEY)"),
    ({"zone": LOCKED_ZONE}, f"refused the update of zone {LOCKED_ZONE}. (REFUSED): the "
                            f"zone does not allow updates with key '{KEY_NAME}'"),
    ({"tsig_key_name": "", "tsig_secret": ""}, "(REFUSED)"),
    ({"zone": "elsewhere.test"}, "is not authoritative for zone elsewhere.test."),
])
def test_server_errors_become_driver_errors(named, overrides, expected):
    label = unique("bad")
    with pytest.raises(errors.DriverError) as info:
        client(named, **overrides).register(label, [V4])
    assert expected in str(info.value)
    assert f"DNS server 127.0.0.1:{named.port}" in str(info.value)
    assert named.secret not in str(info.value)
    assert named.dig(fqdn(label), "A") == []


def test_silent_server_times_out_in_bounded_time(named):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))   # receives the update, never answers
        started = time.monotonic()
        with pytest.raises(errors.DriverError) as info:
            client(named, port=silent.getsockname()[1], timeout=1).register("x", [V4])
        elapsed = time.monotonic() - started
        assert silent.recv(4096)  # the update did reach it
    assert "did not answer within 1s" in str(info.value)
    assert elapsed < 10, elapsed  # one timeout, not a hang (generous on a busy machine)


def test_closed_tcp_port_is_a_clean_error(named):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]   # bound, not listening: connections are refused
        with pytest.raises(errors.DriverError) as info:
            client(named, port=port, protocol="tcp").register("x", [V4])
    assert "could not be reached" in str(info.value)
    assert "ConnectionRefusedError" in str(info.value)


# -- end to end: metalcast serve ----------------------------------------------------------
def _serve(named: Named, data_dir, **sections):
    return start_server(data_dir, {
        "dns": named.settings(retry_interval=1),
        "conductor": {"sync_power_state_interval": 0}, **sections})


def _active_node(url: str, name: str, macs=(), adopt=False, **instance_info) -> str:
    node = api_call(url, "POST", "/v1/nodes", {"driver": "fake-hardware", "name": name,
                                               "instance_info": instance_info}, ok=(201,))
    for address in macs:
        api_call(url, "POST", "/v1/ports", {"node_uuid": node["uuid"], "address": address},
                 ok=(201,))
    steps = (("manage", "manageable"), ("adopt", "active")) if adopt else (
        ("manage", "manageable"), ("provide", "available"), ("active", "active"))
    for target, state in steps:
        provision(url, node["uuid"], target, state)
    return node["uuid"]


def _internal(url: str, uuid: str) -> dict:
    return api_call(url, "GET", f"/v1/nodes/{uuid}")["driver_internal_info"]


def _wait_records(named: Named, name: str, expected: dict, timeout: float = 60) -> None:
    addresses = [k for k in expected if k not in ("A", "AAAA")]
    wait_until(lambda: named.records(fqdn(name), *addresses) == expected, timeout, 0.2,
               lambda: f"BIND to serve {expected} for {fqdn(name)}; it serves "
               f"{named.records(fqdn(name), *addresses)}")


@pytest.fixture(scope="module")
def dns_server(named, tmp_path_factory):
    server = _serve(named, tmp_path_factory.mktemp("metalcast-dns"))
    yield server
    stop_server(server.process)


def test_deploy_registers_and_undeploy_removes(named, dns_server):
    url, name = dns_server.url, unique("node")
    uuid = _active_node(url, name, ip_address=V4, ipv6_address=V6)
    present = {"A": [V4], "AAAA": [V6], V4: [fqdn(name)], V6: [fqdn(name)]}
    assert named.records(fqdn(name), V4, V6) == present
    assert _internal(url, uuid)["dns_records"] == {
        "label": name, "fqdn": fqdn(name), "addresses": [V4, V6]}
    provision(url, uuid, "deleted", "available")
    assert named.records(fqdn(name), V4, V6) == {"A": [], "AAAA": [], V4: [], V6: []}
    assert "dns_records" not in _internal(url, uuid)


def test_adopted_node_is_registered(named, dns_server):
    url, name = dns_server.url, unique("adopted")
    uuid = _active_node(url, name, adopt=True, ip_address="10.77.4.4")
    assert named.records(fqdn(name), "10.77.4.4") == {"A": ["10.77.4.4"], "AAAA": [],
                                                      "10.77.4.4": [fqdn(name)]}
    provision(url, uuid, "deleted", "available")
    assert named.dig(fqdn(name), "A") == []


def test_deleting_an_active_node_removes_its_records(named, dns_server):
    url, name = dns_server.url, unique("gone")
    uuid = _active_node(url, name, ip_address=V4_OTHER)
    assert named.dig(fqdn(name), "A") == [V4_OTHER]
    api_call(url, "PUT", f"/v1/nodes/{uuid}/maintenance", {"reason": "decommission"},
             ok=(202,))
    api_call(url, "DELETE", f"/v1/nodes/{uuid}", ok=(204,))
    # removed right after the delete, off the request (tests/functional/test_dns_removals.py)
    _wait_records(named, name, {"A": [], "AAAA": [], V4_OTHER: []})


def _wait_log(server, fragment: str, timeout: float = 30) -> str:
    """The server's log line containing ``fragment`` (its output arrives by a pipe)."""
    return wait_until(lambda: [line for line in server.output().splitlines()
                               if fragment in line], timeout, 0.1,
                      lambda: f"a log line with {fragment!r}:\n{server.output()}")[0]


def test_node_without_address_or_usable_name_still_deploys(named, dns_server):
    url = dns_server.url
    uuid = _active_node(url, "___", ip_address=V4)
    assert not {"dns_pending", "dns_records"} & set(_internal(url, uuid))
    line = _wait_log(dns_server, f"Node {uuid}: name '___' cannot be made into a DNS host")
    assert " WARNING " in line
    uuid = _active_node(url, unique("noaddr"), ip_address="not-an-address")
    assert " WARNING " in _wait_log(dns_server, f"Node {uuid}: no address known")
    assert not {"dns_pending", "dns_records"} & set(_internal(url, uuid))


def test_dns_outage_never_fails_a_deploy_and_is_retried(named, tmp_path):
    """named down: the deploy still ends active, with a WARNING and a pending retry;
    named back: the periodic retry registers. A pending removal survives a restart."""
    server = _serve(named, tmp_path / "metalcast")
    try:
        url, name = server.url, unique("outage")
        named.stop()
        uuid = _active_node(url, name, ip_address="10.77.3.3")
        pending = wait_node(url, uuid, lambda n: n["driver_internal_info"].get(
            "dns_pending", {}).get("attempts", 0) >= 2, "retried")["driver_internal_info"]
        assert pending["dns_pending"]["action"] == "register"
        assert "did not answer within 2s" in pending["dns_pending"]["error"]
        line = _wait_log(server, f"Node {uuid}: DNS registration of {fqdn(name)} -> "
                         "10.77.3.3 failed (attempt 1; retried every 1s): Driver error: "
                         "DNS server 127.0.0.1")
        assert " WARNING conductor.dns.registration [" in line   # [request ID]
        named.start()
        _wait_records(named, name, {"A": ["10.77.3.3"], "AAAA": [],
                                    "10.77.3.3": [fqdn(name)]})
        wait_node(url, uuid, lambda n: "dns_pending" not in n["driver_internal_info"],
                  "in step with DNS")

        named.stop()
        provision(url, uuid, "deleted", "available")
        assert _internal(url, uuid)["dns_pending"]["action"] == "unregister"
        stop_server(server.process)
        named.start()
        assert named.dig(fqdn(name), "A") == ["10.77.3.3"]   # still there: nobody retried
        server = _serve(named, tmp_path / "metalcast")
        _wait_records(named, name, {"A": [], "AAAA": [], "10.77.3.3": []})
        wait_node(server.url, uuid, lambda n: not {"dns_pending", "dns_records"} &
                  set(n["driver_internal_info"]), "in step with DNS")
    finally:
        stop_server(server.process)
        if named.process is None:
            named.start()


def test_address_from_a_real_dnsmasq_lease(named, tmp_path):
    """No address in instance_info: the one dnsmasq leased to the node's MAC is used."""
    (tmp_path / "lab").mkdir()
    lab = DhcpLab(tmp_path / "lab")
    dnsmasq = server = None
    try:
        dnsmasq = ExternalDnsmasq(lab, tmp_path, Path("/dev/null"))
        mac = "52:54:00:78:00:5a"
        lease = lab.dhcp(mac)
        assert lease is not None, dnsmasq.log.read_text()
        server = _serve(named, tmp_path / "metalcast",
                        dhcp={"leasefile": tmp_path / "external.leases"})
        name = unique("leased")
        uuid = _active_node(server.url, name, macs=[mac])
        assert named.records(fqdn(name), lease["ip"]) == {
            "A": [lease["ip"]], "AAAA": [], lease["ip"]: [fqdn(name)]}
        provision(server.url, uuid, "deleted", "available")
        assert named.records(fqdn(name), lease["ip"]) == {"A": [], "AAAA": [],
                                                          lease["ip"]: []}
    finally:
        if server is not None:
            stop_server(server.process)
        if dnsmasq is not None:
            dnsmasq.close()
        lab.close()


def test_wrong_dns_settings_stop_the_server_at_start(named, tmp_path):
    config = tmp_path / "bad.conf"
    config.write_text(f"[dns]\nserver = 127.0.0.1\ntsig_key_name = {KEY_NAME}\n"
                      f"tsig_secret = {named.secret}\n")   # no zone
    result = subprocess.run([str(BIN_DIR / "metalcast"), "serve", "--port", "0",
                             "--data-dir", str(tmp_path), "--config-file", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "dns.zone is required when dns.server is set" in result.stderr
    assert named.secret not in result.stdout + result.stderr
