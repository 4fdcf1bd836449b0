"""Network boot through a real ``metalcast serve``: TFTP and HTTP boot servers on
loopback, per-MAC configs present while a node deploys and gone once it is active,
fetched with curl over HTTP and tftp:// (and the tftp-hpa client)."""
from __future__ import annotations

import re
import socket
import subprocess

import pytest

from tests.functional.conftest import BIN_DIR, _clean_env, _write_config, start_server, stop_server
from tests.functional.helpers import api_call, mac, provision, unique, wait_node
from tests.functional.netboot_peers import curl, require, require_file
from tests.waiting import wait_until

TFTP_RE = re.compile(r"metalcast TFTP boot server on (tftp://\S+)/ ")
HTTP_RE = re.compile(r"metalcast HTTP boot server on (http://\S+)/ ")
KERNEL, RAMDISK = b"fake kernel image\n" * 1000, b"fake ramdisk\n" * 5000


@pytest.fixture(scope="module")
def boot_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("netboot"), {"pxe": {
        "enabled": "true", "tftp_port": 0, "http_port": 0,
        "deploy_kernel": "agent/vmlinuz", "deploy_ramdisk": "agent/initramfs",
        "kernel_append_params": "console=ttyS0 ipa-debug=1"}})
    (server.data_dir / "httpboot" / "agent").mkdir()
    (server.data_dir / "httpboot" / "agent" / "vmlinuz").write_bytes(KERNEL)
    (server.data_dir / "httpboot" / "agent" / "initramfs").write_bytes(RAMDISK)
    output = server.output()
    server.tftp = TFTP_RE.search(output).group(1)
    server.http = HTTP_RE.search(output).group(1)
    yield server
    stop_server(server.process)


def hexhyp(address: str) -> str:
    return address.replace(":", "-")


def enrol(url, boot_interface, **extra):
    address = mac()
    node = api_call(url, "POST", "/v1/nodes", {
        "name": unique("pxe"), "driver": "fake-hardware", "boot_interface": boot_interface,
        **extra}, ok=(201,))
    api_call(url, "POST", "/v1/ports", {"address": address, "node_uuid": node["uuid"]},
             ok=(201,))
    provision(url, node["uuid"], "manage", "manageable")
    provision(url, node["uuid"], "provide", "available")
    api_call(url, "PATCH", f"/v1/nodes/{node['uuid']}",
             [{"op": "add", "path": "/driver_info/fake_delay", "value": 3}])
    return node["uuid"], address


def start_deploy(url, uuid):
    api_call(url, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "active"},
             ok=(202,))
    wait_node(url, uuid, lambda n: n["provision_state"] == "deploying", "deploying")


def wait_active(url, uuid):
    wait_node(url, uuid, lambda n: n["provision_state"] == "active" and n["reservation"] is None,
              "active")


def wait_for(fetch, what, timeout=30):
    last = []

    def fetched():
        last[:] = [fetch()]
        return last[0] if last[0].returncode == 0 else None
    return wait_until(fetched, timeout, 0.1, lambda: f"{what}: {last[0].stderr.decode()}")


def test_serve_prints_boot_urls_and_serves_generic_files(boot_server):
    assert boot_server.tftp.startswith("tftp://127.0.0.1:")
    boot_ipxe = curl("-f", f"{boot_server.http}/boot.ipxe").stdout.decode()
    assert boot_ipxe.startswith("#!ipxe\n")
    assert f"chain --autofree {boot_server.http}/ipxe/${{mac:hexhyp}}.ipxe" in boot_ipxe
    assert curl("-f", f"{boot_server.tftp}/boot.ipxe").stdout.decode() == boot_ipxe
    loader = require_file("/usr/lib/ipxe/undionly.kpxe").read_bytes()
    fetched = curl("-f", "--tftp-blksize", "1432", f"{boot_server.tftp}/undionly.kpxe").stdout
    assert fetched == loader


def test_ipxe_script_exists_during_deploy_and_is_gone_when_active(boot_server, tmp_path):
    url = boot_server.url
    uuid, address = enrol(url, "ipxe")
    script_url = f"{boot_server.http}/ipxe/{hexhyp(address)}.ipxe"
    assert curl("-o", "/dev/null", "-w", "%{http_code}", script_url).stdout == b"404"
    start_deploy(url, uuid)
    script = wait_for(lambda: curl("-f", script_url), "per-MAC iPXE script").stdout.decode()
    assert script.startswith("#!ipxe\n")
    kernel_url = f"{boot_server.http}/agent/vmlinuz"
    assert (f"kernel --name kernel {kernel_url} initrd=ramdisk ipa-api-url={url} "
            f"console=ttyS0 ipa-debug=1 BOOTIF=01-{hexhyp(address)} || goto retry") in script
    # What iPXE would do next: fetch kernel and ramdisk from the URLs in the script.
    ramdisk_url = re.search(r"initrd --name ramdisk (\S+)", script).group(1)
    assert curl("-f", kernel_url).stdout == KERNEL
    assert curl("-f", ramdisk_url).stdout == RAMDISK
    wait_active(url, uuid)
    assert curl("-o", "/dev/null", "-w", "%{http_code}", script_url).stdout == b"404"
    assert not (boot_server.data_dir / "httpboot" / "ipxe" / f"{hexhyp(address)}.ipxe").exists()


