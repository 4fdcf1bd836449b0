"""The redfish power/management interfaces against sushy-tools' emulator over HTTP.

Every peer is a real process or socket on 127.0.0.1: the emulator (virtlab.redfish,
started and stopped by PID), a file server for virtual media, a recording proxy,
a peer that answers 500 and one that never answers. The state the driver claims
is checked with plain HTTP GETs against the emulator, not through the driver.
"""
from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import time
import types
import uuid

import pytest
import requests

from conductor import errors
from conductor.config import from_options
from conductor.drivers.base import BootDevice, PowerState
from conductor.drivers.context import DriverContext
from conductor.drivers.redfish import RedfishManagement, RedfishPower
from tests.functional.redfish_peers import (
    FaultyRedfish,
    FileServer,
    RecordingProxy,
    SilentPeer,
    free_port,
    run_emulator,
)

#: Tight bounds so fault tests finish quickly; the defaults are Ironic-like.
FAST = {"redfish.connection_attempts": 1, "redfish.connection_retry_interval": 0.1,
        "redfish.connect_timeout": 2.0, "redfish.read_timeout": 2.0,
        "redfish.power_poll_interval": 0.1}
ISO = b"CD001" + bytes(4096)   # enough of an ISO for the emulator: it only stores it


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    """Three systems, power changes visible at once (delay patched out)."""
    yield from run_emulator(tmp_path_factory, "rf-fast", count=3, power_delay=0)


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """One system with the emulator's own random 1-11 s power delay left in."""
    yield from run_emulator(tmp_path_factory, "rf-slow", count=1)


@pytest.fixture(scope="module")
def stuck(tmp_path_factory):
    """Power changes land 60 s after the request: longer than any test waits."""
    yield from run_emulator(tmp_path_factory, "rf-stuck", count=1, power_delay=60)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """One system behind HTTP basic auth."""
    yield from run_emulator(tmp_path_factory, "rf-auth", count=1, power_delay=0,
                         username="admin", password="s3cret")


def _self_signed(directory):
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "virtlab redfish")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """One system served over HTTPS with a self-signed certificate; yields (emulator, CA)."""
    cert, key = _self_signed(tmp_path_factory.mktemp("rf-tls-cert"))
    for emulator in run_emulator(tmp_path_factory, "rf-tls", count=1, power_delay=0,
                              tls=(cert, key)):
        yield emulator, cert


@pytest.fixture()
def context():
    ctx = DriverContext.create(from_options(FAST))
    yield ctx
    ctx.close()


@dataclasses.dataclass
class FakeTask:
    """What the redfish interfaces read from a Task: the node and driver_info."""

    node: types.SimpleNamespace
    driver_info: dict


def task_for(address: str, system: str | None = None, **extra) -> FakeTask:
    info = {"redfish_address": address, **extra}
    if system is not None:
        info["redfish_system_id"] = system
    return FakeTask(types.SimpleNamespace(uuid=str(uuid.uuid4()), driver_info=info), info)


def raw_system(emulator, index: int) -> dict:
    """The system as the emulator reports it, read without the driver."""
    auth = (emulator.username, emulator.password) if emulator.username else None
    response = requests.get(emulator.url + emulator.systems[index].path, auth=auth, timeout=5)
    response.raise_for_status()
    return response.json()


def raw_cd(emulator, index: int) -> dict:
    path = emulator.systems[index].path + "/VirtualMedia/Cd"
    return requests.get(emulator.url + path, timeout=5).json()


# -- power -----------------------------------------------------------------
def test_power_on_off_reboot_soft_off_soft_reboot(fast, context):
    task = task_for(fast.url, fast.systems[0].path)
    power = RedfishPower(context)
    steps = [(PowerState.ON, "On"), (PowerState.OFF, "Off"), (PowerState.REBOOT, "On"),
             (PowerState.SOFT_OFF, "Off"), (PowerState.SOFT_REBOOT, "On"),
             (PowerState.ON, "On")]  # already on: nothing sent, still on
    for requested, redfish in steps:
        power.set_power_state(task, requested)
        assert raw_system(fast, 0)["PowerState"] == redfish, requested
        assert power.get_power_state(task) == PowerState(
            {"On": "power on", "Off": "power off"}[redfish])
    power.reboot(task)
    assert raw_system(fast, 0)["PowerState"] == "On"


def test_power_waits_until_the_delayed_state_is_reached(slow, context):
    """The emulator applies the change 1-11 s late; the driver must not return early."""
    task = task_for(slow.url)   # one system: redfish_system_id may be omitted
    power = RedfishPower(context)
    assert raw_system(slow, 0)["PowerState"] == "Off"
    started = time.monotonic()
    power.set_power_state(task, PowerState.ON)
    waited = time.monotonic() - started
    assert raw_system(slow, 0)["PowerState"] == "On"
    print(f"power on through the emulator's random delay took {waited:.1f} s")


