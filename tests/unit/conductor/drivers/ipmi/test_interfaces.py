"""Pure logic of the IPMI driver and the virtual BMC: parsing, byte layouts, error mapping."""
import types

import pytest
from pyghmi import exceptions as pyghmi_exc

from conductor import errors
from conductor.drivers.base import BootDevice
from conductor.drivers.ipmi import client as ipmi_client
from conductor.drivers.ipmi import interfaces as ipmi
from conductor.drivers.ipmi.client import BmcAddress
from virtlab import bmc as vbmc
from virtlab import rmcp_server
from virtlab.state import BootOverride, MachineState, StateFile

BMC = BmcAddress("10.0.0.5", 623, "admin", "pw", 4)


def task(driver_info=None, properties=None):
    node = types.SimpleNamespace(uuid="u-1", properties=properties or {},
                                 driver_internal_info={})
    return types.SimpleNamespace(node=node, driver_info=driver_info or {})


def test_driver_info_defaults():
    bmc = ipmi.parse_driver_info(task({"ipmi_address": "10.0.0.5"}))
    assert bmc == BmcAddress("10.0.0.5", 623, "", "", 4)
    bmc = ipmi.parse_driver_info(task({"ipmi_address": "bmc-1", "ipmi_port": "6230",
                                       "ipmi_username": "root", "ipmi_password": "x",
                                       "ipmi_priv_level": "operator"}))
    assert (bmc.port, bmc.username, bmc.priv_level) == (6230, "root", 3)


@pytest.mark.parametrize("info, field", [
    ({}, "ipmi_address"),
    ({"ipmi_address": ""}, "ipmi_address"),
    ({"ipmi_address": "a b"}, "ipmi_address"),
    ({"ipmi_address": "h", "ipmi_port": 0}, "ipmi_port"),
    ({"ipmi_address": "h", "ipmi_port": 65536}, "ipmi_port"),
    ({"ipmi_address": "h", "ipmi_port": "abc"}, "ipmi_port"),
    ({"ipmi_address": "h", "ipmi_port": 6.5}, "ipmi_port"),
    ({"ipmi_address": "h", "ipmi_port": True}, "ipmi_port"),
    ({"ipmi_address": "h", "ipmi_priv_level": "ROOT"}, "ipmi_priv_level"),
    ({"ipmi_address": "h", "ipmi_username": "u" * 17}, "ipmi_username"),
    ({"ipmi_address": "h", "ipmi_password": "p" * 21}, "ipmi_password"),
    ({"ipmi_address": "h", "ipmi_password": 1234}, "ipmi_password"),
])
def test_bad_driver_info_is_a_400_naming_the_field(info, field):
    with pytest.raises(errors.InvalidParameter) as exc:
        ipmi.parse_driver_info(task(info))
    assert exc.value.status_code == 400 and field in str(exc.value)


@pytest.mark.parametrize("properties, info, mode", [
    ({}, {}, "uefi"),
    ({"capabilities": "boot_mode:bios,other:x"}, {}, "bios"),
    ({"capabilities": {"boot_mode": "uefi"}}, {"boot_mode": "bios"}, "uefi"),
    ({}, {"boot_mode": "bios"}, "bios"),
])
def test_boot_mode_from_capabilities_then_driver_info(properties, info, mode):
    assert ipmi.boot_mode(task(info, properties)) == mode


def test_bad_boot_mode_is_a_400():
    with pytest.raises(errors.InvalidParameter, match="boot_mode"):
        ipmi.boot_mode(task({}, {"capabilities": "boot_mode:efi"}))


@pytest.mark.parametrize("data, expected", [
    (bytes([1, 5, 0x80, 0x04, 0, 0, 0]), {"boot_device": "pxe", "persistent": False}),
    (bytes([1, 5, 0xE0, 0x08, 0, 0, 0]), {"boot_device": "disk", "persistent": True}),
    (bytes([1, 5, 0xC0, 0x14, 0, 0, 0]), {"boot_device": "cdrom", "persistent": True}),
    (bytes([1, 5, 0x80, 0x18, 0, 0, 0]), {"boot_device": "bios", "persistent": False}),
    (bytes([1, 5, 0x00, 0x04, 0, 0, 0]), {"boot_device": None, "persistent": None}),
    (bytes([1, 0x85, 0x80, 0x04, 0, 0, 0]), {"boot_device": None, "persistent": None}),
    (bytes([1, 5, 0x80, 0x3C, 0, 0, 0]), {"boot_device": None, "persistent": False}),
])
def test_boot_flags_parsed_as_ironic_reports_them(data, expected):
    assert ipmi.parse_boot_flags(data) == expected


