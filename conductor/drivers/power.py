"""Power actions on a locked node, and what a power change does to the agent's token.

Drivers (the agent deploy and clean flows) and the engine's actions both power
nodes through here, so the rule "a node that powers off or reboots forgets its
agent" holds on every path: the token of that boot must never work again.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from conductor import states
from conductor.drivers import internal_info
from conductor.drivers.base import PowerState

if TYPE_CHECKING:
    from conductor.engine.task import Task

LOG = logging.getLogger(__name__)


def set_power(task: Task, target: PowerState, timeout: int | None = None) -> None:
    """Drive the power interface and record the state the BMC then reports."""
    if target in (PowerState.REBOOT, PowerState.SOFT_REBOOT):
        task.power.reboot(task, timeout)
    else:
        task.power.set_power_state(task, target, timeout)
    task.update(power_state=task.power.get_power_state(task).value, target_power_state=None)
    if target is not PowerState.ON:
        wipe_agent(task)  # that boot's agent is gone: its token must not work


def wipe_agent(task: Task) -> None:
    """Forget the agent of the last boot: its token is never valid again."""
    if internal_info.has_agent(task.node):
        task.update(driver_internal_info=internal_info.without_agent(
            task.node.driver_internal_info))
        LOG.info("Node %s: agent token and URL wiped", task.node.uuid)


def forget_agent(task: Task) -> dict[str, Any]:
    """Values for the node's next UPDATE that drop its agent; {} when it has none.

    Reads the row again: callers may hold a node read before they took the lock.
    """
    if task.node.provision_state not in {s.value for s in states.TARGETS}:
        return {}  # stable state: no agent flow to end
    node = task.store.get_node_by_id(task.node.id)
    if not internal_info.has_agent(node):
        return {}
    return {"driver_internal_info": internal_info.without_agent(node.driver_internal_info)}