def test_pxelinux_config_over_tftp_during_deploy(boot_server, tmp_path):
    url = boot_server.url
    uuid, address = enrol(url, "pxe")
    cfg_url = f"{boot_server.tftp}/pxelinux.cfg/01-{hexhyp(address)}"
    start_deploy(url, uuid)
    config = wait_for(lambda: curl("-f", cfg_url), "PXELINUX config over TFTP").stdout.decode()
    assert "KERNEL agent/vmlinuz" in config
    assert f"APPEND initrd=agent/initramfs ipa-api-url={url} console=ttyS0" in config
    # The tftp-hpa client (512-byte blocks, as old PXE ROMs) reads the same file.
    port = boot_server.tftp.rsplit(":", 1)[1]
    out = tmp_path / "cfg"
    got = subprocess.run([require("tftp"), "-m", "binary", "127.0.0.1", port, "-c", "get",
                          f"pxelinux.cfg/01-{hexhyp(address)}", str(out)],
                         capture_output=True, text=True, timeout=30)
    assert out.read_text() == config, got.stdout + got.stderr
    kernel = curl("-f", f"{boot_server.tftp}/agent/vmlinuz").stdout
    assert kernel == KERNEL  # linked into the TFTP root for PXELINUX
    wait_active(url, uuid)
    assert curl("-f", cfg_url).returncode != 0  # gone: TFTP "file not found"


def test_grub_config_for_uefi_nodes(boot_server):
    url = boot_server.url
    uuid, address = enrol(url, "pxe", properties={"capabilities": "boot_mode:uefi"})
    cfg_url = f"{boot_server.tftp}/grub/grub.cfg-01-{hexhyp(address)}"
    start_deploy(url, uuid)
    config = wait_for(lambda: curl("-f", cfg_url), "GRUB config over TFTP").stdout.decode()
    assert "linux /agent/vmlinuz ipa-api-url=" in config and "initrd /agent/initramfs" in config
    wait_active(url, uuid)
    assert curl("-f", cfg_url).returncode != 0


def test_deploy_refused_when_boot_config_is_unsafe(boot_server):
    url = boot_server.url
    uuid, address = enrol(url, "ipxe")
    api_call(url, "PATCH", f"/v1/nodes/{uuid}", [
        {"op": "add", "path": "/driver_info/kernel_append_params",
         "value": "console=ttyS0 ${root_password}"}])
    response = api_call(url, "PUT", f"/v1/nodes/{uuid}/states/provision",
                        {"target": "active"}, ok=(400,))
    assert "kernel command line" in response["error_message"]
    node = api_call(url, "GET", f"/v1/nodes/{uuid}")
    assert node["provision_state"] == "available"
    assert not (boot_server.data_dir / "httpboot" / "ipxe" / f"{hexhyp(address)}.ipxe").exists()
    validation = api_call(url, "GET", f"/v1/nodes/{uuid}/validate")
    assert validation["boot"]["result"] is False


def _serve_expecting_failure(tmp_path, sections) -> tuple[int, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = _write_config(tmp_path, sections)
    result = subprocess.run(
        [str(BIN_DIR / "metalcast"), "serve", "--host", "127.0.0.1", "--port", "0",
         "--data-dir", str(tmp_path), "--config-file", str(config)],
        capture_output=True, text=True, timeout=60, env=_clean_env())
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("kind", ["http", "tftp"])
def test_port_in_use_stops_serve_with_a_clear_message(tmp_path, kind):
    sock_type = socket.SOCK_STREAM if kind == "http" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, sock_type) as busy:
        busy.bind(("127.0.0.1", 0))
        if kind == "http":
            busy.listen()
        port = busy.getsockname()[1]
        ports = {"tftp_port": 0, "http_port": 0, f"{kind}_port": port}
        code, output = _serve_expecting_failure(tmp_path / kind, {"pxe": ports})
    assert code != 0
    assert f"cannot listen for {kind.upper()} boot on 127.0.0.1 port {port}" in output
    assert f"[pxe] {kind}_port" in output and "[pxe] enabled = false" in output
    assert "metalcast API listening" not in output
