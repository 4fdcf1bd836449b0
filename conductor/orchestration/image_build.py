"""The image-update strategy's build (metalcast's own type, issue 15 item 5): a
rolling re-image of the active hosts through the ramdisk (``rebuild``), stage by
stage, with a delta payload when the strategy names one (the agent falls back to
the full image when the delta does not apply: conductor/drivers/deploy/delta.py).

Checks, in order: blocking alarms ("active alarms present", as the patch strategy);
no host locked ("all hosts must be unlocked to be re-imaged": a rebuild is refused
in maintenance); hosts already running the image (the checksum their last deploy
wrote) are skipped; none left: "no hosts need to be re-imaged". Stages: one host
each (serial) or up to max-parallel (parallel), by name, the active controller (the
host this appliance runs on) last. Steps: query-alarms (fail), rebuild-hosts,
system-stabilize (30 s). A rebuild has no inverse: an abort re-images nothing back,
and a host whose rebuild failed stays in ``deploy failed``, from which an operator
(or a new strategy) rebuilds it again.
"""
from __future__ import annotations

from typing import Any

from conductor.orchestration.model import Stage, Step
from conductor.orchestration.patch_build import NO_REBOOT_DELAY, Snapshot, blocking_alarms
from conductor.orchestration.patch_build import step as make_step
from ramdisk_agent.wire import checksum

REBUILD_TIMEOUT = 3600
STAGE = "image-update-hosts"


def build_steps(restrictions: str) -> list[Step]:
    return [make_step("query-alarms", fail=False, restrictions=restrictions),
            Step("query-hosts", 60)]


def instance_info(options: dict[str, Any]) -> dict[str, Any]:
    """What a host's instance_info gets for its rebuild (delta fields only with one)."""
    info = {"image_source": options["image"], "image_checksum": options["image-checksum"],
            "image_delta_url": options.get("delta-url")}
    if options.get("delta-url") and options.get("delta-version"):
        info["image_delta_version"] = options["delta-version"]
    return info


def build(options: dict[str, Any], snap: Snapshot) -> tuple[str, list[Stage]]:
    if blocking_alarms(snap.alarms, options["alarm-restrictions"]):
        return "active alarms present", []
    hosts = sorted((h for h in snap.hosts.values() if h.in_inventory),
                   key=lambda h: (h.name == snap.local_host, h.name))
    if any(h.locked for h in hosts):
        return "all hosts must be unlocked to be re-imaged", []
    wanted = str(checksum.parse_text(options["image-checksum"], "image-checksum"))
    todo = [h for h in hosts if h.image_checksum != wanted]
    if not todo:
        return "no hosts need to be re-imaged", []
    size = 1 if options["worker-apply-type"] == "serial" else \
        options["max-parallel-worker-hosts"]
    info = instance_info(options)
    stages = []
    for i in range(0, len(todo), size):
        group = todo[i:i + size]
        stages.append(Stage(STAGE, [
            make_step("query-alarms", fail=True),
            make_step("rebuild-hosts", group, timeout=REBUILD_TIMEOUT, instance_info=info),
            make_step("system-stabilize", timeout=NO_REBOOT_DELAY)]))
    return "", stages
