"""Fake implementations: instant, no hardware, state kept on the node.

``driver_info.fake_delay`` (seconds, optional) makes the long operations take
that long, so demos show progress and tests can interrupt work in flight.
``driver_info.fake_power_state`` (optional) is what the fake BMC reports when it
differs from the recorded state: a machine switched behind the conductor's back,
which the power sync must notice (a power action sets it to the new state).
"""
from __future__ import annotations

import time

from conductor import errors
from conductor.drivers import base
from conductor.drivers.base import BootDevice, PowerState


def _delay(task) -> None:
    try:
        seconds = float((task.node.driver_info or {}).get("fake_delay", 0))
    except (TypeError, ValueError):
        raise errors.InvalidParameter(
            "driver_info.fake_delay must be a number of seconds") from None
    if seconds > 0:
        time.sleep(seconds)


#: driver_info key: the power state the fake BMC reports, set behind our back.
SWITCHED_KEY = "fake_power_state"


class FakePower(base.PowerInterface):
    def get_power_state(self, task) -> PowerState:
        switched = (task.node.driver_info or {}).get(SWITCHED_KEY)
        return PowerState(switched or task.node.power_state or PowerState.OFF)

    def set_power_state(self, task, state, timeout=None) -> None:
        final = {PowerState.SOFT_OFF: PowerState.OFF}.get(state, state)
        if final in (PowerState.REBOOT, PowerState.SOFT_REBOOT):
            final = PowerState.ON
        _record(task, PowerState(final))

    def reboot(self, task, timeout=None) -> None:
        _record(task, PowerState.ON)


def _record(task, state: PowerState) -> None:
    """The machine is in ``state`` now (the switched state too, when one was set)."""
    info = task.node.driver_info or {}
    if info.get(SWITCHED_KEY) is None:
        task.update(power_state=state.value)
    else:
        task.update(power_state=state.value, driver_info={**info, SWITCHED_KEY: state.value})


class FakeManagement(base.ManagementInterface):
    def get_supported_boot_devices(self, task):
        return list(BootDevice)

    def set_boot_device(self, task, device, persistent=False) -> None:
        info = dict(task.node.driver_internal_info or {})
        info["fake_boot_device"] = {"boot_device": BootDevice(device).value,
                                    "persistent": bool(persistent)}
        task.update(driver_internal_info=info)

    def get_boot_device(self, task) -> dict:
        return (task.node.driver_internal_info or {}).get(
            "fake_boot_device", {"boot_device": None, "persistent": None})


class FakeBoot(base.BootInterface):
    def prepare_ramdisk(self, task) -> None:
        pass

    def clean_up_ramdisk(self, task) -> None:
        pass

    def prepare_instance(self, task) -> None:
        pass

    def clean_up_instance(self, task) -> None:
        pass


class FakeDeploy(base.DeployInterface):
    def validate(self, task) -> None:
        _delay_value_ok(task)

    def deploy(self, task):
        _delay(task)
        return None

    def tear_down(self, task) -> None:
        _delay(task)

    def clean(self, task, steps):
        _delay(task)
        return None


def _delay_value_ok(task) -> None:
    try:
        float((task.node.driver_info or {}).get("fake_delay", 0))
    except (TypeError, ValueError):
        raise errors.InvalidParameter(
            "driver_info.fake_delay must be a number of seconds") from None


class FakeSteps(base.StepsInterface):
    """Fake inspect / rescue / bios / ...: every action succeeds at once."""

    def __init__(self, kind: str, context):
        super().__init__(context)
        self.kind = kind

    def run(self, task, action):
        _delay(task)
        return None


class NoSteps(base.StepsInterface):
    """``no-*`` / ``noop`` implementations: validate passes, actions are refused."""

    def __init__(self, kind: str, context):
        super().__init__(context)
        self.kind = kind
