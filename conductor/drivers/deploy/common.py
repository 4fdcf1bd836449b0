"""What the agent-driven deploy and clean flows share: the node/port payloads sent
with commands, the client of a task, step polling, and the failure path (power off,
token wiped, fail event with last_error). The agent's record in driver_internal_info
is read and written through conductor.drivers.internal_info.
"""
from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, Any

from conductor import errors, states
from conductor.drivers import internal_info
from conductor.drivers.base import PowerState
from conductor.drivers.deploy.client import SUCCEEDED, AgentClient
from conductor.drivers.power import set_power, wipe_agent
from conductor.secrets import mask

if TYPE_CHECKING:
    from conductor.engine.task import Task

LOG = logging.getLogger(__name__)
S = states.State

#: Node fields sent to the agent as ``params.node`` (secrets masked).
NODE_PAYLOAD_FIELDS = (
    "uuid", "name", "driver", "provision_state", "target_provision_state", "power_state",
    "properties", "instance_info", "instance_uuid", "driver_info", "driver_internal_info",
    "extra", "deploy_step", "clean_step", "boot_mode", "secure_boot", "automated_clean",
    "disable_power_off", "traits", "boot_interface", "deploy_interface",
    "management_interface", "power_interface", "resource_class", "conductor_group")
PORT_PAYLOAD_FIELDS = ("uuid", "address", "pxe_enabled", "local_link_connection",
                       "physical_network", "extra", "node_uuid")


def _masked(value):
    if not isinstance(value, dict):
        return value
    return mask(value)  # nested secret keys too


def _jsonable(value):
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return _masked(value)


def node_payload(node) -> dict:
    """The node as the agent sees it in command params (Ironic's as_dict(secure=True))."""
    return {field: _jsonable(getattr(node, field, None)) for field in NODE_PAYLOAD_FIELDS}


def ports_payload(task: Task) -> list[dict]:
    found = task.store.list_ports({"node_uuid": task.node.uuid})
    return [{field: getattr(port, field, None) for field in PORT_PAYLOAD_FIELDS}
            for port in found]


def step_finished(agent: AgentClient, kind: str, current: dict) -> bool:
    """Poll the agent: True once ``execute_<kind>_step`` of ``current`` has succeeded,
    False while it runs; a failed, lost or different step raises AgentCommandError."""
    name = current.get("step")
    last = agent.last_command()
    if last is None or last.name != f"execute_{kind}_step":
        raise errors.AgentCommandError(
            reason=f"the agent has no record of the {kind} step {name} (it restarted?)")
    if last.running:
        return False
    if last.status != SUCCEEDED:
        raise errors.AgentCommandError(reason=last.error_text())
    reported = ((last.result or {}).get(f"{kind}_step") or {}).get("step")
    if reported != name:
        raise errors.AgentCommandError(
            reason=f"the agent reports {kind} step {reported!r} finished, expected {name!r}")
    return True


def client(task: Task) -> AgentClient:
    """The command API client of the node's current agent (kept connections)."""
    return AgentClient(task.node, task.context.settings, task.context.agent_connections,
                       task.context.cipher)


def advance(task: Task, event: str, **values: Any) -> None:
    """process_event that keeps a manual clean heading for manageable; ``values`` are
    written in the same UPDATE."""
    manual = internal_info.CleanRun.of(task.node).manual
    target = S.MANAGEABLE if manual and event in ("resume", "wait") else None
    task.process_event(event, target=target, **values)


def fail(task: Task, what: str, exc: BaseException) -> None:
    """A step failed: power the node off (best effort), wipe the agent, fail the node."""
    message = f"{what} failed on node {task.node.uuid}: {errors.error_text(exc)}"
    LOG.error("Node %s: %s", task.node.uuid, message)
    try:
        set_power(task, PowerState.OFF)
    except Exception as power_exc:  # noqa: BLE001 - the failure must still be recorded
        LOG.warning("Node %s: power off after failure failed: %s", task.node.uuid,
                    errors.error_text(power_exc))
        wipe_agent(task)
    step_field = "clean_step" if task.node.provision_state in (
        S.CLEANING.value, S.CLEAN_WAIT.value) else "deploy_step"
    info = internal_info.without_clean(task.node.driver_internal_info)
    values: dict[str, Any] = {"driver_internal_info": info, step_field: {}}
    task.process_event("fail", last_error=message, **values)
