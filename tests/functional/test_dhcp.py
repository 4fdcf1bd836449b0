"""DHCP for network boot against a real dnsmasq and real DHCP clients (busybox udhcpc).

Everything runs inside network namespaces the tests create and delete
(tests/functional/dhcp_peers.py); dnsmasq is stopped by PID. Needs root.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conductor import config, errors
from conductor.netboot import dhcp
from conductor.netboot import dnsmasq as dhcp_dnsmasq
from tests.functional.dhcp_peers import (
    RANGE,
    SERVER_IP,
    DhcpLab,
    ExternalDnsmasq,
    require,
    wait_for,
)
from virtlab.process import stop

NODE_A = "8b1c4c38-8c68-4f7a-9f5e-3a2b1c0d9e8f"
NODE_B = "0f3d2c1b-aaaa-4bbb-8ccc-123456789abc"
MAC_A, MAC_B, MAC_UNKNOWN = "52:54:00:78:00:0a", "52:54:00:78:00:0b", "52:54:00:78:00:99"
HTTP_URL = f"http://{SERVER_IP}:8080"
IPXE_URL = f"{HTTP_URL}/boot.ipxe"
#: udhcpc -x options -> what the firmware announces.
BIOS, UEFI_BC, UEFI_X64 = (), ("93:0007",), ("93:0009",)
IPXE_USER_CLASS, IPXE_OPTION_175 = ("77:69505845",), ("175:b10101",)
#: Holds UDP port 67 without SO_REUSEADDR, so dnsmasq cannot bind it.
BIND_67 = ("import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
           "s.bind(('0.0.0.0', 67)); print('bound', flush=True); time.sleep(60)")


def settings(data_dir: Path, options: dict | None = None) -> config.Settings:
    base = {"data_dir": str(data_dir), "dhcp.mode": "managed", "dhcp.interface": "mcs0",
            "dhcp.range": RANGE, "dhcp.log_dhcp": True, "dhcp.ping": False}
    return config.from_options({**base, **(options or {})})


@pytest.fixture
def make_lab(tmp_path_factory):
    """Builds labs on demand; deletes their namespaces and stops their dnsmasqs."""
    closers = []

    def make():
        lab = DhcpLab(tmp_path_factory.mktemp("dhcplab"))
        closers.append(lab.close)
        return lab
    make.closers = closers
    yield make
    for close in reversed(closers):
        close()


def start_managed(make_lab, tmp_path: Path, options: dict | None = None):
    lab = make_lab()
    dnsmasq = dhcp_dnsmasq.ManagedDnsmasq(settings(tmp_path, options),
                                          netns=lab.server_ns, http_url=HTTP_URL)
    dnsmasq.start()
    make_lab.closers.append(dnsmasq.stop)
    return lab, dnsmasq, dhcp.make_provider(dnsmasq.settings)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One lab with the managed dnsmasq shared by the tests that only add entries."""
    lab = DhcpLab(tmp_path_factory.mktemp("dhcplab"))
    dnsmasq = dhcp_dnsmasq.ManagedDnsmasq(settings(tmp_path_factory.mktemp("data")),
                                          netns=lab.server_ns, http_url=HTTP_URL)
    try:
        dnsmasq.start()
        yield lab, dnsmasq, dhcp.make_provider(dnsmasq.settings)
    finally:
        dnsmasq.stop()
        lab.close()


def boot_file(lab, mac, options=(), tries=8) -> str | None:
    lease = lab.dhcp(mac, *options, tries=tries)
    return None if lease is None else lease.get("boot_file")


def test_unknown_mac_gets_nothing(served):
    lab, dnsmasq, _ = served
    assert lab.dhcp(MAC_UNKNOWN, tries=2) is None
    wait_for(lambda: f"DHCPDISCOVER(mcs0) {MAC_UNKNOWN} ignored" in dnsmasq.output(), 10,
             "dnsmasq to log the ignored DISCOVER")


def test_loader_follows_what_the_client_announces(served):
    lab, dnsmasq, provider = served
    provider.update(NODE_A, [MAC_A], "ipxe")
    lease = lab.dhcp(MAC_A)
    assert lease is not None, dnsmasq.output()
    assert (lease["boot_file"], lease["siaddr"]) == ("undionly.kpxe", SERVER_IP)
    assert dhcp.lease_addresses(dnsmasq.settings, [MAC_A]) == [lease["ip"]]
    expected = {UEFI_BC: "ipxe.efi", UEFI_X64: "ipxe.efi", IPXE_USER_CLASS: IPXE_URL,
                IPXE_USER_CLASS + UEFI_BC: IPXE_URL, IPXE_OPTION_175: IPXE_URL}
    got = {options: boot_file(lab, MAC_A, options) for options in expected}
    assert got == expected


