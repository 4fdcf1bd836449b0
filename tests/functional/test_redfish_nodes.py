"""Redfish nodes end to end: a real ``metalcast serve`` drives sushy-tools' emulator.

The API and conductor run as one child process (tests/functional/conftest.py),
the emulator as another (virtlab.redfish); the test reads the emulated system
with plain HTTP GETs to check what the conductor did to it.
"""
from __future__ import annotations

import time

import pytest
import requests

from tests.functional.helpers import api_call as _call
from tests.functional.helpers import provision as _provision
from tests.functional.helpers import unique
from tests.functional.helpers import wait_node as _wait
from tests.functional.redfish_peers import free_port, run_emulator

HEADERS = {"X-OpenStack-Ironic-API-Version": "latest"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Two systems, no power delay, no auth."""
    yield from run_emulator(tmp_path_factory, "rf-nodes", count=2, power_delay=0)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    yield from run_emulator(tmp_path_factory, "rf-nodes-auth", count=1, power_delay=0,
                            username="admin", password="s3cret")


def _raw(emulator, index) -> dict:
    auth = (emulator.username, emulator.password) if emulator.username else None
    return requests.get(emulator.url + emulator.systems[index].path, auth=auth,
                        timeout=5).json()


@pytest.fixture()
def enroll(server):
    """Create redfish nodes on the shared server; delete them afterwards, so the
    server's power sync does not keep polling emulators that are gone."""
    created = []

    def create(driver_info) -> str:
        node = _call(server.url, "POST", "/v1/nodes",
                     {"driver": "redfish", "name": unique("rf"), "driver_info": driver_info,
                      # the BMC side only: fake boot and deploy keep the agent out
                      "boot_interface": "fake", "deploy_interface": "fake"},
                     ok=(201,))
        assert node["provision_state"] == "enroll"
        assert node["power_interface"] == node["management_interface"] == "redfish"
        created.append(node["uuid"])
        return node["uuid"]

    yield create
    for uuid in created:
        requests.delete(f"{server.url}/v1/nodes/{uuid}", headers=HEADERS, timeout=30)


def test_manage_provide_deploy_undeploy(server, lab, enroll):
    uuid = enroll({"redfish_address": lab.url,
                   "redfish_system_id": lab.systems[0].path})
    validation = _call(server.url, "GET", f"/v1/nodes/{uuid}/validate")
    assert validation["power"]["result"] and validation["management"]["result"]

    node = _provision(server.url, uuid, "manage", "manageable")
    assert node["power_state"] == "power off" and node["last_error"] is None

    node = _provision(server.url, uuid, "provide", "available")
    assert node["power_state"] == "power off"
    assert _raw(lab, 0)["PowerState"] == "Off"

    node = _provision(server.url, uuid, "active", "active")
    assert node["power_state"] == "power on" and node["last_error"] is None
    system = _raw(lab, 0)
    assert system["PowerState"] == "On"
    assert system["Boot"]["BootSourceOverrideTarget"] == "Hdd"

    node = _provision(server.url, uuid, "deleted", "available")
    assert node["power_state"] == "power off" and node["last_error"] is None
    system = _raw(lab, 0)
    assert system["PowerState"] == "Off"
    assert system["Boot"]["BootSourceOverrideTarget"] == "Hdd"   # fake boot: left as deployed
    assert _raw(lab, 1)["PowerState"] == "Off"   # the other system was never touched


def test_power_api_drives_the_emulated_system(server, lab, enroll):
    uuid = enroll({"redfish_address": lab.url,
                   "redfish_system_id": lab.systems[1].path})
    _provision(server.url, uuid, "manage", "manageable")
    for target, redfish in (("power on", "On"), ("rebooting", "On"), ("power off", "Off")):
        _call(server.url, "PUT", f"/v1/nodes/{uuid}/states/power", {"target": target},
              ok=(202,))
        node = _wait(server.url, uuid, lambda n: n["target_power_state"] is None
                     and n["reservation"] is None, f"done with {target}")
        assert node["last_error"] is None
        assert _raw(lab, 1)["PowerState"] == redfish
        assert node["power_state"] == {"On": "power on", "Off": "power off"}[redfish]


def _failed_verify(server, uuid) -> dict:
    _call(server.url, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "manage"},
          ok=(202,))
    return _wait(server.url, uuid, lambda n: n["provision_state"] == "enroll"
                 and n["last_error"] and n["reservation"] is None, "enroll with last_error")


def test_bad_credentials_return_to_enroll_unlocked(server, guarded, enroll):
    uuid = enroll({"redfish_address": guarded.url,
                   "redfish_username": "admin", "redfish_password": "wrong"})
    node = _failed_verify(server, uuid)
    assert "refused the credentials of user 'admin' (HTTP 401)" in node["last_error"]
    assert node["target_provision_state"] is None
    # Nothing is left locked: fix the password and the same node verifies.
    _call(server.url, "PATCH", f"/v1/nodes/{uuid}",
          [{"op": "replace", "path": "/driver_info/redfish_password", "value": "s3cret"}])
    node = _provision(server.url, uuid, "manage", "manageable")
    assert node["last_error"] is None and node["power_state"] == "power off"


def test_unreachable_bmc_returns_to_enroll_in_bounded_time(server, enroll):
    uuid = enroll({"redfish_address": f"http://127.0.0.1:{free_port()}"})
    started = time.monotonic()
    node = _failed_verify(server, uuid)
    print(f"unreachable BMC: verify failed after {time.monotonic() - started:.1f} s "
          "(default settings: 3 attempts, 2 s apart)")
    assert "cannot reach the service" in node["last_error"]
    assert "Connection refused" in node["last_error"]


def test_missing_system_id_with_several_systems_returns_to_enroll(server, lab, enroll):
    uuid = enroll({"redfish_address": lab.url})
    node = _failed_verify(server, uuid)
    assert "redfish_system_id is required" in node["last_error"]
    assert lab.systems[0].path in node["last_error"]


def test_missing_address_fails_validation_and_verify_names_the_field(server, enroll):
    uuid = enroll({"redfish_username": "admin"})
    validation = _call(server.url, "GET", f"/v1/nodes/{uuid}/validate")
    assert validation["power"]["result"] is False
    assert "driver_info.redfish_address is required" in validation["power"]["reason"]
    node = _failed_verify(server, uuid)
    assert "driver_info.redfish_address is required" in node["last_error"]
