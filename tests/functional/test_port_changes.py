"""A port that changes or goes away takes its boot files and DHCP entry with it.

A real ``metalcast serve`` (TFTP and HTTP boot servers on loopback, ``[dhcp] mode =
hostsdir``) and a real dnsmasq reading that hostsdir in a network namespace
(tests/functional/dhcp_peers.py), with busybox udhcpc as the NIC. Nodes are moved to
"clean wait" (ipxe/pxe boot, direct deploy: the ramdisk config is written and stays
while the agent is awaited). Then a port's MAC is changed or the port deleted through
the REST API or the ``baremetal`` CLI, and the real clients show the old MAC gets
nothing (HTTP 404, TFTP file not found, no DHCP offer) while the node's other and new
MACs still boot. Needs root (namespaces); every process is stopped by PID.
"""
from __future__ import annotations

import subprocess

import pytest

from tests.functional.conftest import start_server, stop_server
from tests.functional.dhcp_peers import SERVER_IP, DhcpLab, ExternalDnsmasq
from tests.functional.helpers import api_call, mac, provision, unique
from tests.functional.netboot_peers import curl, require
from tests.functional.test_baremetal_cli import baremetal
from tests.functional.test_netboot import HTTP_RE, TFTP_RE

#: udhcpc -x option announcing x86-64 UEFI firmware (client arch 9).
UEFI_X64 = "93:0009"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(server, DhcpLab, dnsmasq): metalcast serve plus the dnsmasq that reads its hostsdir."""
    work = tmp_path_factory.mktemp("port-changes")
    dhcp_lab = DhcpLab(work)
    server = dnsmasq = None
    try:
        server = start_server(work / "serve", {
            "pxe": {"enabled": "true", "tftp_port": 0, "http_port": 0,
                    "deploy_kernel": "agent/vmlinuz", "deploy_ramdisk": "agent/initramfs"},
            "dhcp": {"mode": "hostsdir", "boot_server": SERVER_IP}})
        output = server.output()
        server.tftp = TFTP_RE.search(output).group(1)
        server.http = HTTP_RE.search(output).group(1)
        agent = server.data_dir / "httpboot" / "agent"
        agent.mkdir(parents=True)
        (agent / "vmlinuz").write_bytes(b"kernel\n" * 100)
        (agent / "initramfs").write_bytes(b"ramdisk\n" * 100)
        snippet = server.data_dir / "dhcp" / "metalcast-dnsmasq.conf"
        assert f"dhcp-hostsdir={server.data_dir / 'dhcp' / 'hosts.d'}" in snippet.read_text()
        dnsmasq = ExternalDnsmasq(dhcp_lab, work, snippet)
        yield server, dhcp_lab, dnsmasq
    finally:
        if dnsmasq is not None:
            dnsmasq.close()
        if server is not None:
            stop_server(server.process)
        dhcp_lab.close()


def booting_node(server, boot_interface: str, macs: list[str]) -> tuple[str, list[str]]:
    """A node in "clean wait" with one pxe-enabled port per MAC; (uuid, port uuids)."""
    node = api_call(server.url, "POST", "/v1/nodes", {
        "name": unique("portchg"), "driver": "fake-hardware", "deploy_interface": "direct",
        "boot_interface": boot_interface, "automated_clean": True}, ok=(201,))
    ports = [api_call(server.url, "POST", "/v1/ports", {"node_uuid": node["uuid"],
                                                        "address": m}, ok=(201,))["uuid"]
             for m in macs]
    provision(server.url, node["uuid"], "manage", "manageable")
    provision(server.url, node["uuid"], "provide", "clean wait")
    return node["uuid"], ports


def ipxe_status(server, address: str) -> tuple[str, str]:
    """(HTTP status, body) of the per-MAC iPXE script, fetched as iPXE would."""
    url = f"{server.http}/ipxe/{address.replace(':', '-')}.ipxe"
    result = curl("-o", "-", "-w", "\n%{http_code}", url)
    body, _, status = result.stdout.decode().rpartition("\n")
    return status, body


def tftp_get(server, path: str, out) -> subprocess.CompletedProcess:
    """The tftp-hpa client (512-byte blocks, like a PXE ROM) fetching ``path``."""
    port = server.tftp.rsplit(":", 1)[1]
    return subprocess.run([require("tftp"), "-m", "binary", "127.0.0.1", port, "-c", "get",
                           path, str(out)], capture_output=True, text=True, timeout=30)


def offered(dhcp_lab, address: str, *options: str, tries: int = 8) -> str | None:
    """The boot file dnsmasq offers ``address`` (None: it offered no lease at all)."""
    lease = dhcp_lab.dhcp(address, *options, tries=tries)
    return None if lease is None else lease.get("boot_file")


def test_changing_a_mac_over_rest_moves_ipxe_script_and_dhcp_entry(lab):
    server, dhcp_lab, dnsmasq = lab
    old, other, new = mac(), mac(), mac()
    uuid, (port, _) = booting_node(server, "ipxe", [old, other])
    status, script = ipxe_status(server, old)
    assert status == "200" and f"BOOTIF=01-{old.replace(':', '-')}" in script
    assert offered(dhcp_lab, old) == "undionly.kpxe", dnsmasq.log.read_text()

    changed = api_call(server.url, "PATCH", f"/v1/ports/{port}",
                       [{"op": "replace", "path": "/address", "value": new}])
    assert changed["address"] == new

    assert ipxe_status(server, old)[0] == "404"
    status, script = ipxe_status(server, new)
    assert status == "200" and f"BOOTIF=01-{new.replace(':', '-')}" in script
    assert uuid in script
    assert ipxe_status(server, other)[0] == "200"
    # dnsmasq (inotify, no restart) no longer answers the old MAC; the new one boots.
    assert offered(dhcp_lab, old, tries=2) is None
    assert offered(dhcp_lab, new, UEFI_X64) == "ipxe.efi", dnsmasq.log.read_text()
    assert offered(dhcp_lab, other) == "undionly.kpxe"
    hosts = server.data_dir / "dhcp" / "hosts.d"
    assert "set:metalcast\n" not in (hosts / old.replace(":", "-")).read_text()
    assert f"# metalcast node {uuid}" in (hosts / new.replace(":", "-")).read_text()
    assert f"Node {uuid}: {old} no longer network-boot it" in server.output()
    assert dnsmasq.process.poll() is None


def test_deleting_a_port_removes_its_pxelinux_config_over_tftp(lab, tmp_path):
    server, dhcp_lab, _ = lab
    gone, kept = mac(), mac()
    uuid, (port, _) = booting_node(server, "pxe", [gone, kept])
    path = f"pxelinux.cfg/01-{gone.replace(':', '-')}"
    got = tftp_get(server, path, tmp_path / "before")
    assert "KERNEL agent/vmlinuz" in (tmp_path / "before").read_text(), got.stdout + got.stderr
    assert curl("-f", f"{server.tftp}/{path}").returncode == 0
    assert offered(dhcp_lab, gone) == "pxelinux.0"

    api_call(server.url, "DELETE", f"/v1/ports/{port}", ok=(204,))

    missing = curl("-f", f"{server.tftp}/{path}")
    assert missing.returncode == 68, missing.stderr  # curl: TFTP file not found
    after = tftp_get(server, path, tmp_path / "after")
    assert "File not found" in after.stdout + after.stderr
    kept_path = f"pxelinux.cfg/01-{kept.replace(':', '-')}"
    assert "KERNEL agent/vmlinuz" in curl("-f", f"{server.tftp}/{kept_path}").stdout.decode()
    assert offered(dhcp_lab, gone, tries=2) is None
    assert offered(dhcp_lab, kept) == "pxelinux.0"
    assert api_call(server.url, "GET", f"/v1/nodes/{uuid}")["provision_state"] == "clean wait"


def test_baremetal_cli_port_set_address_and_delete(lab):
    server, dhcp_lab, _ = lab
    old, new = mac(), mac()
    uuid, (port,) = booting_node(server, "ipxe", [old])
    assert ipxe_status(server, old)[0] == "200"
    baremetal(server, "port", "set", port, "--address", new)
    assert ipxe_status(server, old)[0] == "404" and ipxe_status(server, new)[0] == "200"
    refused = baremetal(server, "port", "set", port, "--pxe-disabled", check=False)
    assert refused.returncode != 0 and "connectivity attributes" in refused.stderr
    assert ipxe_status(server, new)[0] == "200"
    baremetal(server, "port", "delete", port)
    assert ipxe_status(server, new)[0] == "404"
    assert offered(dhcp_lab, new, tries=2) is None
    assert "cannot network-boot until a port is added" in server.output()


def test_active_node_refuses_a_new_mac_until_maintenance(lab):
    server, _, _ = lab
    node = api_call(server.url, "POST", "/v1/nodes", {"name": unique("portchg"),
                                                     "driver": "fake-hardware"}, ok=(201,))
    port = api_call(server.url, "POST", "/v1/ports", {"node_uuid": node["uuid"],
                                                      "address": mac()}, ok=(201,))
    provision(server.url, node["uuid"], "manage", "manageable")
    provision(server.url, node["uuid"], "provide", "available")
    provision(server.url, node["uuid"], "active", "active")
    body = [{"op": "replace", "path": "/address", "value": mac()}]
    refused = api_call(server.url, "PATCH", f"/v1/ports/{port['uuid']}", body, ok=(409,))
    assert "set the node into maintenance mode" in refused["error_message"].lower()
    assert api_call(server.url, "GET", f"/v1/ports/{port['uuid']}")["address"] == \
        port["address"]
    api_call(server.url, "PUT", f"/v1/nodes/{node['uuid']}/maintenance", {}, ok=(202,))
    assert api_call(server.url, "PATCH", f"/v1/ports/{port['uuid']}", body)["address"] == \
        body[0]["value"]
