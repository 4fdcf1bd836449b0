"""The ``direct`` deploy interface: the ramdisk agent writes the image (Ironic's
AgentDeploy), driven by the agent's heartbeats.

deploy(): node rebooted into the ramdisk -> "wait call-back". Then, one heartbeat
at a time (each handled by a worker holding the node lock):
  1. ``deploy.get_deploy_steps`` (wait) -> ``deploy.execute_deploy_step`` write_image
     (async) -> back to "wait call-back";
  2. later heartbeats poll ``GET /v1/commands/`` until write_image has finished;
  3. ``standby.get_partition_uuids`` -> ``image.install_bootloader`` (UEFI partition
     images only) -> ``standby.power_off`` (forced off if it does not happen) ->
     PXE config removed, boot device disk, power on -> "active".
Cleaning (agent_clean.py) is the same dance with clean steps. A delta deploy
(instance_info.image_delta_url) tries write_image with the delta first and, when
that step fails, runs it again with the full image (conductor/drivers/deploy/delta.py).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from conductor import errors, states
from conductor.drivers import base
from conductor.drivers.base import PowerState
from conductor.drivers.deploy import clean as agent_clean
from conductor.drivers.deploy import common as agent_base
from conductor.drivers.deploy import delta as deploy_delta
from conductor.drivers.deploy import patches as deploy_patches
from conductor.drivers.power import powered_off, set_power, wipe_agent
from ramdisk_agent.wire import checksum
from ramdisk_agent.wire.errors import ChecksumError

if TYPE_CHECKING:
    from conductor.engine.task import Task

LOG = logging.getLogger(__name__)
S = states.State

IMAGE_SCHEMES = ("http", "https", "file")
#: instance_info's names for the image checksum fields (the agent's lack ``image_``).
CHECKSUM_FIELDS = checksum.FieldNames(algo="image_os_hash_algo", value="image_os_hash_value",
                                      checksum="image_checksum")
#: The deploy steps this interface runs, with Ironic's priorities.
STEPS = {name: {"interface": "deploy", "step": name, "priority": prio, "args": {},
                "reboot_requested": False, "abortable": False}
         for name, prio in (("deploy", 100), ("write_image", 80),
                            ("prepare_instance_boot", 60), ("tear_down_agent", 40),
                            ("boot_instance", 20))}
#: Polling of the power state while the agent powers itself off: the first pause
#: (the agent has just accepted the request: it is not off yet), growth, cap.
POWER_OFF_POLL_FIRST, POWER_OFF_POLL_GROWTH, POWER_OFF_POLL_MAX = 0.5, 1.5, 1.0
PARTITION_FIELDS = ("root_gb", "root_mb", "swap_mb", "ephemeral_mb", "ephemeral_format",
                    "preserve_ephemeral", "kernel", "ramdisk")


def checksum_fields(info: dict) -> dict:
    """image_info's os_hash_algo/os_hash_value from instance_info; 400 when unusable.

    The policy (which algorithms, which shapes) is the agent's own, shared through
    ramdisk_agent/wire/checksum.py, so a node the conductor accepts the agent accepts."""
    try:
        expected = checksum.parse(info.get("image_os_hash_algo"),
                                  info.get("image_os_hash_value"),
                                  info.get("image_checksum"), CHECKSUM_FIELDS)
    except ChecksumError as exc:
        raise errors.InvalidParameter(f"instance_info: {exc}.") from None
    return expected.image_info_fields()


def image_type(info: dict) -> str:
    explicit = info.get("image_type")
    if explicit:
        return explicit
    return "partition" if info.get("kernel") and info.get("ramdisk") else "whole-disk"


def boot_mode(node) -> str:
    info = node.instance_info or {}
    caps = str((node.properties or {}).get("capabilities", ""))
    from_caps = dict(p.split(":", 1) for p in caps.split(",") if ":" in p).get("boot_mode")
    return node.boot_mode or info.get("deploy_boot_mode") or from_caps or "uefi"


def image_id(source: str, node_uuid: str) -> str:
    """image_info's ``id``: the image's file name, the last path segment, as Ironic
    sends for a URL image.

    A stock IPA downloads every image it does not stream (qcow2, or no
    ``image_disk_format``) to ``$TMPDIR/<id>``, so the id must be one path segment: a
    whole URL there is a path that does not exist. Unlike Ironic's plain
    ``split('/')``, a query string is not part of the name.
    """
    name = urlparse(source).path.rstrip("/").rsplit("/", 1)[-1]
    return name if name not in ("", ".", "..") else node_uuid


def image_info(node) -> dict:
    """The ``image_info`` argument of write_image (Ironic's agent.py layout)."""
    info = node.instance_info or {}
    source = info.get("image_source")
    if not source or urlparse(str(source)).scheme not in IMAGE_SCHEMES:
        raise errors.InvalidParameter(
            f"instance_info.image_source must be an http, https or file URL, not "
            f"{source!r}.")
    result = {"id": image_id(str(source), node.uuid), "urls": [source],
              "node_uuid": node.uuid,
              "disk_format": info.get("image_disk_format"),
              "container_format": info.get("image_container_format", "bare"),
              "stream_raw_images": True, "image_type": image_type(info)}
    result.update(checksum_fields(info))
    if result["image_type"] == "partition":
        if not info.get("root_gb"):
            raise errors.InvalidParameter("A partition image needs instance_info.root_gb.")
        result.update({k: info[k] for k in PARTITION_FIELDS if k in info})
        result.update(deploy_boot_mode=boot_mode(node), boot_option="local",
                      disk_label="gpt" if boot_mode(node) == "uefi" else "msdos")
    return result


class AgentDeploy(base.DeployInterface):
    """``direct``: works with any power/management/boot interface, fake ones included."""

    def validate(self, task: Task) -> None:
        image_info(task.node)
        deploy_delta.validate(task.node)

    def deploy(self, task: Task) -> str:
        settings = task.context.settings
        task.context.image_checks.check(image_info(task.node)["urls"][0],
                                        settings.agent.image_head_timeout)
        set_power(task, PowerState.REBOOT, deploy_step=STEPS["deploy"])
        LOG.info("Node %s: rebooted into the agent ramdisk, waiting for its call-back",
                 task.node.uuid)
        return "wait"

    def tear_down(self, task: Task) -> None:
        wipe_agent(task)

    def clean(self, task: Task, steps: list[dict] | None) -> str:
        return agent_clean.start(task, steps)

    def heartbeat(self, task: Task, finish_deploy: Callable[[Task], None]) -> None:
        """Continue deploy or clean after a heartbeat (called by a worker, node locked).

        ``finish_deploy`` is the engine's last deploy step (boot the written disk,
        DNS, active); it runs here so that its failure is the deploy's failure.
        """
        flow = HEARTBEAT_FLOWS.get(task.node.provision_state or "")
        if flow is None:
            return
        what, step_field, run = flow
        try:
            run(task, finish_deploy)
        except Exception as exc:  # every failure must land in last_error
            name = (getattr(task.node, step_field) or {}).get("step") or "agent call-back"
            if not isinstance(exc, errors.MetalcastError):
                LOG.exception("Node %s: unexpected error in %s", task.node.uuid, name)
            agent_base.fail(task, f"{what} step {name}", exc)


def continue_deploy(task: Task, finish_deploy: Callable[[Task], None]) -> None:
    """One heartbeat in "wait call-back": start, poll or finish write_image."""
    agent = agent_base.client(task)
    step = (task.node.deploy_step or {}).get("step")
    if step in (None, "deploy"):
        deploy_delta.begin(task)
        return _start_write(task, agent, finish_deploy)
    if step != "write_image":
        return
    try:
        if not agent_base.step_finished(agent, "deploy", task.node.deploy_step):
            return  # still writing: this heartbeat only kept the node fresh
    except errors.AgentCommandError as exc:
        if not deploy_delta.fall_back(task, exc):  # the delta failed: full image now
            raise
        return _start_write(task, agent, finish_deploy)
    _finish(task, agent, finish_deploy, resume=True)


def _start_write(task: Task, agent, finish_deploy: Callable[[Task], None]) -> None:
    ports = agent_base.ports_payload(task)  # the same for both commands: read once
    found = agent.command("deploy.get_deploy_steps", _params(task, ports), wait=True)
    offered = (found.result or {}).get("deploy_steps") or {}
    names = {s.get("step") for steps in offered.values() if isinstance(steps, list)
             for s in steps if isinstance(s, dict)}
    if "write_image" not in names:
        raise errors.AgentCommandError(reason="the agent does not offer the write_image "
                                              f"deploy step (offers {sorted(map(str, names))})")
    agent_base.advance(task, "resume", deploy_step=STEPS["write_image"])
    version = (found.result or {}).get("hardware_manager_version")
    try:
        started = _execute_write(task, agent, version, ports)
    except errors.AgentCommandError as exc:
        if not deploy_delta.fall_back(task, exc):
            raise
        started = _execute_write(task, agent, version, ports)
    if started.running:
        LOG.info("Node %s: write_image started on the agent", task.node.uuid)
        agent_base.advance(task, "wait")
        return
    _finish(task, agent, finish_deploy)


def _execute_write(task: Task, agent, version, ports: list[dict]):
    """Start write_image (with the delta while one is being tried)."""
    args = {"image_info": deploy_delta.add_to(task, image_info(task.node)),
            "configdrive": (task.node.instance_info or {}).get("configdrive")}
    params = dict(_params(task, ports), step=dict(STEPS["write_image"], args=args),
                  deploy_version=version)
    return agent.command("deploy.execute_deploy_step", params, wait=False)


def _finish(task: Task, agent, finish_deploy: Callable[[Task], None],
            resume: bool = False) -> None:
    """prepare_instance_boot, tear_down_agent, boot_instance: node becomes active.

    ``resume``: the node is still in "wait call-back" (this heartbeat found
    write_image done); it goes back to "deploying" in the UPDATE that records the image.
    """
    info = deploy_delta.finished(task, checksum_fields(task.node.instance_info or {}), agent)
    values = {"driver_internal_info": info, "deploy_step": STEPS["prepare_instance_boot"]}
    if resume:
        agent_base.advance(task, "resume", **values)
    else:
        task.update(**values)
    deploy_patches.install(task, agent)  # Applied patches into the new root, if any
    info = _prepare_instance_boot(task, agent)
    task.update(driver_internal_info=info, deploy_step=STEPS["tear_down_agent"])
    _power_off_agent(task, agent)  # ends in the boot_instance step
    # Ramdisk config removed, instance boot prepared, boot device disk, power on, active.
    finish_deploy(task)
    LOG.info("Node %s: deployed by the agent, now active", task.node.uuid)


def _prepare_instance_boot(task: Task, agent) -> dict:
    """The root's UUID from the agent (and the bootloader installed where a partition
    image needs one); the node's driver_internal_info with that UUID, for the next
    UPDATE."""
    if task.node.deploy_step != STEPS["prepare_instance_boot"]:  # install_patches ran
        task.update(deploy_step=STEPS["prepare_instance_boot"])
    uuids = agent.command("standby.get_partition_uuids", {}, wait=True).result or {}
    info = dict(task.node.driver_internal_info or {})
    info["root_uuid_or_disk_id"] = uuids.get("root uuid")
    node_info = task.node.instance_info or {}
    if image_type(node_info) != "partition" or boot_mode(task.node) != "uefi":
        return info  # whole-disk images carry their own bootloader
    agent.command("image.install_bootloader", {
        "root_uuid": uuids.get("root uuid"),
        "efi_system_part_uuid": uuids.get("efi system partition uuid"),
        "prep_boot_part_uuid": uuids.get("PReP Boot partition uuid"),
        "target_boot_mode": "uefi"}, wait=False)
    agent.wait_done("image.install_bootloader")
    return info


def _power_off_agent(task: Task, agent) -> None:
    """Ask the agent to power off (it syncs disks first), then make sure it is off."""
    try:
        agent.command("standby.power_off", {}, wait=False)
    except errors.MetalcastError as exc:
        LOG.warning("Node %s: soft power off through the agent failed (%s); forcing it",
                    task.node.uuid, exc)
    wait = task.context.settings.agent.post_deploy_power_off_wait
    deadline, pause = time.monotonic() + wait, POWER_OFF_POLL_FIRST
    while True:
        # A pause before each look (an agent needs a moment to sync and go), growing
        # to POWER_OFF_POLL_MAX so a slow machine costs few BMC requests.
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        if task.power.get_power_state(task) is PowerState.OFF:
            powered_off(task, deploy_step=STEPS["boot_instance"])  # no 2nd request (Ironic)
            return
        if time.monotonic() >= deadline:
            break
        pause = min(pause * POWER_OFF_POLL_GROWTH, POWER_OFF_POLL_MAX)
    LOG.warning("Node %s: still on %s s after the agent's power off; forcing it off",
                task.node.uuid, wait)
    set_power(task, PowerState.OFF, deploy_step=STEPS["boot_instance"])


def _params(task: Task, ports: list[dict]) -> dict:
    return {"node": agent_base.node_payload(task.node), "ports": ports}


#: Wait state -> (what the operator reads, the node's step field, the continuation).
HEARTBEAT_FLOWS = {
    S.DEPLOYWAIT.value: ("Deploy", "deploy_step", continue_deploy),
    S.CLEAN_WAIT.value: ("Cleaning", "clean_step",
                         lambda task, _finish_deploy: agent_clean.continue_clean(task)),
}
