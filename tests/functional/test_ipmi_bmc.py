"""virtlab's virtual BMC as the real ipmitool sees it (lanplus, 127.0.0.1, by PID)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conductor import errors
from conductor.config import from_options
from conductor.drivers.ipmi.client import BmcAddress, BmcChannels
from tests.functional.ipmi_peers import ipmitool, ipmitool_ok, require
from virtlab.launcher import start_bmcs, stop_bmcs


def test_power_status_on_off_and_cycle(bmc):
    port = bmc.ports[0]
    assert ipmitool_ok(port, "power", "status").strip() == "Chassis Power is off"
    assert "Up/On" in ipmitool_ok(port, "power", "on")
    assert ipmitool_ok(port, "power", "status").strip() == "Chassis Power is on"
    assert "Cycle" in ipmitool_ok(port, "power", "cycle")
    assert "Reset" in ipmitool_ok(port, "power", "reset")
    assert bmc.state(port).boots == 3
    assert "Down/Off" in ipmitool_ok(port, "power", "off")
    assert ipmitool_ok(port, "power", "status").strip() == "Chassis Power is off"
    # IPMI: a reset of a machine that is off is refused, not silently done.
    refused = ipmitool(port, "power", "reset")
    assert refused.returncode != 0 and "not supported in present state" in refused.stderr


def test_bootdev_and_bootparam_keep_persistent_and_uefi_flags(bmc):
    port = bmc.ports[0]
    assert "Set Boot Device to pxe" in ipmitool_ok(port, "chassis", "bootdev", "pxe")
    flags = ipmitool_ok(port, "chassis", "bootparam", "get", "5")
    assert "Force PXE" in flags and "only next boot" in flags and "legacy" in flags
    ipmitool_ok(port, "chassis", "bootdev", "disk", "options=persistent,efiboot")
    flags = ipmitool_ok(port, "chassis", "bootparam", "get", "5")
    assert "Hard-Drive" in flags and "all future boots" in flags and "EFI" in flags
    state = bmc.state(port)
    assert (state.boot.device, state.boot.persistent, state.boot.uefi) == ("disk", True, True)


def test_one_time_boot_device_is_used_up_by_the_next_boot(bmc):
    port = bmc.ports[0]
    ipmitool_ok(port, "chassis", "bootdev", "cdrom")
    ipmitool_ok(port, "power", "on")
    state = bmc.state(port)
    assert state.last_boot_device == "cdrom" and state.boot.device == "none"
    assert "Boot Flag Invalid" in ipmitool_ok(port, "chassis", "bootparam", "get", "5")


def test_chassis_status(bmc):
    port = bmc.ports[0]
    ipmitool_ok(port, "power", "on")
    status = ipmitool_ok(port, "chassis", "status")
    assert "System Power         : on" in status
    assert "Last Power Event     : command" in status
    assert "Main Power Fault     : false" in status


def test_wrong_password_and_unknown_user_are_refused(bmc):
    port = bmc.ports[0]
    for kwargs in ({"password": "wrong"}, {"username": "nobody"}):
        result = ipmitool(port, "power", "status", **kwargs)
        assert result.returncode != 0
        assert "Unable to establish IPMI v2 / RMCP+ session" in result.stderr


def test_cipher_suites_3_and_17_work_and_others_are_refused(bmc):
    # pyghmi's server answered every proposal as suite 3; a suite it cannot speak
    # must get "no matching cipher suite" (test-lab.md section 4), and suite 17
    # (SHA-256, what ipmitool picks from the listed suites) must work.
    port = bmc.ports[0]
    for suite in (3, 17):
        assert ipmitool_ok(port, "power", "status", cipher=suite).strip() \
            == "Chassis Power is off"
    refused = ipmitool(port, "power", "status", cipher=1)
    assert refused.returncode != 0 and "no matching cipher suite" in refused.stderr


def test_state_survives_a_restart_on_the_same_port(tmp_path):
    require("ipmitool")
    first = start_bmcs(tmp_path / "bmc", count=1)
    port = first.ports[0]
    try:
        ipmitool_ok(port, "power", "on")
        ipmitool_ok(port, "chassis", "bootdev", "pxe", "options=persistent")
        guid = first.state(port).uuid
    finally:
        stop_bmcs(first)
    assert first.process.returncode == 0
    second = start_bmcs(tmp_path / "bmc", ports=[port])
    try:
        assert ipmitool_ok(port, "power", "status").strip() == "Chassis Power is on"
        flags = ipmitool_ok(port, "chassis", "bootparam", "get", "5")
        assert "Force PXE" in flags and "all future boots" in flags
        assert second.state(port).uuid == guid
    finally:
        stop_bmcs(second)


def _concurrently(ports, action, pause_pid=None, pauses=()):
    """action(port) for every port at once (one thread each). With ``pause_pid``,
    freeze that process for each of ``pauses`` seconds (0.1 s apart), as a loaded
    machine does, so the clients time out and retransmit into the frozen BMC."""
    results = {}
    threads = [threading.Thread(target=lambda p=p: results.__setitem__(p, action(p)))
               for p in ports]
    for thread in threads:
        thread.start()
    for pause in pauses:
        time.sleep(0.1)  # the clients are mid-handshake
        os.kill(pause_pid, signal.SIGSTOP)
        try:
            time.sleep(pause)
        finally:
            os.kill(pause_pid, signal.SIGCONT)
    for thread in threads:
        thread.join(120)
    return results


def test_one_process_serves_many_bmcs_at_once(tmp_path):
    require("ipmitool")
    lab = start_bmcs(tmp_path / "bmc", count=16)
    try:
        assert len(set(lab.ports)) == 16
        # 16 simultaneous RMCP+ logins (ipmitool lanplus), one per BMC.
        results = _concurrently(lab.ports, lambda port: ipmitool(port, "power", "on"))
        failed = {p: r.stderr for p, r in results.items() if r.returncode != 0}
        assert len(results) == 16 and not failed, failed
        assert {lab.state(p).power for p in lab.ports} == {"on"}
        assert len(list((tmp_path / "bmc").glob("bmc-*.json"))) == 16
    finally:
        stop_bmcs(lab)


def test_retransmitted_handshakes_get_the_same_answers(tmp_path):
    # A frozen BMC process (SIGSTOP, as a loaded machine delays it) makes all 16
    # ipmitool clients retransmit Open Session / RAKP 1 / RAKP 3. pyghmi's server
    # answered each copy with a new session ID or random number, so the clients'
    # checks failed ("no response from RAKP 1/3"); now every copy gets the same
    # answer and every login completes.
    require("ipmitool")
    lab = start_bmcs(tmp_path / "bmc", count=16)
    try:
        results = _concurrently(lab.ports, lambda port: ipmitool(port, "power", "status"),
                                pause_pid=lab.pid, pauses=(1.5, 1.2, 1.2))
        failed = {p: r.stderr for p, r in results.items() if r.returncode != 0}
        assert len(results) == 16 and not failed, failed
        assert {r.stdout.strip() for r in results.values()} == {"Chassis Power is off"}
    finally:
        stop_bmcs(lab)


def test_pyghmi_sessions_sharing_a_socket_survive_relogins(tmp_path):
    # The conductor's pyghmi client sends to up to 64 BMCs from one UDP socket.
    # pyghmi's server dropped *every* session of that client address when one of
    # them logged in again (its Get Channel Authentication Capabilities looked
    # like a new client); the others then timed out. Freezing the BMC process
    # forces such re-logins; afterwards every session must still answer at once.
    lab = start_bmcs(tmp_path / "bmc", count=16)
    settings = from_options({"ipmi.min_command_interval": 0, "ipmi.command_timeout": 15,
                             "ipmi.command_retry_timeout": 30})
    channels = BmcChannels(settings)

    def status(port):
        bmc = BmcAddress("127.0.0.1", port, "admin", "password", 4)
        try:
            return channels.get(bmc).call(bmc, "chassis status", 0x00, 0x01)
        except errors.DriverError as exc:
            return exc

    try:
        first = _concurrently(lab.ports, status, pause_pid=lab.pid, pauses=(2.0, 1.5))
        assert not [r for r in first.values() if isinstance(r, Exception)], first
        started = time.monotonic()
        second = _concurrently(lab.ports, status)
        assert not [r for r in second.values() if isinstance(r, Exception)], second
        # Live sessions answer in one round trip; a dropped one would need a
        # timeout (>= 0.5 s) and a new login.
        assert time.monotonic() - started < 5
    finally:
        channels.close()
        stop_bmcs(lab)


def test_sigterm_stops_the_process_cleanly(tmp_path):
    lab = start_bmcs(tmp_path / "bmc", count=2)
    lab.process.send_signal(signal.SIGTERM)
    assert lab.process.wait(30) == 0
    assert "stopping (2 BMCs)" in lab.output()


@pytest.mark.parametrize("address", ["::", "0.0.0.0"])
def test_refuses_to_bind_every_address(tmp_path, address):
    result = subprocess.run([sys.executable, "-m", "virtlab.bmc", "--address", address,
                             "--state-dir", str(tmp_path), "--base-port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "wildcard" in result.stderr


def test_ready_line_is_json_with_the_ports(tmp_path):
    lab = start_bmcs(tmp_path / "bmc", count=3)
    try:
        line = next(x for x in lab.log if x.startswith("VIRTLAB-BMC-READY "))
        ready = json.loads(line.split(" ", 1)[1])
        assert ready["pid"] == lab.pid and ready["ports"] == lab.ports
        assert ready["address"] == "127.0.0.1"
    finally:
        stop_bmcs(lab)


def test_credentials_that_start_with_a_dash_reach_the_bmc(tmp_path):
    """secrets.token_urlsafe can start with "-"; passed as a separate argv word,
    argparse took it for an option and the BMC never started (a CI run failed so)."""
    lab = start_bmcs(tmp_path / "bmc", count=1, username="-op", password="-Xy_z-12")
    try:
        port = lab.ports[0]
        ipmitool_ok(port, "power", "status", username="-op", password="-Xy_z-12")
        refused = ipmitool(port, "power", "status", username="-op", password="Xy_z-12")
        assert refused.returncode != 0
    finally:
        stop_bmcs(lab)
