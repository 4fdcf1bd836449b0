"""Boot service per conductor: two ``metalcast serve`` conductors on one PostgreSQL,
each with its own TFTP and HTTP boot servers (127.0.0.2 and 127.0.0.3) and roots,
both writing DHCP entries into one shared ``dhcp-hostsdir``/``dhcp-optsdir`` that a
real dnsmasq reads (in a network namespace, busybox udhcpc as the NIC).

Nodes network-booting their ramdisk ("clean wait": ipxe and pxe boot, direct deploy,
fake power) get their per-MAC configs from their own conductor (real curl and tftp
clients; the other conductor has none) and a DHCP answer naming that conductor's boot
server. The owner of one is SIGKILLed: after the takeover the survivor serves both
nodes' configs and dnsmasq names the survivor. Needs root; every process is stopped
by PID.
"""
from __future__ import annotations

import signal
import subprocess

import pytest

from tests.functional.conftest import start_server, stop_server
from tests.functional.dhcp_peers import DhcpLab, ExternalDnsmasq
from tests.functional.helpers import WAIT, api_call, mac, provision, unique, wait_node
from tests.functional.netboot_peers import curl, require
from tests.functional.test_conductors import cluster_db  # noqa: F401 - a fixture
from tests.functional.test_netboot import HTTP_RE, TFTP_RE
from tests.waiting import wait_until

#: conductor name -> the address its boot servers listen on and DHCP names.
BOOT = {"boot-c1": "127.0.0.2", "boot-c2": "127.0.0.3"}
MEMBERSHIP = {"heartbeat_interval": 1, "heartbeat_timeout": 10,
              "hash_ring_reset_interval": 1, "check_provision_state_interval": 1}
IPXE_USER_CLASS = "77:69505845"


@pytest.fixture
def cluster(cluster_db, tmp_path):  # noqa: F811 - the fixture imported above
    """({name: server}, DhcpLab, dnsmasq): the conductors and the shared dnsmasq."""
    shared = tmp_path / "dhcp-shared"
    lab = DhcpLab(tmp_path)
    servers, dnsmasq = {}, None
    try:
        for name, address in BOOT.items():
            server = start_server(tmp_path / name, {
                "database": {"connection": cluster_db},
                "conductor": {"host": name, **MEMBERSHIP},
                "pxe": {"enabled": "true", "tftp_host": address, "http_host": address,
                        "tftp_port": 0, "http_port": 0, "deploy_kernel": "agent/vmlinuz",
                        "deploy_ramdisk": "agent/initramfs"},
                "dhcp": {"mode": "hostsdir", "hostsdir": shared / "hosts.d"}})
            server.tftp = TFTP_RE.search(server.output()).group(1)
            server.http = HTTP_RE.search(server.output()).group(1)
            agent = server.data_dir / "httpboot" / "agent"
            agent.mkdir(parents=True)
            (agent / "vmlinuz").write_bytes(b"kernel\n" * 100)
            (agent / "initramfs").write_bytes(b"ramdisk\n" * 100)
            servers[name] = server
        snippet = servers["boot-c1"].data_dir / "dhcp" / "metalcast-dnsmasq.conf"
        assert f"dhcp-optsdir={shared / 'opts.d'}" in snippet.read_text()
        dnsmasq = ExternalDnsmasq(lab, tmp_path, snippet)
        yield servers, lab, dnsmasq
    finally:
        if dnsmasq is not None:
            dnsmasq.close()
        for server in servers.values():
            stop_server(server.process)
        lab.close()


def booting_node(server, boot_interface: str, spare: dict | None = None) -> tuple[str, str]:
    """A node in "clean wait" (its ramdisk config live) with one port: (uuid, MAC).
    ``spare``, when given, is told the MAC and UUID of a second port."""
    address = mac()
    node = api_call(server.url, "POST", "/v1/nodes", {
        "name": unique("bootsrv"), "driver": "fake-hardware", "deploy_interface": "direct",
        "boot_interface": boot_interface, "automated_clean": True}, ok=(201,))
    for one in [address] + ([mac()] if spare is not None else []):
        port = api_call(server.url, "POST", "/v1/ports", {"node_uuid": node["uuid"],
                                                          "address": one}, ok=(201,))
        if one != address and spare is not None:
            spare.update(address=one, uuid=port["uuid"])
    provision(server.url, node["uuid"], "manage", "manageable")
    provision(server.url, node["uuid"], "provide", "clean wait")
    return node["uuid"], address


def per_mac_config(server, boot_interface: str, address: str, out) -> str | None:
    """The node's per-MAC config as its firmware fetches it from ``server`` (None: not
    there): iPXE's script with curl over HTTP, PXELINUX's with the tftp-hpa client."""
    hexhyp = address.replace(":", "-")
    if boot_interface == "ipxe":
        got = curl("-f", "-o", "-", f"{server.http}/ipxe/{hexhyp}.ipxe")
        return got.stdout.decode() if got.returncode == 0 else None
    host, port = server.tftp.removeprefix("tftp://").rsplit(":", 1)
    got = subprocess.run([require("tftp"), "-m", "binary", host, port, "-c", "get",
                          f"pxelinux.cfg/01-{hexhyp}", str(out)],
                         capture_output=True, text=True, timeout=30)
    return out.read_text() if out.exists() and out.stat().st_size else None