def test_entries_change_without_restart(served):
    lab, dnsmasq, provider = served
    pid = dnsmasq.pid
    provider.update(NODE_A, [MAC_A], "pxe")
    assert boot_file(lab, MAC_A) == "pxelinux.0"
    assert boot_file(lab, MAC_A, UEFI_X64) == "grubx64.efi"
    assert boot_file(lab, MAC_A, IPXE_USER_CLASS) == "pxelinux.0"  # iPXE ROM, pxe interface
    provider.update(NODE_A, [MAC_A], "ipxe")
    assert boot_file(lab, MAC_A, UEFI_BC) == "ipxe.efi"
    assert dnsmasq.pid == pid and dnsmasq.process.poll() is None


def test_release_and_reenrol(served):
    lab, dnsmasq, provider = served
    provider.update(NODE_B, [MAC_B], "ipxe")
    assert boot_file(lab, MAC_B) == "undionly.kpxe"
    with pytest.raises(errors.InvalidParameter, match="MAC address"):
        provider.update(NODE_B, [MAC_B, f"{MAC_B},set:metalcast-pxe"], "ipxe")
    assert boot_file(lab, MAC_B) == "undionly.kpxe"     # the bad call changed nothing
    provider.remove(NODE_B)
    assert lab.dhcp(MAC_B, tries=2) is None
    provider.update(NODE_B, [MAC_B], "pxe")
    assert boot_file(lab, MAC_B) == "pxelinux.0"
    assert dnsmasq.process.poll() is None


def test_router_advertisement(served):
    """With IPv6 on the interface dnsmasq advertises the prefix, so iPXE does not stall."""
    lab, dnsmasq, _ = served
    conf = (dnsmasq.settings.data_path / "dhcp" / "dnsmasq.conf").read_text().splitlines()
    assert "enable-ra" in conf and "dhcp-range=::,constructor:mcs0,ra-only" in conf
    assert "router advertisement on fd78::, constructed for mcs0" in dnsmasq.output()
    addresses = wait_for(lab.client_ipv6, 20, "a SLAAC address on the client")
    assert all(a.startswith("fd78::") for a in addresses), addresses


def test_unknown_hosts_inspect(make_lab, tmp_path):
    lab, dnsmasq, provider = start_managed(make_lab, tmp_path, {"dhcp.unknown_hosts": "inspect",
                                           "dhcp.ipv6_ra": "off", "dhcp.ping": True})
    assert "enable-ra" not in (tmp_path / "dhcp" / "dnsmasq.conf").read_text()
    assert boot_file(lab, MAC_UNKNOWN) == "undionly.kpxe"
    assert boot_file(lab, MAC_UNKNOWN, IPXE_USER_CLASS) == IPXE_URL
    provider.update(NODE_A, [MAC_UNKNOWN], "pxe")
    assert boot_file(lab, MAC_UNKNOWN) == "pxelinux.0"
    provider.remove(NODE_A)                       # released: back to the inspection chain
    assert boot_file(lab, MAC_UNKNOWN, UEFI_BC) == "ipxe.efi"


def test_hostsdir_mode_feeds_an_existing_dnsmasq(make_lab, tmp_path):
    lab = make_lab()
    conf = settings(tmp_path, {"dhcp.mode": "hostsdir", "dhcp.interface": "",
                               "dhcp.boot_server": SERVER_IP})
    snippet = dhcp.write_snippet(conf, HTTP_URL)
    provider = dhcp.make_provider(conf)
    provider.update(NODE_A, [MAC_A], "ipxe")      # read when dnsmasq starts
    external = ExternalDnsmasq(lab, tmp_path, snippet)
    make_lab.closers.append(external.close)
    lease = lab.dhcp(MAC_A, *UEFI_BC)
    assert lease is not None, external.log.read_text()
    assert (lease["boot_file"], lease["siaddr"]) == ("ipxe.efi", SERVER_IP)
    provider.update(NODE_B, [MAC_B], "pxe")       # picked up through inotify
    assert boot_file(lab, MAC_B) == "pxelinux.0"
    assert lab.dhcp(MAC_UNKNOWN, tries=2) is None
    assert external.process.poll() is None