def test_power_timeout_is_a_clean_driver_error(stuck, context):
    task = task_for(stuck.url, stuck.systems[0].path)
    with pytest.raises(errors.DriverError) as caught:
        RedfishPower(context).set_power_state(task, PowerState.ON, timeout=1)
    message = str(caught.value)
    assert "Timed out after 1 s" in message and task.node.uuid in message
    assert "still reports 'Off'" in message and "power_state_change_timeout" in message
    assert raw_system(stuck, 0)["PowerState"] == "Off"


# -- boot device and mode ----------------------------------------------------
def test_boot_device_once_and_persistent(fast, context):
    with RecordingProxy(fast.url) as proxy:
        task = task_for(proxy.url, fast.systems[1].path)
        management = RedfishManagement(context)
        management.set_boot_device(task, BootDevice.PXE)
        assert raw_system(fast, 1)["Boot"]["BootSourceOverrideTarget"] == "Pxe"
        management.set_boot_device(task, BootDevice.DISK, persistent=True)
        assert raw_system(fast, 1)["Boot"]["BootSourceOverrideTarget"] == "Hdd"
        assert management.get_boot_device(task)["boot_device"] == BootDevice.DISK
        # The emulator ignores BootSourceOverrideEnabled (test-lab.md §5), so
        # what we asked for is checked on the wire.
        sent = [(body["Boot"]["BootSourceOverrideTarget"],
                 body["Boot"]["BootSourceOverrideEnabled"]) for body in proxy.bodies("PATCH")]
    assert sent == [("Pxe", "Once"), ("Hdd", "Continuous")]


def test_unsupported_boot_device_is_refused_with_the_allowed_ones(fast, context):
    task = task_for(fast.url, fast.systems[1].path)
    management = RedfishManagement(context)
    assert management.get_supported_boot_devices(task) == [
        BootDevice.PXE, BootDevice.DISK, BootDevice.CDROM, "uefihttp"]
    before = raw_system(fast, 1)["Boot"]["BootSourceOverrideTarget"]
    with pytest.raises(errors.InvalidParameter) as caught:
        management.set_boot_device(task, BootDevice.BIOS)
    assert caught.value.status_code == 400
    assert "'bios' is not supported" in str(caught.value)
    assert "allowed: pxe, disk, cdrom, uefihttp" in str(caught.value)
    assert raw_system(fast, 1)["Boot"]["BootSourceOverrideTarget"] == before
    with pytest.raises(errors.InvalidParameter, match="Unknown boot device 'floppy'"):
        management.set_boot_device(task, "floppy")


def test_uefi_http_boot_device_when_allowed(fast, context):
    task = task_for(fast.url, fast.systems[1].path)
    RedfishManagement(context).set_boot_device(task, "uefihttp")
    # Without an HttpBootUri the emulator maps UefiHttp to Pxe (its own quirk).
    assert raw_system(fast, 1)["Boot"]["BootSourceOverrideTarget"] == "Pxe"


def test_boot_mode_get_and_set(fast, context):
    task = task_for(fast.url, fast.systems[1].path)
    management = RedfishManagement(context)
    assert management.get_boot_mode(task) == "uefi"
    management.set_boot_mode(task, "bios")
    assert raw_system(fast, 1)["Boot"]["BootSourceOverrideMode"] == "Legacy"
    assert management.get_boot_mode(task) == "bios"
    management.set_boot_mode(task, "uefi")
    assert raw_system(fast, 1)["Boot"]["BootSourceOverrideMode"] == "UEFI"
    with pytest.raises(errors.InvalidParameter, match="Unknown boot mode 'efi'"):
        management.set_boot_mode(task, "efi")


# -- virtual media -----------------------------------------------------------
def test_virtual_media_insert_and_eject(fast, context):
    task = task_for(fast.url, fast.systems[2].path)
    management = RedfishManagement(context)
    with FileServer({"/images/boot.iso": ISO}) as files:
        url = files.url + "/images/boot.iso"
        assert management.insert_virtual_media(task, url) == "Cd"
        assert ("GET", "/images/boot.iso", b"") in files.requests  # the BMC fetched it
        cd = raw_cd(fast, 2)
        assert cd["Inserted"] is True and cd["Image"] == url
        assert management.insert_virtual_media(task, url) == "Cd"  # same image: no-op
    assert management.eject_virtual_media(task) == ["Cd"]
    cd = raw_cd(fast, 2)
    assert cd["Inserted"] is False and cd["Image"] == ""
    assert management.eject_virtual_media(task) == []


def test_boot_from_virtual_cd(fast, context):
    task = task_for(fast.url, fast.systems[2].path)
    management = RedfishManagement(context)
    with FileServer({"/ramdisk.iso": ISO}) as files:
        management.boot_from_virtual_media(task, files.url + "/ramdisk.iso")
    assert raw_cd(fast, 2)["Inserted"] is True
    assert raw_system(fast, 2)["Boot"]["BootSourceOverrideTarget"] == "Cd"
    management.eject_virtual_media(task)


