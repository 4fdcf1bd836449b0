"""DHCP provider: MAC validation, host files, boot rules and dnsmasq.conf generation.

No processes here; tests/functional/test_dhcp.py runs the same code against a real
dnsmasq and real DHCP clients.
"""
import dataclasses
import ipaddress
import time
import types

import pytest

from conductor import config, errors
from conductor.drivers.boot import pxe
from conductor.netboot import dhcp
from conductor.netboot import dnsmasq as dhcp_dnsmasq

NODE = "8b1c4c38-8c68-4f7a-9f5e-3a2b1c0d9e8f"
OTHER = "0f3d2c1b-aaaa-4bbb-8ccc-123456789abc"
MAC1, MAC2 = "52:54:00:12:34:56", "52:54:00:12:34:57"
#: ``ip -j addr show dev br0`` as iproute2 6.1 prints it (trimmed).
IP_JSON = [{"ifname": "br0", "addr_info": [
    {"family": "inet", "local": "10.77.0.1", "prefixlen": 24, "scope": "global"},
    {"family": "inet6", "local": "fd77::1", "prefixlen": 64, "scope": "global"},
    {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"}]}]


def settings(tmp_path, options: dict | None = None) -> config.Settings:
    base = {"data_dir": str(tmp_path), "dhcp.mode": "hostsdir",
            "pxe.http_url": "http://10.77.0.1:8080"}
    return config.from_options({**base, **(options or {})})


def managed(tmp_path, options: dict | None = None) -> config.Settings:
    return settings(tmp_path, {"dhcp.mode": "managed", "dhcp.interface": "br0",
                               "dhcp.range": "10.77.0.100,10.77.0.150,255.255.255.0,10m",
                               **(options or {})})


@pytest.mark.parametrize("value", ["52:54:00:12:34:56", "52:54:00:AB:CD:EF"])
def test_canonical_mac_accepts_colon_form(value):
    assert dhcp.canonical_mac(value) == value.lower()


@pytest.mark.parametrize("value", [
    "52:54:00:12:34:56,ignore", "52:54:00:12:34:56\n00:00:00:00:00:00,set:metalcast",
    "52:54:00:12:34", "52-54-00-12-34-56", "525400123456", "52:54:00:12:34:5g",
    " 52:54:00:12:34:56", "../../etc/passwd", "", None, 525400123456])
def test_canonical_mac_refuses_everything_else(value):
    with pytest.raises(errors.InvalidParameter, match="MAC address"):
        dhcp.canonical_mac(value)


def test_update_writes_one_tagged_file_per_mac(tmp_path):
    provider = dhcp.HostsDirDhcp(tmp_path)
    provider.update(NODE, [MAC2.upper(), MAC1], "pxe")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["52-54-00-12-34-56",
                                                           "52-54-00-12-34-57"]
    assert (tmp_path / "52-54-00-12-34-56").read_text() == (
        f"# metalcast node {NODE} boot pxe\n{MAC1},set:metalcast,set:metalcast-pxe\n")
    provider.update(NODE, [MAC1], "ipxe")   # MAC2's port went away: released
    assert provider.entries() == {MAC1: f"{MAC1},set:metalcast",
                                  MAC2: f"{MAC2},set:metalcast-released"}


def test_bad_input_writes_nothing(tmp_path):
    provider = dhcp.HostsDirDhcp(tmp_path)
    with pytest.raises(errors.InvalidParameter, match="MAC address"):
        provider.update(NODE, [MAC1, "52:54:00:12:34:57,set:metalcast-pxe"])
    with pytest.raises(errors.InvalidParameter, match="node UUID"):
        provider.update("node-1\n00:11:22:33:44:55", [MAC1])
    with pytest.raises(errors.InvalidParameter, match="boot interface 'fake'"):
        provider.update(NODE, [MAC1], "fake")
    assert list(tmp_path.iterdir()) == []


def test_remove_releases_only_that_nodes_macs(tmp_path):
    provider = dhcp.HostsDirDhcp(tmp_path)
    provider.update(NODE, [MAC1])
    provider.update(OTHER, [MAC2])
    provider.remove(NODE)
    assert provider.entries() == {MAC1: f"{MAC1},set:metalcast-released",
                                  MAC2: f"{MAC2},set:metalcast"}
    provider.remove(OTHER, [MAC1])           # not OTHER's: untouched
    assert provider.entries()[MAC2] == f"{MAC2},set:metalcast"
    provider.update(NODE, [MAC1])            # re-enrolled
    assert provider.entries()[MAC1] == f"{MAC1},set:metalcast"
    provider.remove(NODE)
    assert provider.purge_released() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["52-54-00-12-34-57"]


def test_task_and_boot_options_callers(tmp_path):
    """The boot interfaces pass a Task, or their DhcpBootOptions (conductor.drivers.boot.pxe)."""
    provider = dhcp.HostsDirDhcp(tmp_path)
    task = types.SimpleNamespace(node=types.SimpleNamespace(uuid=NODE))
    options = pxe.DhcpBootOptions(node_uuid=NODE, macs=(MAC1,), boot_mode="uefi",
                                  tftp_server="10.77.0.1", bootfile="grubx64.efi",
                                  ipxe_script_url=None)
    provider.update(task, options)
    assert provider.entries()[MAC1].endswith("set:metalcast-pxe")
    provider.update(task, dataclasses.replace(options, macs=(MAC1, MAC2), ipxe_script_url="x"))
    assert provider.entries() == {MAC1: f"{MAC1},set:metalcast", MAC2: f"{MAC2},set:metalcast"}
    provider.clean(task)
    assert set(provider.entries().values()) == {f"{MAC1},set:metalcast-released",
                                                f"{MAC2},set:metalcast-released"}


def test_noop_validates_but_writes_nothing(tmp_path):
    provider = dhcp.NoopDhcp()
    provider.update(NODE, [MAC1])
    provider.remove(NODE)
    with pytest.raises(errors.InvalidParameter):
        provider.update(NODE, ["not-a-mac"])


def test_provider_follows_mode(tmp_path):
    assert isinstance(dhcp.make_provider(settings(tmp_path, {"dhcp.mode": "none"})),
                      dhcp.NoopDhcp)
    provider = dhcp.make_provider(settings(tmp_path))
    assert isinstance(provider, dhcp.HostsDirDhcp)
    assert provider.directory == tmp_path / "dhcp" / "hosts.d"


def test_ini_section(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("[dhcp]\nmode = managed\ninterface = br0\nunknown_hosts = inspect\n"
                    "range = 10.77.0.100,10.77.0.150\nlog_dhcp = yes\n")
    loaded = config.load(str(conf), env={})
    assert (loaded.dhcp.mode, loaded.dhcp.interface, loaded.dhcp.unknown_hosts,
            loaded.dhcp.log_dhcp) == ("managed", "br0", "inspect", True)


@pytest.mark.parametrize("values,message", [
    ({"dhcp.mode": "dnsmasq"}, "mode must be one of none, managed, hostsdir"),
    ({"dhcp.unknown_hosts": "pxe"}, "unknown_hosts must be one of"),
    ({"dhcp.ipv6_ra": "yes"}, "ipv6_ra must be one of"),
    ({"dhcp.bios_loader": "undionly.kpxe,,10.0.0.9"}, "bios_loader"),
    ({"dhcp.uefi_loader": "../ipxe.efi"}, "uefi_loader"),
    ({"dhcp.boot_server": "tftp.example"}, "boot_server"),
    ({"dhcp.mode": "managed", "dhcp.range": "10.0.0.1,10.0.0.9"}, "needs \\[dhcp\\] interface"),
])
def test_bad_settings(tmp_path, values, message):
    with pytest.raises(errors.ConfigError, match=message):
        dhcp.check_settings(settings(tmp_path, values))


@pytest.mark.parametrize("text,message", [
    ("", "expected start,end"), ("10.0.0.1", "expected start,end"),
    ("10.0.0.9,10.0.0.1", "end is before start"), ("10.0.0.1,10.0.0.300", "10.0.0.300"),
    ("10.0.0.1,10.0.0.9,255.0.255.0", "255.0.255.0"), ("10.0.0.1,10.0.0.9,10 m", "lease time"),
    ("10.0.0.1,10.0.0.9,1h,2h", "lease time"), ("fd00::1,fd00::9", "fd00::1"),
    ("10.0.0.1,10.0.0.9\ndhcp-option=3,1.2.3.4", "digits"),
])
def test_bad_range(text, message):
    with pytest.raises(errors.ConfigError, match=message):
        dhcp.parse_range(text)


def test_range_forms():
    assert dhcp.parse_range("10.0.0.1,10.0.0.9").conf() == "10.0.0.1,10.0.0.9,1h"
    assert dhcp.parse_range(" 10.0.0.1, 10.0.0.9 ,255.255.255.0,infinite").conf() == \
        "10.0.0.1,10.0.0.9,255.255.255.0,infinite"
    assert dhcp.parse_range("10.0.0.1,10.0.0.9,600").lease_time == "600"


#: The dnsmasq-wide boot rules match known hosts without their own boot options.
KNOWN = "dhcp-boot=tag:metalcast,tag:!metalcast-own"


def test_boot_rules_ignore_unknown(tmp_path):
    rules = dhcp.boot_rules(settings(tmp_path), "10.77.0.1")
    assert "dhcp-ignore=tag:!metalcast" in rules
    assert f"{KNOWN},tag:!metalcast-pxe,tag:ipxe,http://10.77.0.1:8080/" \
           "boot.ipxe" in rules
    assert f"{KNOWN},tag:!metalcast-pxe,tag:!ipxe,tag:!efi64,undionly.kpxe,," \
           "10.77.0.1" in rules
    assert f"{KNOWN},tag:metalcast-pxe,tag:efi64,grubx64.efi,,10.77.0.1" in rules
    assert "dhcp-match=set:efi64,option:client-arch,9" in rules
    assert not [r for r in rules if r.startswith("dhcp-boot=tag:!metalcast")]


def test_boot_rules_inspect_unknown(tmp_path):
    rules = dhcp.boot_rules(settings(tmp_path, {
        "dhcp.unknown_hosts": "inspect", "dhcp.ipxe_url": "http://10.77.0.1:9000/inspect.ipxe"}))
    assert "dhcp-ignore=tag:!metalcast" not in rules
    assert "dhcp-boot=tag:!metalcast,tag:ipxe,http://10.77.0.1:9000/inspect.ipxe" in rules
    assert "dhcp-boot=tag:!metalcast,tag:!ipxe,tag:efi64,ipxe.efi" in rules


def test_ipxe_url_sources(tmp_path):
    assert dhcp.ipxe_url(settings(tmp_path), "http://10.1.1.1:1234") == \
        "http://10.1.1.1:1234/boot.ipxe"
    assert dhcp.ipxe_url(settings(tmp_path)) == "http://10.77.0.1:8080/boot.ipxe"
    no_url = settings(tmp_path, {"pxe.http_url": "", "dhcp.boot_server": "10.0.0.1"})
    assert dhcp.ipxe_url(no_url) == "http://10.0.0.1:8080/boot.ipxe"
    with pytest.raises(errors.ConfigError, match="set \\[dhcp\\] ipxe_url"):
        dhcp.ipxe_url(settings(tmp_path, {"pxe.http_url": ""}))
    with pytest.raises(errors.ConfigError, match="not a plain http"):
        dhcp.ipxe_url(settings(tmp_path, {"dhcp.ipxe_url": "http://x/boot.ipxe,tag:x"}))


def test_interface_from_ip_json():
    iface = dhcp_dnsmasq.InterfaceInfo.from_ip_json("br0", IP_JSON)
    assert iface.ipv4 == (ipaddress.IPv4Interface("10.77.0.1/24"),)
    assert iface.ipv6 == (ipaddress.IPv6Interface("fd77::1/64"),)   # link-local left out


def test_managed_conf_with_ra(tmp_path):
    iface = dhcp_dnsmasq.InterfaceInfo.from_ip_json("br0", IP_JSON)
    lines = dhcp_dnsmasq.dnsmasq_conf(managed(tmp_path), iface).splitlines()
    for line in ["port=0", "interface=br0", "bind-interfaces", "dhcp-authoritative",
                 "dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,10m", "enable-ra",
                 "dhcp-range=::,constructor:br0,ra-only", "log-facility=-",
                 f"dhcp-hostsdir={tmp_path}/dhcp/hosts.d",
                 f"dhcp-optsdir={tmp_path}/dhcp/opts.d",
                 f"dhcp-leasefile={tmp_path}/dhcp/dnsmasq.leases",
                 f"{KNOWN},tag:!metalcast-pxe,tag:!ipxe,tag:efi64,ipxe.efi,,"
                 "10.77.0.1"]:
        assert line in lines
    assert "log-dhcp" not in lines and "no-ping" not in lines
    quick = dhcp_dnsmasq.dnsmasq_conf(
        managed(tmp_path, {"dhcp.ping": False, "dhcp.log_dhcp": True}), iface).splitlines()
    assert "no-ping" in quick and "log-dhcp" in quick


def test_managed_conf_ra_choices(tmp_path):
    v4only = dataclasses.replace(dhcp_dnsmasq.InterfaceInfo.from_ip_json("br0", IP_JSON),
                                 ipv6=())
    assert "enable-ra" not in dhcp_dnsmasq.dnsmasq_conf(managed(tmp_path), v4only)
    both = dhcp_dnsmasq.InterfaceInfo.from_ip_json("br0", IP_JSON)
    assert "enable-ra" not in dhcp_dnsmasq.dnsmasq_conf(
        managed(tmp_path, {"dhcp.ipv6_ra": "off"}), both)
    with pytest.raises(errors.ConfigError, match="no global IPv6"):
        dhcp_dnsmasq.dnsmasq_conf(managed(tmp_path, {"dhcp.ipv6_ra": "on"}), v4only)


def test_managed_conf_range_must_be_on_the_interface(tmp_path):
    iface = dhcp_dnsmasq.InterfaceInfo.from_ip_json("br0", IP_JSON)
    with pytest.raises(errors.ConfigError, match="not on a subnet of br0 \\(10.77.0.0/24\\)"):
        dhcp_dnsmasq.dnsmasq_conf(
            managed(tmp_path, {"dhcp.range": "10.78.0.10,10.78.0.20"}), iface)
    conf = dhcp_dnsmasq.dnsmasq_conf(managed(tmp_path, {"dhcp.boot_server": "10.77.0.5"}), iface)
    assert f"{KNOWN},tag:metalcast-pxe,tag:!efi64,pxelinux.0,,10.77.0.5" in conf


def test_lease_addresses(tmp_path):
    s = settings(tmp_path)
    later, earlier = int(time.time()) + 600, int(time.time()) - 600
    s.data_path.joinpath("dhcp").mkdir()
    s.data_path.joinpath("dhcp", "dnsmasq.leases").write_text(
        f"{later} 52:54:00:12:34:56 10.77.0.107 * 01:52:54:00:12:34:56\n"
        f"{earlier} 52:54:00:12:34:57 10.77.0.108 * *\n"
        f"0 52:54:00:12:34:58 10.77.0.109 host *\n"
        "duid 00:01:00:01:2c:aa:bb:cc:52:54:00:00:00:01\n"
        f"{later} 1234 fd77::5 * 00:01:00:01\n")
    assert dhcp.lease_addresses(s, [MAC1.upper()]) == ["10.77.0.107"]
    assert dhcp.lease_addresses(s, [MAC2]) == []          # expired
    assert dhcp.lease_addresses(s, ["52:54:00:12:34:58", MAC1]) == ["10.77.0.109",
                                                                    "10.77.0.107"]
    with pytest.raises(errors.InvalidParameter):
        dhcp.lease_addresses(s, ["52:54:00:12:34:56 10.0.0.1"])
    assert dhcp.lease_addresses(settings(tmp_path / "empty"), [MAC1]) == []
