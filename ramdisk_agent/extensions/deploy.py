"""``deploy``: get_deploy_steps and execute_deploy_step (``write_image``).

``write_image`` picks the root disk with the node's root device hints
(``properties.root_device``), streams the image onto it (checksum on the fly; the
disk's first MiB is wiped on any failure so the node stays deployable), optionally
reads it back (``--verify-write`` or step arg ``verify: true``) and writes the
config drive when one is given. With ``image_info["delta"]`` it applies a signed
delta payload in place instead (fields and failure policy:
ramdisk_agent/ramdisk/delta/deploy.py); the full-image fields must still be valid, since
the conductor falls back to them when the delta fails.
"""
from __future__ import annotations

import logging

from ramdisk_agent import validate
from ramdisk_agent.commands import Extension, async_command, sync_command
from ramdisk_agent.errors import AgentError, InvalidContent
from ramdisk_agent.extensions.clean import (
    HARDWARE_MANAGER,
    MANAGER_VERSION,
    Step,
    check_step,
    erase_devices_metadata,
    run_step,
    step_entry,
)
from ramdisk_agent.ramdisk import configdrive, hints
from ramdisk_agent.ramdisk.download import DownloadOptions
from ramdisk_agent.ramdisk.imagewrite import ImageSpec, write_image

LOG = logging.getLogger(__name__)


def check_write_image(args: dict, params: dict) -> None:
    """write_image's args (image_info: URL, hash, format, delta; configdrive; verify)
    and the node's root device hints, in the request."""
    where = "step.args."
    image_info = validate.field(args, "image_info", "an object", where, required=True)
    ImageSpec.from_image_info(image_info)
    if image_info.get("delta") is not None:
        # Imported only for a delta: it pulls in cryptography (see _write_delta).
        from ramdisk_agent.ramdisk.delta.deploy import DeltaSpec
        try:
            DeltaSpec.from_image_info(image_info)
        except AgentError as exc:   # an unreadable public key is a bad parameter too
            raise InvalidContent(exc.message) from None
    if args.get("configdrive"):
        validate.field(args, "configdrive", "a string", where)
    validate.field(args, "verify", "a boolean", where)
    node = params.get("node") or {}
    hints.check((node.get("properties") or {}).get("root_device"))


def write_image_step(extension, args, node=None, **_ignored):
    agent = extension.agent
    image_info = args["image_info"]
    spec = ImageSpec.from_image_info(image_info)
    root_hints = ((node or agent.node).get("properties") or {}).get("root_device")
    disk = hints.select_root_disk(agent.disks(), root_hints)
    options = DownloadOptions(insecure=agent.config.insecure, ca_file=agent.config.ca_file)
    if image_info.get("delta") is not None:
        summary = _write_delta(agent, image_info, disk.name, options)
    else:
        summary = _write_full(agent, spec, disk.name, options, args)
    agent.root_disk = disk.name
    if args.get("configdrive"):
        configdrive.write(disk.name, args["configdrive"], options)
        summary["configdrive"] = True
    return summary


def _write_full(agent, spec: ImageSpec, disk: str, options, args) -> dict:
    LOG.info("Node %s: writing %s (%s) to %s", agent.node_uuid, spec.url, spec.disk_format,
             disk)
    verify = bool(args.get("verify", agent.config.verify_write))
    result = write_image(spec, disk, options, verify=verify,
                         scratch_dir=agent.config.scratch_dir)
    return {"disk": disk, "bytes": result.size, "seconds": round(result.seconds, 3),
            "direct_io": result.direct_io, "resumes": result.resumes,
            "verified": result.verified, "configdrive": False}


def _write_delta(agent, image_info: dict, disk: str, options) -> dict:
    """Apply ``image_info["delta"]`` in place (ramdisk_agent/ramdisk/delta/deploy.py)."""
    # Imported here: the delta code (and cryptography) would add to every agent's
    # start-up, and most deploys write a full image.
    from ramdisk_agent.ramdisk.delta.deploy import write_delta
    LOG.info("Node %s: applying delta %s to %s", agent.node_uuid,
             (image_info.get("delta") or {}).get("url"), disk)
    delta = write_delta(image_info, disk, options, agent.node_uuid,
                        scratch_dir=agent.config.scratch_dir)
    return {"disk": disk, "bytes": delta["written_bytes"],
            "seconds": round(delta["download_seconds"] + delta["apply_seconds"], 3),
            "verified": True, "configdrive": False, "delta": delta}


DEPLOY_STEPS = {"write_image": Step(write_image_step, check_write_image),
                "erase_devices_metadata": Step(erase_devices_metadata)}


class DeployExtension(Extension):
    name = "deploy"

    @sync_command(validate=validate.node_and_ports)
    def get_deploy_steps(self, node=None, ports=None, **_ignored):
        return {"deploy_steps": {HARDWARE_MANAGER: [step_entry("write_image", 0, False),
                                                    step_entry("erase_devices_metadata", 0)]},
                "hardware_manager_version": MANAGER_VERSION}

    @async_command(validate=lambda params: check_step(params, DEPLOY_STEPS, "deploy"))
    def execute_deploy_step(self, step, node=None, ports=None, deploy_version=None,
                            **_ignored):
        return run_step(self, step, DEPLOY_STEPS, "deploy", node=node)