def test_chassis_status_bits():
    status = ipmi.ChassisStatus.parse(bytes([0x09, 0x10, 0]))
    assert status.power_on and status.faults == ["power_fault"]
    with pytest.raises(errors.DriverError):
        ipmi.ChassisStatus.parse(b"")


def test_boot_selectors_agree_with_the_virtual_bmc():
    for device, selector in ipmi.BOOT_SELECTORS.items():
        assert vbmc.SELECTOR_TO_DEVICE[selector] == device.value
    assert set(ipmi.BOOT_SELECTORS) == set(BootDevice)


@pytest.mark.parametrize("response, kind", [
    ({"code": 0xC0, "error": "Node Busy"}, ipmi_client._Retryable),
    ({"code": 0xFFFF, "error": "timeout"}, ipmi_client._Retryable),
    ({"code": 0xCC, "error": "Invalid data field in request"}, errors.UnsupportedCommand),
    ({"code": 0xC1, "error": "Invalid command"}, errors.UnsupportedCommand),
    ({"code": 0xD4, "error": "Insufficient privilege level"}, errors.DriverError),
    ({"code": 0xFF, "error": "Unspecified"}, errors.DriverError),
])
def test_completion_codes_classified(response, kind):
    with pytest.raises(kind) as exc:
        ipmi_client._check(dict(response, netfn=1, command=1), BMC, "get chassis status")
    assert "10.0.0.5:623" in str(exc.value) or kind is ipmi_client._Retryable


def test_success_returns_data():
    assert ipmi_client._check({"code": 0, "data": bytearray(b"\x01")}, BMC, "x") == b"\x01"


@pytest.mark.parametrize("exc, kind, words", [
    (pyghmi_exc.IpmiException("Incorrect password provided"), errors.DriverError,
     ["ipmi_password", "admin"]),
    (pyghmi_exc.IpmiException("Unauthorized name in RAKP2"), errors.DriverError,
     ["ipmi_username"]),
    (pyghmi_exc.IpmiException("Unauthorized role or privilege level requested"),
     errors.DriverError, ["ipmi_priv_level"]),
    (pyghmi_exc.IpmiException(None), ipmi_client._Retryable, ["ipmi_address", "ipmi_port"]),
    (pyghmi_exc.IpmiException("Session no longer connected"), ipmi_client._Retryable,
     ["ipmi_address"]),
    (pyghmi_exc.IpmiException("Insufficient resources to create new session"),
     ipmi_client._Retryable, ["session"]),
    (OSError("Name or service not known"), errors.DriverError, ["ipmi_address"]),
    (ValueError("odd"), errors.DriverError, ["ValueError", "odd"]),
])
def test_pyghmi_errors_translated_for_operators(exc, kind, words):
    translated = ipmi_client._translate(exc, BMC, "get chassis status")
    assert type(translated) is kind
    for word in words:
        assert word in str(translated)


@pytest.mark.parametrize("flags, device_byte, expected", [
    (0x80, 0x04, BootOverride("pxe", False, False)),
    (0xE0, 0x08, BootOverride("disk", True, True)),
    (0xA0, 0x14, BootOverride("cdrom", False, True)),
    (0x00, 0x04, BootOverride()),
    (0x80, 0x00, BootOverride()),
    (0x80, 0x10, None),
])
def test_virtual_bmc_boot_flags(flags, device_byte, expected):
    assert vbmc._parse_boot_flags(flags, device_byte) == expected


def test_open_session_request_detection():
    head = bytes([6, 0, 0xFF, 7, 6, 0x10]) + bytes(16)
    assert rmcp_server.is_open_session_request(head)
    assert not rmcp_server.is_open_session_request(bytes([6, 0, 0xFF, 7, 6, 0x00]) + bytes(16))
    assert not rmcp_server.is_open_session_request(head[:10])


def test_plan_ports():
    assert vbmc.plan_ports(3, 6230, None) == [6230, 6231, 6232]
    assert vbmc.plan_ports(2, 0, None) == [0, 0]
    assert vbmc.plan_ports(5, 6230, "7000,7002") == [7000, 7002]


def test_state_file_round_trip_is_atomic(tmp_path):
    store = StateFile(tmp_path / "bmc-1.json")
    state = store.load()
    assert state.power == "off" and state.boot == BootOverride()
    state.power, state.boot = "on", BootOverride("pxe", True, True)
    store.save(state)
    assert StateFile(tmp_path / "bmc-1.json").load() == state
    assert [p.name for p in tmp_path.iterdir()] == ["bmc-1.json"]  # no temp files left
    assert MachineState.from_dict(dict(state.to_dict(), unknown=1)) == state
