"""What an API user can make the boot servers publish, replayed on a running appliance.

The attacks, each through the REST API of a ``metalcast serve`` with its TFTP and
HTTP boot servers on loopback:

- ``driver_info/deploy_kernel = http://user:password@host/k``: the URL, password
  included, was written into the node's iPXE script, which the HTTP boot server hands
  to anyone who asks for ``ipxe/<mac>.ipxe``. Now validate says why not, a deploy is
  refused with 400 (the credentials not repeated), nothing is written; a URL is
  refused rather than stripped, because a stripped URL would fail later on the
  machine with no explanation.
- a second ``ipa-api-url=`` (or ``BOOTIF=``) in ``kernel_append_params``: it came
  after metalcast's own, and the agent keeps the last one, so the agent would have
  looked up (and heartbeated with its token to) another API. Now refused.
- a GRUB (UEFI ``pxe``) kernel URL with a query string: GRUB's ``(http,host)/path``
  device lost the query and fetched another file. Now refused.
- the same values in ``[pxe]`` stop ``metalcast serve`` at start with the option named.
"""
from __future__ import annotations

import re
import subprocess

import pytest

from tests.functional.conftest import (
    BIN_DIR,
    _clean_env,
    _write_config,
    start_server,
    stop_server,
)
from tests.functional.helpers import api_call, mac, provision, unique
from tests.functional.netboot_peers import curl

HTTP_RE = re.compile(r"metalcast HTTP boot server on (http://\S+)/ ")
TFTP_RE = re.compile(r"metalcast TFTP boot server on (tftp://\S+)/ ")
PASSWORD = "s3cr3t-pw"


@pytest.fixture(scope="module")
def boot_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("injection"), {"pxe": {
        "enabled": "true", "tftp_port": 0, "http_port": 0,
        "deploy_kernel": "http://10.0.0.1/k", "deploy_ramdisk": "http://10.0.0.1/r"}})
    output = server.output()
    server.http, server.tftp = HTTP_RE.search(output).group(1), TFTP_RE.search(output).group(1)
    yield server
    stop_server(server.process)


def enrol(url: str, boot_interface: str, driver_info: dict, **extra) -> tuple[str, str]:
    address = mac()
    node = api_call(url, "POST", "/v1/nodes", {
        "name": unique("inject"), "driver": "fake-hardware",
        "boot_interface": boot_interface, **extra}, ok=(201,))
    api_call(url, "POST", "/v1/ports", {"address": address, "node_uuid": node["uuid"]},
             ok=(201,))
    provision(url, node["uuid"], "manage", "manageable")
    provision(url, node["uuid"], "provide", "available")
    api_call(url, "PATCH", f"/v1/nodes/{node['uuid']}", [
        {"op": "add", "path": f"/driver_info/{key}", "value": value}
        for key, value in driver_info.items()])
    return node["uuid"], address


def refused_everywhere(server, uuid: str, address: str, why: str) -> str:
    """validate says no, a deploy is a 400 that changes nothing, no boot file exists."""
    url = server.url
    validation = api_call(url, "GET", f"/v1/nodes/{uuid}/validate")
    assert validation["boot"]["result"] is False and why in validation["boot"]["reason"]
    answer = api_call(url, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "active"},
                      ok=(400,))
    assert why in answer["error_message"]
    assert api_call(url, "GET", f"/v1/nodes/{uuid}")["provision_state"] == "available"
    hexhyp = address.replace(":", "-")
    for fetch in (f"{server.http}/ipxe/{hexhyp}.ipxe",
                  f"{server.tftp}/pxelinux.cfg/01-{hexhyp}",
                  f"{server.tftp}/grub/grub.cfg-01-{hexhyp}"):
        assert curl("-f", "-o", "/dev/null", fetch).returncode != 0, fetch
    written = [p for root in ("httpboot", "tftpboot")
               for p in (server.data_dir / root).rglob(f"*{hexhyp}*")]
    assert written == []
    return validation["boot"]["reason"] + answer["error_message"]


@pytest.mark.parametrize("key", ["deploy_kernel", "deploy_ramdisk"])
def test_a_url_with_credentials_is_refused_and_never_published(boot_server, key):
    uuid, address = enrol(boot_server.url, "ipxe",
                          {key: f"http://deployer:{PASSWORD}@10.0.0.1/agent"})
    messages = refused_everywhere(boot_server, uuid, address, "carries credentials")
    assert PASSWORD not in messages
    published = [p for root in ("httpboot", "tftpboot")
                 for p in (boot_server.data_dir / root).rglob("*") if p.is_file()]
    assert published and not [p for p in published if PASSWORD.encode() in p.read_bytes()]


@pytest.mark.parametrize("params, name", [
    ("console=ttyS0 ipa-api-url=http://10.6.6.6:6385", "ipa-api-url"),
    ("ipa_api_url=http://10.6.6.6:6385", "ipa_api_url"),
    ("BOOTIF=01-02-00-00-00-00-66", "BOOTIF"),
    ("initrd=http://10.6.6.6/evil", "initrd"),
])
def test_a_second_metalcast_parameter_is_refused(boot_server, params, name):
    uuid, address = enrol(boot_server.url, "ipxe", {"kernel_append_params": params})
    refused_everywhere(boot_server, uuid, address, f"must not set '{name}'")


def test_a_grub_url_with_a_query_string_is_refused(boot_server):
    uuid, address = enrol(boot_server.url, "pxe",
                          {"deploy_kernel": "http://10.0.0.1:8080/agent?v=2"},
                          properties={"capabilities": "boot_mode:uefi"})
    refused_everywhere(boot_server, uuid, address, "query string")


@pytest.mark.parametrize("option, value, why", [
    ("kernel_append_params", "nofb ipa-api-url=http://10.6.6.6:6385", "must not set"),
    ("deploy_kernel", f"http://deployer:{PASSWORD}@10.0.0.1/k", "carries credentials"),
])
def test_the_same_in_the_configuration_stops_serve(tmp_path, option, value, why):
    config = _write_config(tmp_path, {"pxe": {"enabled": "false", option: value},
                                      "patching": {"listen_port": 0}})
    done = subprocess.run([str(BIN_DIR / "metalcast"), "serve", "--host", "127.0.0.1",
                           "--port", "0", "--data-dir", str(tmp_path), "--config-file",
                           str(config)], capture_output=True, text=True, timeout=60,
                          env=_clean_env())
    output = done.stdout + done.stderr
    assert done.returncode != 0 and why in output and f"[pxe] {option}" in output, output
    assert PASSWORD not in output
