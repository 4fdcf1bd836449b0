"""The long-running actions a worker performs on a locked node.

Each function starts with the node already in its transient state (the service
facade moved it there when it took the lock) and ends it in a stable, wait or
failed state. Any exception becomes the 'fail' event with ``last_error`` set.
"""
from __future__ import annotations

import logging
from typing import Any

from conductor import errors, states
from conductor.dns import registration as dns_registration
from conductor.drivers.base import BootDevice, PowerState
from conductor.drivers.power import set_power
from conductor.engine.task import Task

LOG = logging.getLogger(__name__)
S = states.State


def ports_changed(task: Task, old_macs: list[str]) -> None:
    """A port change another process handed over (conductor/service/ports.py): the
    node's boot interface drops the lost MACs' files here, in this conductor's boot
    roots, and rewrites a live ramdisk config. The port row is written already: a
    boot-side failure is logged, never turned into the node's failure."""
    try:
        task.boot.ports_changed(task, set(old_macs))
    except errors.MetalcastError as exc:
        LOG.error("Node %s: boot config not updated after a port change: %s",
                  task.node.uuid, exc)


def verify(task: Task) -> None:
    """enroll -> verifying -> manageable: the BMC must answer with our credentials."""
    task.power.validate(task)
    task.management.validate(task)
    power = task.power.get_power_state(task)
    task.process_event("done", power_state=power.value, last_error=None)


def clean(task: Task, steps: list[dict[str, Any]] | None = None, manual: bool = False) -> None:
    """cleaning -> available (automated) or manageable (manual steps)."""
    automated = task.node.automated_clean
    if not manual and automated is False:
        LOG.info("Node %s: automated cleaning disabled, skipping", task.node.uuid)
    elif task.deploy.clean(task, steps) == "wait":
        task.process_event("wait", target=S.MANAGEABLE if manual else None)
        return
    set_power(task, PowerState.OFF)
    task.process_event("manage" if manual else "done", last_error=None, clean_step={})


def deploy(task: Task) -> None:
    """deploying -> wait call-back (agent deploys) or active (already written).
    The boot device, the power state and the state change are one UPDATE (an agent
    token wiped by the reboot is written at once: conductor/drivers/power.py)."""
    with task.merged_writes():
        task.boot.prepare_ramdisk(task)
        if task.deploy.deploy(task) == "wait":
            task.process_event("wait")
            return
        finish_deploy(task)


def finish_deploy(task: Task) -> None:
    """Boot the written instance and mark the node active (the boot device and power
    state written with "done", in one UPDATE; DNS records are written at once)."""
    with task.merged_writes():
        task.boot.clean_up_ramdisk(task)
        task.boot.prepare_instance(task)
        task.management.set_boot_device(task, BootDevice.DISK, persistent=True)
        powered = set_power(task, PowerState.ON, write=False)  # recorded with "done"
        # DNS before "done": that UPDATE also drops the node lock the records are kept
        # under.
        dns_registration.on_active(task)
        task.process_event("done", last_error=None, deploy_step={}, **powered)


def tear_down(task: Task) -> None:
    """deleting -> cleaning -> available: remove the instance, then clean."""
    task.deploy.tear_down(task)
    task.boot.clean_up_instance(task)
    set_power(task, PowerState.OFF)
    dns_registration.on_undeploy(task)
    task.process_event("clean", instance_info={}, instance_uuid=None)
    clean(task)


def inspect(task: Task) -> None:
    if task.iface("inspect").run(task, "inspect") == "wait":
        task.process_event("wait")
    else:
        task.process_event("done", last_error=None)


def adopt(task: Task) -> None:
    """manageable -> adopting -> active without touching the disks."""
    task.boot.validate(task)
    task.boot.prepare_instance(task)
    dns_registration.on_active(task)
    task.process_event("done", last_error=None)


def rescue(task: Task) -> None:
    if task.iface("rescue").run(task, "rescue") == "wait":
        task.process_event("wait")
    else:
        task.process_event("done", last_error=None)


def unrescue(task: Task) -> None:
    task.iface("rescue").run(task, "unrescue")
    task.process_event("done", last_error=None)


def heartbeat(task: Task) -> None:
    """An agent called back: the deploy interface continues its steps, ending with
    :func:`finish_deploy` when the instance is written."""
    task.deploy.heartbeat(task, finish_deploy)


def service(task: Task, steps: list[dict[str, Any]] | None = None) -> None:
    task.process_event("done", last_error=None, service_step={})


def change_power(task: Task, target: PowerState, timeout: int | None = None) -> None:
    """The user's PUT states/power: errors land in last_error, state unchanged."""
    set_power(task, target, timeout)
    task.update(last_error=None)


#: Verb (machine event) -> action run by a worker after the first transition.
ACTIONS = {
    "manage": verify, "provide": clean, "clean": clean, "deploy": deploy,
    "rebuild": deploy, "delete": tear_down, "inspect": inspect, "adopt": adopt,
    "rescue": rescue, "unrescue": unrescue, "service": service,
}
