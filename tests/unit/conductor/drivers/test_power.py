"""Power actions on a locked node (conductor/drivers/power.py) and the wait for the
agent's own power off (conductor/drivers/deploy/direct.py): the state a power
interface reached is recorded without asking the BMC again, the agent of the boot
that ended is forgotten in the same UPDATE, and an agent that powered the node off
gets no second power request (as Ironic)."""
from __future__ import annotations

import pytest

from conductor import config
from conductor.db.records import Node
from conductor.drivers import internal_info
from conductor.drivers.base import PowerState
from conductor.drivers.deploy import direct
from conductor.drivers.power import powered_off, set_power
from conductor.engine.task import Task

AGENT_INFO = {"agent_token_hash": "ab" * 32, "agent_url": "https://10.0.0.5:9999",
              "agent_verify_ca": "PEM", "other": 1}


class Store:
    """Records every UPDATE (node id, values)."""

    def __init__(self):
        self.updates: list[dict] = []

    def update_node(self, node_id, values, expect=None) -> bool:
        self.updates.append(dict(values))
        return True


class Power:
    """A BMC that is at ``state``; counts what it was asked."""

    def __init__(self, states=(PowerState.ON,)):
        self.states, self.asked, self.requests = list(states), 0, []

    def get_power_state(self, task) -> PowerState:
        self.asked += 1
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def set_power_state(self, task, state, timeout=None) -> None:
        self.requests.append(PowerState(state))

    def reboot(self, task, timeout=None) -> None:
        self.requests.append(PowerState.REBOOT)


class Drivers:
    def __init__(self, power: Power, settings):
        self.power = power
        self.context = type("Context", (), {"settings": settings, "cipher": None})()

    def build(self, kind: str, name: str):
        assert kind == "power"
        return self.power


def make_task(power: Power, wait: float = 30) -> tuple[Task, Store]:
    store = Store()
    settings = config.from_options({"agent.post_deploy_power_off_wait": wait})
    node = Node(id=7, uuid="0c4b6a1e-28b6-4a5e-9d0a-47f4e9b0c0de", power_interface="fake",
                driver_internal_info=dict(AGENT_INFO), provision_state="deploying")
    return Task(store, node, "conductor-1", Drivers(power, settings)), store


@pytest.mark.parametrize("target, recorded, forgets", [
    (PowerState.ON, PowerState.ON, False), (PowerState.OFF, PowerState.OFF, True),
    (PowerState.SOFT_OFF, PowerState.OFF, True), (PowerState.REBOOT, PowerState.ON, True),
])
def test_set_power_records_what_the_interface_reached(target, recorded, forgets):
    power = Power()
    task, store = make_task(power)
    set_power(task, target, deploy_step={"step": "x"})
    assert power.asked == 0    # the interface waited for the state: no second question
    assert len(store.updates) == 1  # state, agent and the caller's values: one UPDATE
    update = store.updates[0]
    assert update["power_state"] == recorded.value and update["target_power_state"] is None
    assert update["deploy_step"] == {"step": "x"}
    assert ("driver_internal_info" in update) is forgets
    if forgets:
        assert update["driver_internal_info"] == {"other": 1}
        assert not internal_info.has_agent(task.node)


def test_powered_off_records_without_a_power_request():
    power = Power()
    task, store = make_task(power)
    powered_off(task, deploy_step={"step": "boot_instance"})
    assert power.requests == [] and power.asked == 0
    assert store.updates == [{"deploy_step": {"step": "boot_instance"},
                              "power_state": "power off", "target_power_state": None,
                              "driver_internal_info": {"other": 1}}]


class Clock:
    """time for direct.py: sleeping advances it."""

    def __init__(self):
        self.now, self.slept = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Agent:
    def __init__(self):
        self.sent = []

    def command(self, name, params, wait=False):
        self.sent.append(name)


def test_an_agent_that_powers_off_gets_no_power_request(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(direct, "time", clock)
    power = Power([PowerState.ON, PowerState.OFF])
    task, store = make_task(power)
    agent = Agent()
    direct._power_off_agent(task, agent)
    assert agent.sent == ["standby.power_off"]
    assert power.requests == [] and power.asked == 2
    assert clock.slept[0] == direct.POWER_OFF_POLL_FIRST  # no look before the first pause
    assert store.updates[-1]["power_state"] == "power off"
    assert store.updates[-1]["deploy_step"] == direct.STEPS["boot_instance"]
    assert not internal_info.has_agent(task.node)


def test_an_agent_that_stays_on_is_forced_off(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(direct, "time", clock)
    power = Power([PowerState.ON])
    task, store = make_task(power, wait=5)
    direct._power_off_agent(task, Agent())
    assert power.requests == [PowerState.OFF]
    assert sum(clock.slept) == pytest.approx(5) and max(clock.slept) <= \
        direct.POWER_OFF_POLL_MAX
    assert store.updates[-1]["power_state"] == "power off"
    assert store.updates[-1]["deploy_step"] == direct.STEPS["boot_instance"]


def test_a_wiped_agent_is_written_at_once_inside_merged_writes():
    """Merged writes wait for the end of their block; an agent's token wiped by a
    power change does not: it is written at once, with what the block held so far."""
    task, store = make_task(Power())
    with task.merged_writes():
        task.update(last_error=None)
        set_power(task, PowerState.ON)               # keeps the agent: waits
        assert store.updates == []
        set_power(task, PowerState.REBOOT)           # ends the boot: at once
        assert len(store.updates) == 1
        assert store.updates[0]["driver_internal_info"] == {"other": 1}
        assert store.updates[0]["last_error"] is None
        task.update(deploy_step={"step": "x"})
    assert store.updates[1:] == [{"deploy_step": {"step": "x"}}]
