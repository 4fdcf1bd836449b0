"""The ipmitool power/management interfaces through a Task on a real SQLite store,
against virtlab's virtual BMC and OpenIPMI's ipmi_sim (real processes, loopback).

What the driver claims is checked independently: the BMC's state file and the
real ipmitool client.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from conductor import errors
from conductor.config import from_options
from conductor.drivers.base import BootDevice, PowerState
from conductor.drivers.context import DriverContext
from conductor.drivers.ipmi import interfaces
from conductor.drivers.registry import DriverRegistry
from conductor.engine.task import Task
from tests.functional.ipmi_peers import (
    PASSWORD,
    USERNAME,
    IpmiSim,
    free_port,
    ipmitool_ok,
    make_store,
)
from tests.waiting import wait_until

#: Small bounds so fault tests end quickly; the defaults are Ironic-like.
FAST = {"ipmi.min_command_interval": 0.02, "ipmi.command_timeout": 4.0,
        "ipmi.command_retry_timeout": 2.0, "ipmi.power_state_timeout": 10.0}
#: Generous outer bound for "fails within bounded time" on a noisy 2-core machine.
BOUND = 30.0


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "metalcast.sqlite")


@pytest.fixture
def context():
    ctx = DriverContext.create(from_options(FAST))
    yield ctx
    ctx.close()


@pytest.fixture
def sim(tmp_path):
    sim = IpmiSim(tmp_path / "ipmi_sim")
    yield sim
    sim.stop()


def make_task(store, context, port, properties=None, **info) -> Task:
    driver_info = {"ipmi_address": "127.0.0.1", "ipmi_port": port,
                   "ipmi_username": USERNAME, "ipmi_password": PASSWORD, **info}
    node = store.create_node({"driver": "ipmi", "power_interface": "ipmitool",
                              "management_interface": "ipmitool", "driver_info": driver_info,
                              "properties": properties or {}, "driver_internal_info": {}})
    return Task(store, node, "test-conductor", DriverRegistry(context))


def timed(func, *args, **kwargs):
    start = time.monotonic()
    try:
        func(*args, **kwargs)
    except errors.MetalcastError as exc:
        return exc, time.monotonic() - start
    raise AssertionError(f"{func.__name__} did not fail")


def test_power_operations(store, context, bmc):
    port = bmc.ports[0]
    task = make_task(store, context, port)
    task.power.validate(task)
    assert task.power.get_power_state(task) is PowerState.OFF
    task.power.set_power_state(task, PowerState.ON)
    assert bmc.state(port).power == "on"
    assert ipmitool_ok(port, "power", "status").strip() == "Chassis Power is on"
    task.power.set_power_state(task, PowerState.SOFT_OFF)
    assert bmc.state(port).power == "off"
    task.power.reboot(task)                     # from off: just on
    assert (bmc.state(port).power, bmc.state(port).boots) == ("on", 2)
    task.power.set_power_state(task, PowerState.REBOOT)
    assert (bmc.state(port).power, bmc.state(port).boots) == ("on", 3)
    task.power.set_power_state(task, PowerState.OFF)
    assert task.power.get_power_state(task) is PowerState.OFF
    assert ipmitool_ok(port, "power", "status").strip() == "Chassis Power is off"


@pytest.mark.parametrize("device", list(BootDevice))
@pytest.mark.parametrize("persistent", [True, False])
def test_boot_device_persistence_and_uefi_flag(store, context, bmc, device, persistent):
    port = bmc.ports[0]
    task = make_task(store, context, port)          # default boot mode: uefi
    task.management.validate(task)
    task.management.set_boot_device(task, device, persistent=persistent)
    saved = bmc.state(port).boot
    assert (saved.device, saved.persistent, saved.uefi) == (device.value, persistent, True)
    assert task.management.get_boot_device(task) == {"boot_device": device.value,
                                                     "persistent": persistent}
    flags = ipmitool_ok(port, "chassis", "bootparam", "get", "5")
    assert ("all future boots" if persistent else "only next boot") in flags
    assert "EFI" in flags


def test_legacy_boot_mode_from_capabilities(store, context, bmc):
    port = bmc.ports[0]
    task = make_task(store, context, port, properties={"capabilities": "boot_mode:bios"})
    task.management.set_boot_device(task, BootDevice.PXE, persistent=True)
    assert bmc.state(port).boot.uefi is False
    assert "legacy" in ipmitool_ok(port, "chassis", "bootparam", "get", "5")


def test_reboot_reasserts_the_one_time_boot_device(store, context, bmc):
    port = bmc.ports[0]
    task = make_task(store, context, port)
    task.management.set_boot_device(task, BootDevice.PXE)
    task.power.set_power_state(task, PowerState.ON)
    assert bmc.state(port).last_boot_device == "pxe"
    assert bmc.state(port).boot.device == "none"      # used up by that boot
    task.power.reboot(task)
    state = bmc.state(port)
    assert (state.boots, state.last_boot_device, state.last_boot_uefi) == (2, "pxe", True)
    assert task.node.driver_internal_info["ipmi_boot_device"] == {"boot_device": "pxe",
                                                                  "persistent": False}


def test_a_reboot_right_after_the_boot_device_is_set_sends_it_once(store, context, bmc,
                                                                   monkeypatch):
    """A deploy sets the one-time device on a node that is off, then reboots it: no
    boot and no power request came between, so the flags are sent once, not twice.
    After any power request in between they are sent again (a boot takes them)."""
    port = bmc.ports[0]
    sent = []
    set_flags = interfaces._IpmiInterface._set_boot_flags   # management's and power's
    monkeypatch.setattr(interfaces._IpmiInterface, "_set_boot_flags",
                        lambda self, task, device, persistent: (
                            sent.append(device), set_flags(self, task, device, persistent)))
    task = make_task(store, context, port)
    task.management.set_boot_device(task, BootDevice.PXE)
    task.power.reboot(task)                       # off: just on, with the flags set above
    state = bmc.state(port)
    assert sent == [BootDevice.PXE] and (state.boots, state.last_boot_device) == (1, "pxe")
    task.power.set_power_state(task, PowerState.OFF)
    task.power.reboot(task)                       # the flags went with the first boot
    state = bmc.state(port)
    assert sent == [BootDevice.PXE] * 2 and (state.boots, state.last_boot_device) == \
        (2, "pxe")


def test_supported_devices_and_unsupported_one_is_a_400(store, context, bmc):
    task = make_task(store, context, bmc.ports[0])
    assert task.management.get_supported_boot_devices(task) == list(BootDevice)
    with pytest.raises(errors.InvalidParameter, match="'floppy' is not supported"):
        task.management.set_boot_device(task, "floppy")
    assert bmc.state(bmc.ports[0]).boot.device == "none"


def test_wrong_credentials_name_the_field(store, context, bmc):
    task = make_task(store, context, bmc.ports[0], ipmi_password="wrong")
    exc, _ = timed(task.power.get_power_state, task)
    assert isinstance(exc, errors.DriverError) and "ipmi_password" in str(exc)
    task = make_task(store, context, bmc.ports[0], ipmi_username="nobody")
    exc, _ = timed(task.power.get_power_state, task)
    assert "ipmi_username" in str(exc) and "nobody" in str(exc)


def test_bad_driver_info_fails_validation_without_io(store, context):
    task = make_task(store, context, "not-a-port")
    with pytest.raises(errors.InvalidParameter, match="ipmi_port"):
        task.power.validate(task)


def test_unreachable_bmc_fails_within_bounded_time(store, context):
    task = make_task(store, context, free_port())      # nothing listens there
    exc, elapsed = timed(task.power.get_power_state, task)
    assert isinstance(exc, errors.DriverError) and elapsed < BOUND
    assert "ipmi_address" in str(exc) and "ipmi_port" in str(exc)


def test_bmc_that_stops_answering_mid_session(store, context, bmc):
    task = make_task(store, context, bmc.ports[0])
    assert task.power.get_power_state(task) is PowerState.OFF   # session established
    os.kill(bmc.pid, signal.SIGSTOP)
    try:
        exc, elapsed = timed(task.power.set_power_state, task, PowerState.ON)
        assert isinstance(exc, errors.DriverError) and elapsed < BOUND
        assert "not responding" in str(exc)
        # The abandoned exchange still occupies the BMC's channel: refused, bounded.
        exc, elapsed = timed(task.power.get_power_state, task)
        assert "not responding" in str(exc) and elapsed < BOUND
    finally:
        os.kill(bmc.pid, signal.SIGCONT)
    # Once it answers again, commands work again.
    wait_until(lambda: task.power.get_power_state(task) or True, BOUND, 0,
               "the BMC to answer after SIGCONT", ignore=errors.DriverError)
    task.power.set_power_state(task, PowerState.ON)
    assert bmc.state(bmc.ports[0]).power == "on"


def test_commands_to_one_bmc_are_serialised_and_spaced(store, bmc):
    interval = 0.2
    ctx = DriverContext.create(from_options({**FAST, "ipmi.min_command_interval": interval}))
    try:
        tasks = [make_task(store, ctx, bmc.ports[0]) for _ in range(5)]
        results, start = [], time.monotonic()
        threads = [threading.Thread(target=lambda t=t: results.append(
            t.power.get_power_state(t))) for t in tasks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        elapsed = time.monotonic() - start
    finally:
        ctx.close()
    assert results == [PowerState.OFF] * 5
    assert elapsed >= 4 * interval     # a lower bound only: spacing can only add time


def test_ipmi_sim_power(store, context, sim):
    task = make_task(store, context, sim.port)
    assert task.power.get_power_state(task) is PowerState.OFF
    task.power.set_power_state(task, PowerState.ON)
    assert sim.machine_running()
    assert "on" in ipmitool_ok(sim.port, "power", "status", cipher=3)
    task.power.reboot(task)
    assert task.power.get_power_state(task) is PowerState.ON
    task.power.set_power_state(task, PowerState.OFF)
    assert "off" in ipmitool_ok(sim.port, "power", "status", cipher=3)
    assert not sim.machine_running()


def test_ipmi_sim_rejects_boot_device_cleanly(store, context, sim):
    task = make_task(store, context, sim.port)
    exc, elapsed = timed(task.management.set_boot_device, task, BootDevice.PXE)
    assert isinstance(exc, errors.DriverError) and exc.status_code == 502
    assert "does not support IPMI set boot device pxe" in str(exc)
    assert "Invalid data field" in str(exc) and elapsed < BOUND
    assert "ipmi_boot_device" not in task.node.driver_internal_info
    assert task.power.get_power_state(task) is PowerState.OFF   # the session still works
