"""What the agent-driven deploy and clean flows share: the agent's fields in
driver_internal_info, the node/port payloads sent with commands, the client of a
task, and the failure path (power off, token wiped, fail event with last_error).
"""
from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING

import requests

from conductor import errors, states
from conductor.drivers.deploy.client import SUCCEEDED, AgentClient
from conductor.drivers.base import PowerState
from conductor.secrets import MASK, is_secret_key

if TYPE_CHECKING:
    from conductor.engine.task import Task

LOG = logging.getLogger(__name__)
S = states.State

#: driver_internal_info keys that belong to one boot of the agent; wiped together
#: (token, URL, CA) on power off / reboot and at the end of deploy and clean.
AGENT_FIELDS = ("agent_secret_token", "agent_url", "agent_version",
                "agent_last_heartbeat", "agent_verify_ca")
#: Node fields sent to the agent as ``params.node`` (secrets masked).
NODE_PAYLOAD_FIELDS = (
    "uuid", "name", "driver", "provision_state", "target_provision_state", "power_state",
    "properties", "instance_info", "instance_uuid", "driver_info", "driver_internal_info",
    "extra", "deploy_step", "clean_step", "boot_mode", "secure_boot", "automated_clean",
    "disable_power_off", "traits", "boot_interface", "deploy_interface",
    "management_interface", "power_interface", "resource_class", "conductor_group")
#: driver_internal_info keys of one cleaning run (conductor/drivers/deploy/clean.py).
CLEAN_KEYS = ("agent_clean_steps", "agent_clean_request", "agent_clean_manual",
              "agent_clean_version")
PORT_PAYLOAD_FIELDS = ("uuid", "address", "pxe_enabled", "local_link_connection",
                       "physical_network", "extra", "node_uuid")


def wipe_agent(task: Task) -> None:
    """Forget the agent of the last boot: its token is never valid again."""
    info = task.node.driver_internal_info or {}
    if any(key in info for key in AGENT_FIELDS):
        task.update(driver_internal_info={k: v for k, v in info.items()
                                          if k not in AGENT_FIELDS})
        LOG.info("Node %s: agent token and URL wiped", task.node.uuid)


def forget_agent(task: Task) -> dict:
    """Values for the node's next UPDATE that drop its agent; {} when it has none.

    Reads the row again: callers may hold a node read before they took the lock.
    """
    if task.node.provision_state not in {s.value for s in states.TARGETS}:
        return {}  # stable state: no agent flow to end
    info = task.store.get_node_by_id(task.node.id).driver_internal_info or {}
    if not any(key in info for key in AGENT_FIELDS):
        return {}
    return {"driver_internal_info": {k: v for k, v in info.items() if k not in AGENT_FIELDS}}


def _masked(value):
    if not isinstance(value, dict):
        return value
    return {k: (MASK if is_secret_key(k) and v not in (None, "") else v)
            for k, v in value.items()}


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
    """The command API client of the node's current agent (shared HTTP session)."""
    context = task.context
    session = context.shared("agent-http-session", requests.Session) if context else None
    return AgentClient(task.node, settings_of(task), session)


def settings_of(task: Task):
    settings = getattr(task.context, "settings", None)
    if settings is None:
        from conductor.config import Settings
        settings = Settings()
    return settings


def advance(task: Task, event: str) -> None:
    """process_event that keeps a manual clean heading for manageable."""
    manual = (task.node.driver_internal_info or {}).get("agent_clean_manual")
    target = S.MANAGEABLE if manual and event in ("resume", "wait") else None
    task.process_event(event, target=target)


def set_power(task: Task, target: PowerState) -> None:
    """Power action through the node's power interface (wipes the agent on off/reboot)."""
    from conductor.engine import actions as provisioning  # provisioning imports this module
    provisioning.set_power(task, target)


def fail(task: Task, what: str, exc: BaseException) -> None:
    """A step failed: power the node off (best effort), wipe the agent, fail the node."""
    message = f"{what} failed on node {task.node.uuid}: {error_text(exc)}"
    LOG.error("Node %s: %s", task.node.uuid, message)
    try:
        set_power(task, PowerState.OFF)
    except Exception as power_exc:  # noqa: BLE001 - the failure must still be recorded
        LOG.warning("Node %s: power off after failure failed: %s", task.node.uuid,
                    error_text(power_exc))
        wipe_agent(task)
    step_field = "clean_step" if task.node.provision_state in (
        S.CLEANING.value, S.CLEAN_WAIT.value) else "deploy_step"
    info = dict(task.node.driver_internal_info or {})
    for key in CLEAN_KEYS:
        info.pop(key, None)
    task.process_event("fail", last_error=message, driver_internal_info=info,
                       **{step_field: {}})


def error_text(exc: BaseException) -> str:
    if isinstance(exc, errors.MetalcastError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
