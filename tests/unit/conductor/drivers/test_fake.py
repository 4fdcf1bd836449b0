"""The fake power interface's machine switched behind the conductor's back
(``driver_info.fake_power_state``): reported instead of the recorded state, so the
power sync has something to notice; a power action sets it to the new state."""
from types import SimpleNamespace

from conductor.drivers.base import PowerState
from conductor.drivers.fake import FakePower


class RecordingTask:
    """A task twin: the node's fields and the updates made under its lock."""

    def __init__(self, **fields):
        self.node = SimpleNamespace(**{"power_state": None, "driver_info": {}, **fields})

    def update(self, **values):
        for key, value in values.items():
            setattr(self.node, key, value)


def test_reports_the_recorded_state_unless_switched():
    power = FakePower(None)
    task = RecordingTask(power_state="power on")
    assert power.get_power_state(task) is PowerState.ON
    task.node.driver_info = {"fake_power_state": "power off"}
    assert power.get_power_state(task) is PowerState.OFF


def test_a_power_action_sets_the_switched_state_too():
    power = FakePower(None)
    task = RecordingTask(power_state="power on", driver_info={"fake_power_state": "power off",
                                                              "fake_delay": 1})
    power.set_power_state(task, PowerState.ON)
    assert task.node.power_state == "power on"
    assert task.node.driver_info == {"fake_power_state": "power on", "fake_delay": 1}
    power.set_power_state(task, PowerState.SOFT_OFF)
    assert power.get_power_state(task) is PowerState.OFF
    plain = RecordingTask(power_state="power off")
    power.reboot(plain)
    assert plain.node.power_state == "power on" and plain.node.driver_info == {}
