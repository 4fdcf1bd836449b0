"""The power-state sync loop in a real ``metalcast serve`` against real BMC peers.

The power of a machine is changed behind metalcast's back with the peer's own
protocol (a Redfish ComputerSystem.Reset; ``ipmitool chassis power``), and the
node's recorded power state must follow. Then the BMC stops answering: after
``power_state_sync_max_retries`` sweeps the node is in maintenance with fault
"power failure"; once the BMC answers again the maintenance is cleared by itself.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
import requests

from tests.functional.conftest import _serve
from tests.functional.helpers import api_call as _call
from tests.functional.helpers import unique
from tests.functional.helpers import wait_node as _wait
from tests.functional.redfish_peers import run_emulator

MAX_RETRIES = 2
SYNC = {
    "conductor": {"host": "sync-conductor", "sync_power_state_interval": 1,
                  "power_state_sync_max_retries": MAX_RETRIES},
    # A hung BMC must fail each check quickly, so the sweeps come round often.
    "redfish": {"connect_timeout": 2, "read_timeout": 2, "connection_attempts": 1,
                "connection_retry_interval": 0},
    "ipmi": {"command_timeout": 2, "command_retry_timeout": 3,
             "min_command_interval": 0.1},
}


@pytest.fixture(scope="module")
def sync_server(tmp_path_factory):
    yield from _serve(tmp_path_factory.mktemp("power-sync"), SYNC)


@pytest.fixture(scope="module")
def redfish_bmc(tmp_path_factory):
    yield from run_emulator(tmp_path_factory, "rf-sync", count=1, power_delay=0,
                            username="admin", password="rf-s3cret")


def _enroll_and_manage(url, driver: str, driver_info: dict) -> dict:
    node = _call(url, "POST", "/v1/nodes", {"driver": driver, "name": unique("sync"),
                                            "driver_info": driver_info}, ok=(201,))
    _call(url, "PUT", f"/v1/nodes/{node['uuid']}/states/provision", {"target": "manage"},
          ok=(202,))
    node = _wait(url, node["uuid"], lambda n: n["provision_state"] != "verifying"
                 and n["reservation"] is None, "verified")
    assert node["provision_state"] == "manageable", node["last_error"]
    return node


def _follows_power(url, uuid, expected: str) -> dict:
    return _wait(url, uuid, lambda n: n["power_state"] == expected, f"power {expected!r}")


def _in_power_failure(url, uuid) -> dict:
    node = _wait(url, uuid, lambda n: n["maintenance"] and n["fault"] == "power failure",
                 "in maintenance with fault 'power failure'")
    assert f"{MAX_RETRIES} time(s) in a row" in node["maintenance_reason"]
    assert node["power_state"] is None  # unknown while the BMC is silent
    assert node["provision_state"] == "manageable"
    return node


def _recovered(url, uuid, power: str) -> dict:
    node = _wait(url, uuid, lambda n: not n["maintenance"], "out of maintenance")
    assert node["fault"] is None and node["maintenance_reason"] is None
    return _follows_power(url, uuid, power)


def test_redfish_power_changed_and_bmc_hung(sync_server, redfish_bmc):
    url, system = sync_server.url, redfish_bmc.systems[0]
    node = _enroll_and_manage(url, "redfish", {
        "redfish_address": redfish_bmc.url, "redfish_system_id": system.path,
        "redfish_username": "admin", "redfish_password": "rf-s3cret"})
    uuid = node["uuid"]
    assert node["power_state"] == "power off"

    # Someone powers the machine on with the BMC's own API, not through metalcast.
    response = requests.post(f"{redfish_bmc.url}{system.path}/Actions/ComputerSystem.Reset",
                             json={"ResetType": "On"}, auth=("admin", "rf-s3cret"),
                             timeout=10)
    assert response.status_code in (200, 202, 204), response.text
    _follows_power(url, uuid, "power on")
    assert any("changed outside metalcast" in line and uuid in line
               for line in sync_server.log)

    os.kill(redfish_bmc.pid, signal.SIGSTOP)  # the BMC hangs: TCP accepts, no answer
    try:
        node = _in_power_failure(url, uuid)
        assert "no answer within the read timeout" in node["maintenance_reason"]
    finally:
        os.kill(redfish_bmc.pid, signal.SIGCONT)
    _recovered(url, uuid, "power on")
    node = _wait(url, uuid, lambda n: n["reservation"] is None, "unlocked")
    assert "power_sync_failures" not in node["driver_internal_info"]


# -- IPMI: the virtual BMC (virtlab.bmc) and the real ipmitool -----------------
IPMI_USER, IPMI_PASSWORD = "admin", "ipmi-s3cret"


def _ipmitool() -> str:
    path = shutil.which("ipmitool")
    if path is None:
        pytest.fail("ipmitool not found: install the Debian package 'ipmitool' "
                    "(scripts/install-system-packages)", pytrace=False)
    return path


def _ipmi_power(port: int, action: str) -> str:
    proc = subprocess.run([_ipmitool(), "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port),
                           "-U", IPMI_USER, "-P", IPMI_PASSWORD, "-C", "3", "chassis",
                           "power", action], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def ipmi_bmc(tmp_path):
    """A virtual IPMI BMC; ``stop()`` ends its process, ``start()`` brings it back on
    the same port with the same state file. Every process is stopped by PID."""
    from virtlab.launcher import start_bmcs, stop_bmcs
    state_dir = tmp_path / "bmc"
    bmcs = [start_bmcs(state_dir, count=1, username=IPMI_USER, password=IPMI_PASSWORD)]

    def stop():
        stop_bmcs(bmcs[-1])

    def start():
        bmcs.append(start_bmcs(state_dir, ports=bmcs[0].ports, username=IPMI_USER,
                               password=IPMI_PASSWORD))
    try:
        yield bmcs[0], stop, start
    finally:
        for bmc in bmcs:
            stop_bmcs(bmc)


def test_ipmi_power_changed_and_bmc_stopped(sync_server, ipmi_bmc):
    bmc, stop, start = ipmi_bmc
    port = bmc.ports[0]
    url = sync_server.url
    node = _enroll_and_manage(url, "ipmi", {
        "ipmi_address": "127.0.0.1", "ipmi_port": port, "ipmi_username": IPMI_USER,
        "ipmi_password": IPMI_PASSWORD})
    uuid = node["uuid"]
    assert node["power_state"] == "power off"

    assert "Up/On" in _ipmi_power(port, "on")  # behind metalcast's back
    _follows_power(url, uuid, "power on")
    assert "on" in _ipmi_power(port, "status")
    _ipmi_power(port, "off")
    _follows_power(url, uuid, "power off")

    stop()  # the BMC process is gone: UDP to a closed port
    _in_power_failure(url, uuid)
    start()  # same port, same state file
    _recovered(url, uuid, "power off")
    node = _wait(url, uuid, lambda n: n["reservation"] is None, "unlocked")
    assert "power_sync_failures" not in node["driver_internal_info"]