def test_virtual_media_image_the_bmc_cannot_fetch(fast, context):
    task = task_for(fast.url, fast.systems[2].path)
    management = RedfishManagement(context)
    with FileServer({}) as files:
        with pytest.raises(errors.DriverError) as caught:
            management.insert_virtual_media(task, files.url + "/missing.iso")
    assert "virtual media insert failed" in str(caught.value)
    assert "HTTP 400" in str(caught.value)
    assert raw_cd(fast, 2)["Inserted"] is False
    with pytest.raises(errors.InvalidParameter, match="http"):
        management.insert_virtual_media(task, "nfs://10.0.0.1/x.iso")


# -- credentials, auth types and faults ---------------------------------------
def test_credentials_right_and_wrong(guarded, context):
    power = RedfishPower(context)
    good = task_for(guarded.url, redfish_username="admin", redfish_password="s3cret")
    assert power.get_power_state(good) == PowerState.OFF
    bad = task_for(guarded.url, redfish_username="admin", redfish_password="wrong")
    with pytest.raises(errors.DriverError) as caught:
        power.get_power_state(bad)
    message = str(caught.value)
    assert "refused the credentials of user 'admin' (HTTP 401)" in message
    assert "redfish_username" in message and "redfish_password" in message
    assert bad.node.uuid in message


def test_auth_types_basic_works_session_fails_cleanly(guarded, context):
    power = RedfishPower(context)
    creds = dict(redfish_username="admin", redfish_password="s3cret")
    basic = task_for(guarded.url, redfish_auth_type="basic", **creds)
    assert power.get_power_state(basic) == PowerState.OFF
    # sushy-tools has no SessionService, so session-only auth must fail cleanly.
    session = task_for(guarded.url, redfish_auth_type="session", **creds)
    with pytest.raises(errors.DriverError, match="HTTP 401"):
        power.get_power_state(session)


def test_verify_ca_true_false_and_ca_path(tls, context):
    emulator, ca = tls
    power = RedfishPower(context)
    assert emulator.url.startswith("https://")
    with pytest.raises(errors.DriverError) as caught:   # default: verify, system CAs
        power.get_power_state(task_for(emulator.url))
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert "redfish_verify_ca" in str(caught.value)
    assert power.get_power_state(task_for(emulator.url, redfish_verify_ca=str(ca))) \
        == PowerState.OFF
    assert power.get_power_state(task_for(emulator.url, redfish_verify_ca="false")) \
        == PowerState.OFF


def test_unreachable_port_is_a_clean_error(context):
    task = task_for(f"127.0.0.1:{free_port()}")   # host:port means https, like Ironic
    started = time.monotonic()
    with pytest.raises(errors.DriverError) as caught:
        RedfishPower(context).get_power_state(task)
    print(f"unreachable port failed after {time.monotonic() - started:.2f} s")
    assert "cannot reach the service" in str(caught.value)
    assert "Connection refused" in str(caught.value)
    assert "https://127.0.0.1:" in str(caught.value)


def test_silent_peer_times_out_cleanly(context):
    with SilentPeer() as peer:
        with pytest.raises(errors.DriverError, match="no answer within the read timeout"):
            RedfishPower(context).get_power_state(task_for(peer.url))


def test_http_500_is_a_clean_driver_error(context):
    with FaultyRedfish() as peer:
        with pytest.raises(errors.DriverError) as caught:
            RedfishPower(context).get_power_state(task_for(peer.url))
    message = str(caught.value)
    assert caught.value.status_code == 502
    assert "failed with HTTP 500" in message and "Internal BMC fault" in message


def test_unknown_system_id_names_the_field_and_the_systems(fast, context):
    task = task_for(fast.url, "no-such-system")
    with pytest.raises(errors.InvalidParameter) as caught:
        RedfishPower(context).get_power_state(task)
    message = str(caught.value)
    assert "/redfish/v1/Systems/no-such-system" in message
    assert "redfish_system_id" in message and fast.systems[0].path in message


def test_system_id_required_when_there_are_several(fast, context):
    with pytest.raises(errors.InvalidParameter, match="redfish_system_id is required"):
        RedfishPower(context).get_power_state(task_for(fast.url))


def test_sessions_are_shared_and_dropped_after_a_failure(guarded, context):
    power = RedfishPower(context)
    creds = dict(redfish_username="admin", redfish_password="s3cret")
    power.get_power_state(task_for(guarded.url, **creds))
    power.get_power_state(task_for(guarded.url, **creds))
    cache = context.redfish_sessions
    assert len(cache._roots) == 1          # two nodes, one BMC login
    with pytest.raises(errors.DriverError):
        power.get_power_state(task_for(guarded.url, redfish_username="admin",
                                       redfish_password="nope"))
    assert len(cache._roots) == 1          # the failed session was not kept
