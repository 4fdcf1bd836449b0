"""Cleaning through the agent (provide, undeploy, manual clean): Ironic's agent
clean steps, one per heartbeat.

start(): ramdisk prepared, node rebooted -> "clean wait". First heartbeat:
``clean.get_clean_steps`` -> the steps to run (automated: priority > 0 after the
[deploy] overrides, highest first; manual: the requested ones, in order). Each step
is ``clean.execute_clean_step`` (async); a later heartbeat sees it finished and
starts the next. After the last: ramdisk cleaned up, power off (token wiped) ->
"available" (or "manageable" for a manual clean).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from conductor import errors, states
from conductor.drivers.base import PowerState
from conductor.drivers.deploy import common as agent_base
from conductor.drivers.internal_info import CleanRun, without_clean
from conductor.drivers.power import set_power

if TYPE_CHECKING:
    from conductor.engine.task import Task

LOG = logging.getLogger(__name__)
S = states.State

#: Agent step name -> the [deploy] key overriding its automated priority.
PRIORITY_OVERRIDES = {
    "erase_devices": "erase_devices_priority",
    "erase_devices_metadata": "erase_devices_metadata_priority",
}
STEP_KEYS = ("interface", "step", "priority", "reboot_requested", "abortable",
             "requires_ramdisk")


def start(task: Task, requested: list[dict] | None) -> str:
    """Boot the node into the agent for cleaning; "wait" for its heartbeat."""
    info = without_clean(task.node.driver_internal_info)
    if requested:
        info = CleanRun(request=requested, manual=True).into(info)
    task.update(driver_internal_info=info, clean_step={})
    task.boot.prepare_ramdisk(task)
    set_power(task, PowerState.REBOOT)
    LOG.info("Node %s: rebooted into the agent ramdisk for cleaning", task.node.uuid)
    return "wait"


def continue_clean(task: Task) -> None:
    """One heartbeat in "clean wait": list the steps, or see the current one finish."""
    agent = agent_base.client(task)
    current = task.node.clean_step or {}
    if not current:
        found = agent.command("clean.get_clean_steps", _params(task), wait=True)
        result = found.result or {}
        run = CleanRun.of(task.node)
        steps = choose_steps(result.get("clean_steps") or {}, run.request,
                             task.context.settings)
        run = dataclasses.replace(run, steps=steps,
                                  version=result.get("hardware_manager_version"))
        task.update(driver_internal_info=run.into(task.node.driver_internal_info))
        LOG.info("Node %s: clean steps %s", task.node.uuid, [s["step"] for s in steps])
        return _next_step(task, agent)
    if agent_base.step_finished(agent, "clean", current):
        _next_step(task, agent)


def choose_steps(offered: dict, requested: list[dict] | None, settings) -> list[dict]:
    """The steps to run, from the agent's ``{manager: [step, ...]}`` answer."""
    by_name: dict[Any, dict] = {}
    for steps in offered.values():
        for step in steps if isinstance(steps, list) else ():
            if isinstance(step, dict) and step.get("interface", "deploy") == "deploy":
                known = by_name.get(step.get("step"))
                if known is None or step.get("priority", 0) > known.get("priority", 0):
                    by_name[step.get("step")] = step
    if requested:
        return [_requested(step, by_name) for step in requested]
    chosen = []
    for name, step in by_name.items():
        option = PRIORITY_OVERRIDES.get(name)
        priority = getattr(settings.deploy, option) if option else step.get("priority", 0)
        if priority and priority > 0:
            chosen.append(dict(_clean(step), priority=priority, args={}))
    return sorted(chosen, key=lambda s: -s["priority"])


def _requested(step: dict, by_name: dict) -> dict:
    if step.get("interface") != "deploy" or step.get("step") not in by_name:
        raise errors.InvalidParameter(
            f"Clean step {step.get('interface')}.{step.get('step')} is not offered by the "
            f"agent; it offers deploy.{', deploy.'.join(sorted(by_name))}.")
    return dict(_clean(by_name[step["step"]]), args=step.get("args") or {})


def _clean(step: dict) -> dict:
    return {k: step[k] for k in STEP_KEYS if k in step}


def _next_step(task: Task, agent) -> None:
    if task.node.provision_state == S.CLEAN_WAIT.value:
        agent_base.advance(task, "resume")
    run = CleanRun.of(task.node)
    while run.steps:
        step = run.steps[0]
        run = dataclasses.replace(run, steps=run.steps[1:])
        task.update(clean_step=step,
                    driver_internal_info=run.into(task.node.driver_internal_info))
        params = dict(_params(task), step=step, clean_version=run.version)
        started = agent.command("clean.execute_clean_step", params, wait=False)
        if started.running:
            LOG.info("Node %s: clean step %s started", task.node.uuid, step["step"])
            agent_base.advance(task, "wait")
            return
    _finish(task)


def _finish(task: Task) -> None:
    manual = CleanRun.of(task.node).manual
    task.boot.clean_up_ramdisk(task)
    set_power(task, PowerState.OFF)
    task.process_event("manage" if manual else "done", last_error=None, clean_step={},
                       driver_internal_info=without_clean(task.node.driver_internal_info))
    LOG.info("Node %s: cleaning by the agent finished", task.node.uuid)


def _params(task: Task) -> dict:
    return {"node": agent_base.node_payload(task.node),
            "ports": agent_base.ports_payload(task)}
