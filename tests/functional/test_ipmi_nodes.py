"""IPMI nodes end to end: a real ``metalcast serve`` drives virtual BMCs and ipmi_sim.

The API and conductor run as one child process, the BMCs as others (virtlab.bmc,
ipmi_sim); the test checks the BMC itself (state file, real ipmitool) to see what
the conductor did, and the node (last_error, reservation) to see how it reported it.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from tests.functional.conftest import start_server, stop_server
from tests.functional.helpers import api_call as _call
from tests.functional.helpers import provision as _provision
from tests.functional.helpers import unique
from tests.functional.helpers import wait_node as _wait
from tests.functional.ipmi_peers import PASSWORD, USERNAME, IpmiSim, free_port, ipmitool_ok
from tests.waiting import wait_until

WAIT = 60  # seconds; generous for a shared 2-core machine, never a timing assertion
#: Bounds far below the Ironic-like defaults, so fault tests end in seconds.
IPMI = {"min_command_interval": 0.05, "command_timeout": 4, "command_retry_timeout": 2,
        "power_state_timeout": 10}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("ipmi-serve"),
                          {"conductor": {"host": "ipmi-conductor"}, "ipmi": IPMI})
    yield server
    stop_server(server.process)


def _enroll(url, port, **info) -> str:
    driver_info = {"ipmi_address": "127.0.0.1", "ipmi_port": port,
                   "ipmi_username": USERNAME, "ipmi_password": PASSWORD, **info}
    # These tests exercise the BMC side; fake boot and deploy keep the agent out
    # (the ipmi type defaults to ipxe + direct, tested with the virtual lab).
    node = _call(url, "POST", "/v1/nodes", {"driver": "ipmi", "name": unique("ipmi"),
                                            "driver_info": driver_info,
                                            "boot_interface": "fake",
                                            "deploy_interface": "fake"}, ok=(201,))
    assert node["power_interface"] == "ipmitool" and node["provision_state"] == "enroll"
    return node["uuid"]


def _manage_fails(url, uuid) -> tuple[dict, float]:
    start = time.monotonic()
    node = _provision(url, uuid, "manage", "enroll")
    return node, time.monotonic() - start


def test_manage_verifies_the_bmc(server, bmc):
    uuid = _enroll(server.url, bmc.ports[0])
    node = _provision(server.url, uuid, "manage", "manageable")
    assert node["power_state"] == "power off" and node["last_error"] is None
    validation = _call(server.url, "GET", f"/v1/nodes/{uuid}/validate")
    assert validation["power"]["result"] and validation["management"]["result"]


def test_wrong_password_returns_to_enroll_naming_the_credentials(server, bmc):
    uuid = _enroll(server.url, bmc.ports[0], ipmi_password="not-the-password")
    node, elapsed = _manage_fails(server.url, uuid)
    assert "ipmi_password" in node["last_error"] and "rejected" in node["last_error"]
    assert node["reservation"] is None and elapsed < WAIT


def test_unreachable_bmc_returns_to_enroll_in_bounded_time(server):
    uuid = _enroll(server.url, free_port())          # nothing answers on that port
    node, elapsed = _manage_fails(server.url, uuid)
    assert "ipmi_address" in node["last_error"] and "ipmi_port" in node["last_error"]
    assert node["reservation"] is None and elapsed < WAIT


def test_bad_driver_info_is_refused_by_validate(server):
    uuid = _enroll(server.url, 70000)
    validation = _call(server.url, "GET", f"/v1/nodes/{uuid}/validate")
    assert not validation["power"]["result"] and "ipmi_port" in validation["power"]["reason"]
    node, _ = _manage_fails(server.url, uuid)
    assert "ipmi_port" in node["last_error"]


def test_bmc_that_stops_answering_mid_command_frees_the_node(server, bmc):
    uuid = _enroll(server.url, bmc.ports[0])
    _provision(server.url, uuid, "manage", "manageable")     # a session is up now
    os.kill(bmc.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        _call(server.url, "PUT", f"/v1/nodes/{uuid}/states/power",
              {"target": "power on"}, ok=(202,))
        node = _wait(server.url, uuid, lambda n: n["target_power_state"] is None
                     and n["reservation"] is None, "done with the power request")
        assert time.monotonic() - start < WAIT
        assert "not responding" in node["last_error"]
        assert node["power_state"] == "power off"
    finally:
        os.kill(bmc.pid, signal.SIGCONT)
    # The BMC answers again: the same node can be powered on (a 4xx/5xx never sticks).
    # (The request sent into the frozen BMC may still be carried out after SIGCONT: the
    # BMC is then on before the node says so, and the next request finds it on.)
    def powered_on() -> dict | None:
        _call(server.url, "PUT", f"/v1/nodes/{uuid}/states/power",
              {"target": "power on"}, ok=(202,))
        node = _wait(server.url, uuid, lambda n: n["target_power_state"] is None
                     and n["reservation"] is None, "done with the power request")
        return node if bmc.state(bmc.ports[0]).power == "on" else None
    node = wait_until(powered_on, WAIT, 0, "the node to power on after SIGCONT")
    assert node["power_state"] == "power on" and node["last_error"] is None


def test_full_lifecycle_leaves_the_bmc_as_expected(server, bmc):
    port = bmc.ports[0]
    uuid = _enroll(server.url, port)
    _provision(server.url, uuid, "manage", "manageable")
    _provision(server.url, uuid, "provide", "available")
    assert bmc.state(port).power == "off"
    node = _provision(server.url, uuid, "active", "active")
    assert node["power_state"] == "power on" and node["last_error"] is None
    state = bmc.state(port)
    assert state.power == "on" and state.last_boot_device == "disk"
    assert (state.boot.device, state.boot.persistent, state.boot.uefi) == ("disk", True, True)
    flags = ipmitool_ok(port, "chassis", "bootparam", "get", "5")
    assert "Hard-Drive" in flags and "all future boots" in flags
    node = _provision(server.url, uuid, "deleted", "available")
    assert node["power_state"] == "power off" and node["last_error"] is None
    assert ipmitool_ok(port, "power", "status").strip() == "Chassis Power is off"
    assert bmc.state(port).boot.device == "disk"            # persistent: still set


def test_boot_device_the_bmc_rejects_fails_the_deploy_cleanly(server, tmp_path):
    sim = IpmiSim(tmp_path / "ipmi_sim")
    try:
        uuid = _enroll(server.url, sim.port)
        _provision(server.url, uuid, "manage", "manageable")
        _provision(server.url, uuid, "provide", "available")
        node = _provision(server.url, uuid, "active", "deploy failed")
        assert "does not support IPMI set boot device disk" in node["last_error"]
        assert node["reservation"] is None
        assert "off" in ipmitool_ok(sim.port, "power", "status", cipher=3)
    finally:
        sim.stop()
