"""redfish driver_info parsing and validate(): offline, each bad field named."""
import types

import pytest

from conductor import errors
from conductor.config import Settings
from conductor.drivers import registry as hardware
from conductor.drivers.context import DriverContext
from conductor.drivers.redfish import RedfishManagement, RedfishPower
from conductor.drivers.redfish.info import parse

ADDRESS = {"redfish_address": "https://10.0.0.5"}


@pytest.mark.parametrize("raw, base, root", [
    ("https://10.0.0.5", "https://10.0.0.5", "/redfish/v1/"),
    ("10.0.0.5", "https://10.0.0.5", "/redfish/v1/"),               # Ironic: https assumed
    ("10.0.0.5:8443", "https://10.0.0.5:8443", "/redfish/v1/"),
    ("bmc.example.org:8000", "https://bmc.example.org:8000", "/redfish/v1/"),
    ("http://127.0.0.1:8000/", "http://127.0.0.1:8000", "/redfish/v1/"),
    ("https://[fd00::5]:443", "https://[fd00::5]:443", "/redfish/v1/"),
    ("https://bmc/custom/root", "https://bmc", "/custom/root/"),
])
def test_address_forms(raw, base, root):
    info = parse({"redfish_address": raw})
    assert (info.address, info.root_prefix) == (base, root)


@pytest.mark.parametrize("driver_info, field", [
    ({}, "redfish_address"),
    ({"redfish_address": ""}, "redfish_address"),
    ({"redfish_address": 42}, "redfish_address"),
    ({"redfish_address": "ftp://bmc"}, "redfish_address"),
    ({"redfish_address": "https://"}, "redfish_address"),
    ({"redfish_address": "bmc:99999"}, "redfish_address"),
    ({"redfish_address": "https://root:pw@bmc"}, "redfish_address"),
    ({**ADDRESS, "redfish_system_id": 7}, "redfish_system_id"),
    ({**ADDRESS, "redfish_system_id": "https://bmc/redfish/v1/Systems/1"}, "redfish_system_id"),
    ({**ADDRESS, "redfish_verify_ca": "/no/such/ca.pem"}, "redfish_verify_ca"),
    ({**ADDRESS, "redfish_verify_ca": 3}, "redfish_verify_ca"),
    ({**ADDRESS, "redfish_auth_type": "kerberos"}, "redfish_auth_type"),
    ({**ADDRESS, "redfish_username": ["admin"]}, "redfish_username"),
    ({**ADDRESS, "redfish_password": 1234}, "redfish_password"),
])
def test_bad_fields_are_named(driver_info, field):
    with pytest.raises(errors.InvalidParameter) as caught:
        parse(driver_info)
    assert f"driver_info.{field}" in str(caught.value)
    assert caught.value.status_code == 400


def test_system_id_path_or_bare_id():
    assert parse({**ADDRESS, "redfish_system_id": "/redfish/v1/Systems/1/"}).system_id \
        == "/redfish/v1/Systems/1"
    assert parse({**ADDRESS, "redfish_system_id": "abc 1"}).system_id \
        == "/redfish/v1/Systems/abc%201"
    assert parse(ADDRESS).system_id is None


@pytest.mark.parametrize("raw, verify", [
    (None, True), (True, True), (False, False), ("False", False), ("no", False),
    ("true", True), ("1", True),
])
def test_verify_ca_booleans(raw, verify):
    info = {**ADDRESS} if raw is None else {**ADDRESS, "redfish_verify_ca": raw}
    assert parse(info).verify is verify


def test_verify_ca_path(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert parse({**ADDRESS, "redfish_verify_ca": str(ca)}).verify == str(ca)


def test_auth_type_default_comes_from_settings():
    assert parse(ADDRESS).auth_type == "auto"
    assert parse(ADDRESS, default_auth="basic").auth_type == "basic"
    assert parse({**ADDRESS, "redfish_auth_type": "session"}).auth_type == "session"


def test_password_is_not_in_repr():
    info = parse({**ADDRESS, "redfish_username": "u", "redfish_password": "hunter2"})
    assert "hunter2" not in repr(info)


def test_validate_is_offline_and_names_the_field():
    task = types.SimpleNamespace(node=types.SimpleNamespace(uuid="n"),
                                 driver_info={"redfish_address": "10.255.255.1"})
    context = DriverContext.create(Settings())
    RedfishPower(context).validate(task)   # unroutable address: no traffic, no error
    RedfishManagement(context).validate(task)
    task.driver_info = {}
    with pytest.raises(errors.InvalidParameter, match="driver_info.redfish_address"):
        RedfishPower(DriverContext.create(Settings())).validate(task)


def test_hardware_type_redfish():
    table = hardware.HARDWARE_TYPES["redfish"]
    assert table["power"] == ("redfish", "fake")
    assert table["management"] == ("redfish", "fake")
    # As in Ironic: network boot through iPXE and the agent deploy by default.
    assert table["boot"] == ("ipxe", "pxe", "fake") and table["deploy"] == ("direct", "fake")
    assert table["raid"] == hardware.HARDWARE_TYPES["fake-hardware"]["raid"]
    registry = hardware.DriverRegistry(DriverContext.create(Settings()))
    assert isinstance(registry.build("power", "redfish"), RedfishPower)
    assert isinstance(registry.build("management", "redfish"), RedfishManagement)
