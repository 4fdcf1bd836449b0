"""Patches through the ramdisk: a node deployed while patches are Applied comes up current.

After ``write_image`` (conductor/drivers/deploy/direct.py ``_finish``) and before the partition
UUIDs and the power off, when the patch controller has Applied or Committed
patches for the node's release, the agent runs ``deploy.install_patches``
(ramdisk_agent/extensions/patches.py): ``dnf --installroot`` on the freshly
written root, against the release's base feed and update repo as hosts see
them. Its failure fails the deploy (last_error says why); nothing to install
costs nothing.

What the node says (all optional):

* ``instance_info.sw_version``: the release of the image; default ``[patching] release``.
* ``instance_info.patching_nodetype``, else ``properties.nodetype``, else
  "controller": the personality, which picks the comps group of new packages.
* ``instance_info.patching_subfunctions``, else ``properties.subfunctions``
  (list or comma-separated string), else ``[nodetype]``.
* ``instance_info.patching_root_partition``: the GPT partition number of the
  root file system, when the agent's guess (Linux root type, else the largest
  data partition) is wrong.

The repos' URL is ``[patching] repo_url`` or else the appliance's HTTP boot
server (whose root holds ``feed/rel-<ver>`` and ``updates/rel-<ver>``).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from conductor import errors

if TYPE_CHECKING:
    from conductor.engine.task import Task

LOG = logging.getLogger(__name__)
COMMAND = "deploy.install_patches"


def _subfunctions(value, nodetype: str) -> list[str]:
    if value in (None, "", []):
        return [nodetype]
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not value or \
            not all(isinstance(item, str) and item for item in value):
        raise errors.InvalidParameter(
            "patching_subfunctions must be a list of names or a comma-separated string")
    return value


def _repo_base(task: Task) -> str:
    settings = task.context.settings
    url = settings.patching.repo_url
    netboot = task.context.netboot
    if not url and netboot is not None:
        url = netboot.http_url
    if not url:
        raise errors.InvalidParameter(
            "patches are Applied but there is no URL the ramdisk can fetch the update "
            "repo from: enable the HTTP boot server ([pxe]) or set [patching] repo_url")
    return url.rstrip("/")


def command_params(task: Task, release: str) -> dict:
    """The ``deploy.install_patches`` params for this node (see the module doc)."""
    node = task.node
    info, props = node.instance_info or {}, node.properties or {}
    nodetype = info.get("patching_nodetype") or props.get("nodetype") or "controller"
    if not isinstance(nodetype, str):
        raise errors.InvalidParameter("patching_nodetype must be a string")
    subs = _subfunctions(info.get("patching_subfunctions", props.get("subfunctions")),
                         nodetype)
    base = _repo_base(task)
    params: dict[str, object] = {"base_repo_url": f"{base}/feed/rel-{release}",
              "updates_repo_url": f"{base}/updates/rel-{release}",
              "sw_version": release, "nodetype": nodetype, "subfunctions": subs}
    partition = info.get("patching_root_partition")
    if partition not in (None, ""):
        try:
            params["partition"] = int(partition)
        except (TypeError, ValueError):
            raise errors.InvalidParameter(
                f"patching_root_partition must be a partition number, not {partition!r}"
            ) from None
    return params


def install(task: Task, agent) -> dict | None:
    """Run ``deploy.install_patches`` when patches are Applied for the node's release.

    Returns the agent's result (None when there was nothing to do); raises
    (AgentCommandError, InvalidParameter) so the deploy fails with the reason.
    """
    controller = task.context.patching
    if controller is None:
        return None
    release = str((task.node.instance_info or {}).get("sw_version")
                  or controller.running_release)
    patch_ids = controller.installed_patch_ids(release)
    if not patch_ids:
        return None
    params = command_params(task, release)
    LOG.info("Node %s: installing the Applied patches of release %s (%s) into the new "
             "root", task.node.uuid, release, ", ".join(patch_ids))
    # The step shown in last_error when this fails ("Deploy step install_patches failed").
    task.update(deploy_step={"interface": "deploy", "step": "install_patches",
                             "priority": 0, "args": {}, "reboot_requested": False,
                             "abortable": False})
    agent.command(COMMAND, params, wait=False)
    result = agent.wait_done(COMMAND).result or {}
    info = dict(task.node.driver_internal_info or {})
    info["ramdisk_patches"] = {"sw_version": release, "patches": patch_ids,
                               "upgrade": result.get("upgrade", []),
                               "install": result.get("install", [])}
    task.update(driver_internal_info=info)
    LOG.info("Node %s: patches installed into the new root: upgraded %s, installed %s",
             task.node.uuid, result.get("upgrade"), result.get("install"))
    return result
