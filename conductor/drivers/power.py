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


#: The state a power request leaves the machine in once the interface returns.
REACHED = {PowerState.ON: PowerState.ON, PowerState.OFF: PowerState.OFF,
           PowerState.SOFT_OFF: PowerState.OFF, PowerState.REBOOT: PowerState.ON,
           PowerState.SOFT_REBOOT: PowerState.ON}


def set_power(task: Task, target: PowerState, timeout: int | None = None,
              write: bool = True, **values: Any) -> dict[str, Any]:
    """Drive the power interface and record the state it reached (with ``values``,
    in the same UPDATE); the values of that UPDATE. ``write=False`` leaves them to
    the caller's next UPDATE (the end of a deploy writes them with its state change).

    A power interface returns only once the BMC reports the requested state (IPMI
    and Redfish poll for it, or raise), so that state is recorded without asking
    the BMC once more, as Ironic's node_power_action does.
    """
    if target in (PowerState.REBOOT, PowerState.SOFT_REBOOT):
        task.power.reboot(task, timeout)
    else:
        task.power.set_power_state(task, target, timeout)
    reached = REACHED.get(target) or task.power.get_power_state(task)
    # Anything but a plain power on ends that boot: its agent's token must not work.
    return _record(task, reached, target is not PowerState.ON, values, write)


def powered_off(task: Task, **values: Any) -> None:
    """Record that the BMC reported the node off (its agent powered it off) and
    forget that boot's agent, without another power request (``values`` with it)."""
    _record(task, PowerState.OFF, True, values)


def _record(task: Task, state: PowerState, forget_agent: bool, extra: dict[str, Any],
            write: bool = True) -> dict[str, Any]:
    """One UPDATE: the power state, ``extra`` and, when the boot ended, its agent
    wiped (its values returned; not written when ``write`` is false)."""
    values: dict[str, Any] = dict(extra, power_state=state.value, target_power_state=None)
    wiped = forget_agent and internal_info.has_agent(task.node)
    if wiped:
        values["driver_internal_info"] = internal_info.without_agent(
            task.node.driver_internal_info)
    if write and wiped:
        task.update_now(**values)   # the boot's token must stop working now
    elif write:
        task.update(**values)
    if wiped:
        LOG.info("Node %s: agent token and URL wiped", task.node.uuid)
    return values


def wipe_agent(task: Task) -> None:
    """Forget the agent of the last boot: its token is never valid again."""
    if internal_info.has_agent(task.node):
        task.update_now(driver_internal_info=internal_info.without_agent(
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