def test_startup_errors_are_clear(make_lab, tmp_path, monkeypatch):
    lab = make_lab()
    bad_iface = dhcp_dnsmasq.ManagedDnsmasq(settings(tmp_path, {"dhcp.interface": "nope0"}),
                                            netns=lab.server_ns, http_url=HTTP_URL)
    with pytest.raises(errors.ConfigError, match="interface nope0 does not exist"):
        bad_iface.start()
    off_subnet = settings(tmp_path, {"dhcp.range": "10.99.0.10,10.99.0.20"})
    with pytest.raises(errors.ConfigError, match="not on a subnet of mcs0 \\(10.78.0.0/24\\)"):
        dhcp_dnsmasq.ManagedDnsmasq(off_subnet, lab.server_ns, HTTP_URL).start()
    blocker = subprocess.Popen(["ip", "netns", "exec", lab.server_ns, sys.executable, "-c",
                                BIND_67], stdout=subprocess.PIPE, text=True)
    make_lab.closers.append(lambda: stop(blocker.pid, blocker))
    assert blocker.stdout.readline().strip() == "bound"
    busy = dhcp_dnsmasq.ManagedDnsmasq(settings(tmp_path / "b"), lab.server_ns, HTTP_URL)
    make_lab.closers.append(busy.stop)
    with pytest.raises(errors.DriverError,
                       match="dnsmasq exited with code 2: .*Address already in use"):
        busy.start()
    assert busy.process is None
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(errors.ConfigError, match="install the Debian package dnsmasq-base"):
        dhcp_dnsmasq.ManagedDnsmasq(settings(tmp_path), lab.server_ns, HTTP_URL).start()


def test_restart_stops_a_stale_dnsmasq(make_lab, tmp_path):
    """A dnsmasq left behind by a crashed metalcast (same config file) is replaced."""
    lab, stale, provider = start_managed(make_lab, tmp_path)
    provider.update(NODE_A, [MAC_A], "ipxe")
    provider.update(NODE_B, [MAC_B], "ipxe")
    provider.remove(NODE_B)
    fresh = dhcp_dnsmasq.ManagedDnsmasq(stale.settings, lab.server_ns, HTTP_URL)
    make_lab.closers.append(fresh.stop)
    fresh.start()
    assert stale.process.wait(10) is not None and fresh.process.poll() is None
    assert provider.entries() == {MAC_A: f"{MAC_A},set:metalcast"}  # released one purged
    assert boot_file(lab, MAC_A) == "undionly.kpxe"


def _serve(lab: DhcpLab, data_dir: Path, dhcp_options: dict) -> subprocess.Popen:
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = ["[pxe]", "tftp_port = 0", "http_port = 0", "[dhcp]"]
    lines += [f"{key} = {value}" for key, value in dhcp_options.items()]
    (data_dir / "test.conf").write_text("\n".join(lines) + "\n")
    metalcast = str(Path(sys.executable).parent / "metalcast")
    env = {k: v for k, v in os.environ.items() if not k.startswith("METALCAST_")}
    return subprocess.Popen(["ip", "netns", "exec", lab.server_ns, metalcast, "serve",
                             "--host", "127.0.0.1", "--port", "0", "--data-dir",
                             str(data_dir), "--config-file", str(data_dir / "test.conf")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def test_serve_runs_and_stops_its_dnsmasq(make_lab, tmp_path):
    """``metalcast serve`` with [dhcp] mode = managed, run inside the lab's namespace."""
    require("dnsmasq")
    lab = make_lab()
    process = _serve(lab, tmp_path / "serve", {"mode": "managed", "interface": "mcs0",
                                               "range": RANGE})
    make_lab.closers.append(lambda: process.poll() is None and process.kill())
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(process.stdout), daemon=True).start()
    wait_for(lambda: any("metalcast API listening" in line for line in output)
             or process.poll() is not None, 60, "metalcast serve to get ready")
    line = next((ln for ln in output if ln.startswith("metalcast DHCP: dnsmasq pid")), None)
    assert line is not None, "".join(output)
    pid = int(line.split()[4])
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"dnsmasq")
    provider = dhcp.make_provider(settings(tmp_path / "serve"))
    provider.update(NODE_A, [MAC_A], "ipxe")
    assert boot_file(lab, MAC_A, IPXE_USER_CLASS).endswith("/boot.ipxe")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert not Path(f"/proc/{pid}").exists(), "serve left its dnsmasq running"


def test_serve_refuses_a_missing_interface(make_lab, tmp_path):
    lab = make_lab()
    process = _serve(lab, tmp_path / "serve", {"mode": "managed", "interface": "nope0",
                                               "range": RANGE})
    out, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "interface nope0 does not exist" in out, out
