"""Per-host DHCP boot options: a node's entry names its own conductor's boot server.

Pure functions and the host/opts files they end up in; tests/functional/
test_boot_per_conductor.py runs them against a real dnsmasq and DHCP client.
"""
import pytest

from conductor import config, errors
from conductor.drivers.boot import pxe
from conductor.netboot import dhcp
from conductor.netboot.dhcp_options import BootServer, Loaders, host_options

NODE = "8b1c4c38-8c68-4f7a-9f5e-3a2b1c0d9e8f"
MAC = "52:54:00:12:34:56"
C1 = BootServer("127.0.0.2", "http://127.0.0.2:8080/boot.ipxe")
C2 = BootServer("127.0.0.3", "http://127.0.0.3:8080/boot.ipxe")


def test_ipxe_options_name_the_server_and_one_file_per_client_kind():
    options = host_options(MAC, "ipxe", C1, Loaders())
    assert options.tag.startswith("mcb-525400123456-")
    body = [line.removeprefix(f"tag:{options.tag},") for line in options.lines]
    assert body == ["option:server-ip-address,127.0.0.2",
                    "tag:ipxe,option:bootfile-name,http://127.0.0.2:8080/boot.ipxe",
                    "tag:!ipxe,tag:!efi64,option:bootfile-name,undionly.kpxe",
                    "tag:!ipxe,tag:efi64,option:bootfile-name,ipxe.efi"]


def test_pxe_options_use_the_pxe_loaders():
    options = host_options(MAC, "pxe", C1, Loaders(pxe_uefi="shim.efi"))
    assert options.lines[1:] == (f"tag:{options.tag},tag:!efi64,option:bootfile-name,pxelinux.0",
                                 f"tag:{options.tag},tag:efi64,option:bootfile-name,shim.efi")


def test_the_tag_changes_with_the_server_so_old_options_match_nothing():
    """dnsmasq keeps options it read before; a new tag is what makes the new ones count."""
    first, second = (host_options(MAC, "ipxe", s, Loaders()) for s in (C1, C2))
    assert first.tag != second.tag
    assert host_options(MAC, "ipxe", C1, Loaders()) == first     # stable while unchanged
    assert host_options(MAC, "pxe", C1, Loaders()).tag != first.tag


@pytest.mark.parametrize("address, url", [
    ("c1.example", "http://x/boot.ipxe"), ("0:0::1", "http://x/boot.ipxe"),
    ("10.0.0.1", "http://x/boot.ipxe,tag:evil"), ("10.0.0.1", "http://x/a b"),
    ("10.0.0.1", "http://x/\ndhcp-option=3,6.6.6.6")])
def test_boot_server_refuses_what_could_break_a_dnsmasq_line(address, url):
    with pytest.raises(errors.InvalidParameter):
        BootServer(address, url)


def options(server, interface="ipxe"):
    return pxe.DhcpBootOptions(node_uuid=NODE, macs=(MAC,), boot_mode="bios",
                               tftp_server=server.address if server else "", bootfile="x",
                               ipxe_script_url="u" if interface == "ipxe" else None,
                               boot_server=server)


def test_entry_with_a_boot_server_writes_options_then_names_their_tag(tmp_path):
    provider = dhcp.HostsDirDhcp(tmp_path / "hosts", tmp_path / "opts")
    provider.update(NODE, options(C1))
    tag = host_options(MAC, "ipxe", C1, Loaders()).tag
    assert provider.entries() == {MAC: f"{MAC},set:metalcast,set:metalcast-own,set:{tag}"}
    assert f"tag:{tag},option:server-ip-address,127.0.0.2" in provider.options()[MAC]
    assert (tmp_path / "hosts" / "52-54-00-12-34-56").read_text().startswith(
        f"# metalcast node {NODE} boot ipxe server 127.0.0.2\n")

    provider.update(NODE, options(C2))                  # taken over by another conductor
    new_tag = host_options(MAC, "ipxe", C2, Loaders()).tag
    assert provider.entries()[MAC].endswith(f"set:{new_tag}")
    assert all(line.startswith(f"tag:{new_tag},") for line in provider.options()[MAC])
    assert "127.0.0.3" in provider.options()[MAC][0]


def test_entry_without_a_boot_server_falls_back_to_the_dnsmasq_wide_rules(tmp_path):
    provider = dhcp.HostsDirDhcp(tmp_path / "hosts", tmp_path / "opts")
    provider.update(NODE, options(C1, "pxe"))
    provider.update(NODE, options(None, "pxe"))
    assert provider.entries() == {MAC: f"{MAC},set:metalcast,set:metalcast-pxe"}
    assert provider.options() == {}


def test_release_and_purge_drop_the_options_file(tmp_path):
    provider = dhcp.HostsDirDhcp(tmp_path / "hosts", tmp_path / "opts")
    provider.update(NODE, options(C1))
    provider.remove(NODE)
    assert provider.entries() == {MAC: f"{MAC},set:metalcast-released"}
    assert provider.options() == {}
    (tmp_path / "opts" / "52-54-00-12-34-57").write_text("tag:x,option:3,1.1.1.1\n")
    provider.purge_released()                           # an options file with no entry
    assert provider.entries() == {} and provider.options() == {}


def test_optsdir_defaults_beside_the_hostsdir(tmp_path):
    settings = config.from_options({"data_dir": str(tmp_path), "dhcp.mode": "hostsdir",
                                    "dhcp.hostsdir": str(tmp_path / "shared" / "hosts")})
    assert dhcp.optsdir(settings) == tmp_path / "shared" / "opts.d"
    provider = dhcp.make_provider(settings)
    assert provider.opts_directory == tmp_path / "shared" / "opts.d"
    snippet = dhcp.write_snippet(settings, "http://10.0.0.1:8080").read_text()
    assert f"dhcp-optsdir={tmp_path / 'shared' / 'opts.d'}" in snippet
    assert "dhcp-boot=tag:metalcast,tag:!metalcast-own,tag:!metalcast-pxe,tag:ipxe," \
           "http://10.0.0.1:8080/boot.ipxe" in snippet


def test_optsdir_must_not_be_the_hostsdir(tmp_path):
    same = config.from_options({"data_dir": str(tmp_path), "dhcp.mode": "hostsdir",
                                "dhcp.hostsdir": str(tmp_path / "d"),
                                "dhcp.optsdir": str(tmp_path / "d")})
    with pytest.raises(errors.ConfigError, match="optsdir must differ"):
        dhcp.make_provider(same)