def answer(lab, address: str, *options: str) -> tuple[str, str]:
    """(next-server, boot file) of dnsmasq's answer to ``address``."""
    lease = lab.dhcp(address, *options)
    assert lease is not None, f"no DHCP answer for {address}"
    return lease.get("siaddr", ""), lease.get("boot_file", "")


def owner(server, uuid: str) -> str:
    return api_call(server.url, "GET", f"/v1/nodes/{uuid}")["conductor"]


def test_each_conductor_serves_its_nodes_and_the_survivor_takes_over(cluster, tmp_path):
    servers, lab, dnsmasq = cluster
    c1 = servers["boot-c1"]
    wait_until(lambda: {c["hostname"] for c in api_call(c1.url, "GET", "/v1/conductors")[
        "conductors"] if c["alive"]} == set(BOOT), 60, 0.2, "both conductors registered")
    spare: dict = {}
    nodes = {kind: booting_node(c1, kind, spare if kind == "ipxe" else None)
             for kind in ("ipxe", "pxe")}
    owners = {kind: owner(c1, uuid) for kind, (uuid, _) in nodes.items()}

    for kind, (uuid, address) in nodes.items():
        mine = servers[owners[kind]]
        other = next(s for name, s in servers.items() if name != owners[kind])
        config = per_mac_config(mine, kind, address, tmp_path / f"{kind}-before")
        assert config is not None and uuid in config, mine.output()
        assert per_mac_config(other, kind, address, tmp_path / f"{kind}-other") is None
        if kind == "ipxe":           # the kernel it names comes from its conductor too
            assert f"{mine.http}/agent/vmlinuz" in config
    server_ip, url = answer(lab, nodes["ipxe"][1], IPXE_USER_CLASS)
    assert (server_ip, url) == (BOOT[owners["ipxe"]], f"{servers[owners['ipxe']].http}"
                                                      "/boot.ipxe"), dnsmasq.log.read_text()
    assert answer(lab, nodes["ipxe"][1]) == (BOOT[owners["ipxe"]], "undionly.kpxe")
    assert answer(lab, nodes["pxe"][1]) == (BOOT[owners["pxe"]], "pxelinux.0")

    # A port deleted through the other conductor: the row is written there, the boot
    # side (the MAC's script, its DHCP entry) is done by the node's conductor.
    mine = servers[owners["ipxe"]]
    other = next(s for name, s in servers.items() if name != owners["ipxe"])
    assert per_mac_config(mine, "ipxe", spare["address"], tmp_path / "spare") is not None
    api_call(other.url, "DELETE", f"/v1/ports/{spare['uuid']}", ok=(204,))
    wait_until(lambda: per_mac_config(mine, "ipxe", spare["address"], tmp_path / "x") is None,
               WAIT, 0.2, "the deleted port's script gone from the node's conductor")
    gone = tmp_path / "dhcp-shared" / "hosts.d" / spare["address"].replace(":", "-")
    # The script goes first, then the entry is rewritten: wait for the entry too.
    wait_until(lambda: "set:metalcast-released" in gone.read_text(), WAIT, 0.2,
               "the deleted port's DHCP entry released")
    assert f"handed to conductor {owners['ipxe']}" in other.output()
    assert per_mac_config(mine, "ipxe", nodes["ipxe"][1], tmp_path / "kept") is not None

    victim_name = owners["ipxe"]
    victim = servers[victim_name]
    survivor_name = next(name for name in BOOT if name != victim_name)
    survivor = servers[survivor_name]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)

    hosts = tmp_path / "dhcp-shared" / "hosts.d"

    def taken_over():   # the ring names the survivor and its entries name its server
        return all(owner(survivor, uuid) == survivor_name and
                   f" server {BOOT[survivor_name]}\n" in
                   (hosts / address.replace(":", "-")).read_text()
                   for uuid, address in nodes.values())
    wait_until(taken_over, WAIT, 0.5, f"{survivor_name} to take over {victim_name}'s nodes")
    taken = nodes["ipxe"][0]
    # Logged once take_over has written the files seen above (and read from the pipe by
    # a thread of the test): it may come a moment after them.
    recreated = f"Node {taken}: boot configuration re-created on {survivor_name} (was " \
                f"{victim_name})"
    wait_until(lambda: recreated in survivor.output(), WAIT, 0.2,
               lambda: f"{recreated!r} in the survivor's log:\n{survivor.output()}")

    for kind, (uuid, address) in nodes.items():
        config = per_mac_config(survivor, kind, address, tmp_path / f"{kind}-after")
        assert config is not None and uuid in config, survivor.output()
        # (the takeover holds the node's lock until just after that log line)
        node = wait_node(survivor.url, uuid, lambda n: n["reservation"] is None,
                         "unlocked after the takeover")
        assert node["provision_state"] == "clean wait", node
    new_url = f"{survivor.http}/boot.ipxe"
    assert answer(lab, nodes["ipxe"][1], IPXE_USER_CLASS) == (BOOT[survivor_name], new_url), \
        dnsmasq.log.read_text()
    assert answer(lab, nodes["ipxe"][1]) == (BOOT[survivor_name], "undionly.kpxe")
    assert answer(lab, nodes["pxe"][1]) == (BOOT[survivor_name], "pxelinux.0")
    assert dnsmasq.process.poll() is None
