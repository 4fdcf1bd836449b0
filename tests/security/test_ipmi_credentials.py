"""IPMI credentials are checked for every node, not once per BMC.

The attack: the driver kept one session per BMC address and reused it whatever the
node's credentials said, so a second node enrolled on the same BMC with a wrong
password passed ``manage`` and got full power control; a password changed on the BMC
went unnoticed while the old session lived. Replayed here against a real ``metalcast
serve`` and the virtual BMC (virtlab.bmc, a separate process on 127.0.0.1); the real
ipmitool checks what the BMC itself says.
"""
from __future__ import annotations

import pytest

from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import api_call, provision, unique, wait_node
from tests.functional.ipmi_peers import ipmitool
from tests.functional.tools import require
from virtlab.launcher import start_bmcs, stop_bmcs

USERNAME, PASSWORD = "admin", "pw-right-4d1c"
#: Small spacing; a command bound that leaves pyghmi room to notice a dropped session
#: (it retries ~8 s before it gives up on one); short retries.
IPMI = {"min_command_interval": 0.05, "command_timeout": 30, "command_retry_timeout": 2,
        "power_state_timeout": 10}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require("ipmitool")
    # No periodic power sync: only the requests of the test talk to the BMC.
    server = start_server(tmp_path_factory.mktemp("ipmi-creds"), {
        "conductor": {"host": "security-ipmi", "sync_power_state_interval": 0},
        "ipmi": IPMI})
    yield server
    stop_server(server.process)


@pytest.fixture
def bmc(tmp_path):
    process = start_bmcs(tmp_path / "bmc", count=1, username=USERNAME, password=PASSWORD)
    yield process
    stop_bmcs(process)


def _enroll(url: str, port: int, password: str) -> str:
    node = api_call(url, "POST", "/v1/nodes", {
        "driver": "ipmi", "name": unique("creds"), "boot_interface": "fake",
        "deploy_interface": "fake",
        "driver_info": {"ipmi_address": "127.0.0.1", "ipmi_port": port,
                        "ipmi_username": USERNAME, "ipmi_password": password}}, ok=(201,))
    return node["uuid"]


def _power(url: str, uuid: str, target: str) -> dict:
    api_call(url, "PUT", f"/v1/nodes/{uuid}/states/power", {"target": target}, ok=(202,))
    return wait_node(url, uuid, lambda n: n["target_power_state"] is None
                     and n["reservation"] is None, "done with the power request")


def _bmc_power(port: int, password: str = PASSWORD) -> str:
    result = ipmitool(port, "power", "status", username=USERNAME, password=password)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_second_node_with_a_wrong_password_gets_nothing(server, bmc):
    port = bmc.ports[0]
    owner = _enroll(server.url, port, PASSWORD)
    assert provision(server.url, owner, "manage", "manageable")["last_error"] is None
    # The owner's session to the BMC is up now; the attacker's node points at it.
    intruder = _enroll(server.url, port, "guessed-wrong")
    node = provision(server.url, intruder, "manage", "enroll")
    assert "ipmi_password" in node["last_error"] and "rejected" in node["last_error"]
    node = _power(server.url, intruder, "power on")
    assert "rejected the password" in node["last_error"]
    assert node["power_state"] != "power on"
    assert bmc.state(port).power == "off"
    assert _bmc_power(port) == "Chassis Power is off"
    # The rejected logins took nothing from the owner: its commands still work.
    node = _power(server.url, owner, "power on")
    assert node["last_error"] is None and node["power_state"] == "power on"
    assert _bmc_power(port) == "Chassis Power is on"


def test_password_changed_on_the_bmc_is_noticed(server, tmp_path):
    bmc = start_bmcs(tmp_path / "bmc", count=1, username=USERNAME, password=PASSWORD)
    try:
        port = bmc.ports[0]
        uuid = _enroll(server.url, port, PASSWORD)
        provision(server.url, uuid, "manage", "manageable")      # a session is up now
        # The BMC's password is changed: it restarts with it (same port, same machine
        # state) and forgets every session; the node still has the old password.
        stop_bmcs(bmc)
        bmc = None          # stopped: never signal its (possibly reused) PID again
        bmc = start_bmcs(tmp_path / "bmc", ports=[port], username=USERNAME,
                         password="pw-changed-8e2a")
        assert ipmitool(port, "power", "status", username=USERNAME,
                        password=PASSWORD).returncode != 0    # the old one is refused
        node = _power(server.url, uuid, "power on")
        assert "rejected the password" in node["last_error"]
        assert _bmc_power(port, "pw-changed-8e2a") == "Chassis Power is off"
        # With the new password set on the node, it works again.
        api_call(server.url, "PATCH", f"/v1/nodes/{uuid}", [
            {"op": "replace", "path": "/driver_info/ipmi_password",
             "value": "pw-changed-8e2a"}])
        node = _power(server.url, uuid, "power on")
        assert node["last_error"] is None
        assert _bmc_power(port, "pw-changed-8e2a") == "Chassis Power is on"
    finally:
        if bmc is not None:
            stop_bmcs(bmc)
