"""Delta deploys for the ``direct`` interface: try the delta, fall back to the image.

A user asks for one with, besides the usual full-image fields (``image_source`` and
its checksum, which stay required because they are the fallback)::

    instance_info.image_delta_url            http(s) URL of a payload built by
                                             ``metalcast image delta OLD NEW``
    instance_info.image_delta_version        optional: the manifest's version text
                                             (--image-version); the agent refuses
                                             a payload for another version
    instance_info.image_delta_base_checksum  optional: checksum of OLD
                                             ("sha256:<hex>" or bare hex); when the
                                             node is known to run another image the
                                             delta is skipped without a download

The usual way to re-image an active node is ``rebuild`` (no cleaning, so the disk
still holds OLD). ``write_image`` then carries ``image_info["delta"]`` (fields in
ramdisk_agent/ramdisk/delta/deploy.py) with the conductor's public key
(conductor/updates/keys.py). If that step fails - bad signature, another base
image, download or I/O error - the same step is started again on the same agent
without the delta, and only a failure of the full image fails the node.

Outcome in ``driver_internal_info["delta_deploy"]``: ``{"url", "state", "error"?}``
with state ``trying`` -> ``applied`` | ``failed`` (fell back) | ``skipped`` |
``ignored`` (an agent without delta support wrote the full image).
``driver_internal_info["deployed_image_checksum"]`` remembers what the last
successful deploy wrote, for the base check of the next one.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from conductor import errors
from conductor.updates import keys
from ramdisk_agent.wire import checksum
from ramdisk_agent.wire.errors import ChecksumError

if TYPE_CHECKING:
    from conductor.engine.task import Task

LOG = logging.getLogger(__name__)

INFO_KEY = "delta_deploy"
DEPLOYED_KEY = "deployed_image_checksum"


def validate(node) -> None:
    """400 when the delta fields are unusable (the full-image fields are checked apart)."""
    instance = node.instance_info or {}
    url = instance.get("image_delta_url")
    if url is not None and urlparse(str(url)).scheme not in ("http", "https"):
        raise errors.InvalidParameter(
            f"instance_info.image_delta_url must be an http or https URL, not {url!r}.")
    if instance.get("image_delta_base_checksum"):
        normalize_checksum(instance["image_delta_base_checksum"])


def normalize_checksum(value) -> str:
    """"algo:hex" from "algo:hex" or bare hex, by the image checksum policy; 400 when
    unusable (the form ``deployed_image_checksum`` is kept in)."""
    try:
        return str(checksum.parse_text(value, "image_delta_base_checksum"))
    except ChecksumError as exc:
        raise errors.InvalidParameter(f"instance_info: {exc}.") from None


def begin(task: Task) -> None:
    """At the start of a deploy: decide whether this one tries the delta."""
    info = dict(task.node.driver_internal_info or {})
    deployed = info.pop(DEPLOYED_KEY, None)   # the disk is about to change
    info.pop(INFO_KEY, None)
    instance = task.node.instance_info or {}
    url = instance.get("image_delta_url")
    if url:
        info[INFO_KEY] = {"url": url, "state": "trying"}
        base = instance.get("image_delta_base_checksum")
        if base and deployed and normalize_checksum(base) != deployed:
            reason = (f"the node runs image {deployed}, the delta applies to "
                      f"{normalize_checksum(base)}")
            info[INFO_KEY].update(state="skipped", error=reason)
            LOG.warning("Node %s: delta skipped: %s; deploying the full image",
                        task.node.uuid, reason)
    if info != (task.node.driver_internal_info or {}):  # most deploys: nothing to write
        task.update(driver_internal_info=info)


def add_to(task: Task, image_info: dict) -> dict:
    """``image_info`` with the ``delta`` the agent applies, while one is being tried."""
    state = (task.node.driver_internal_info or {}).get(INFO_KEY) or {}
    if state.get("state") != "trying":
        return image_info
    instance = task.node.instance_info or {}
    settings = task.context.settings
    key = keys.load_or_create(keys.default_path(Path(settings.data_dir)))
    delta = {"url": state["url"], "public_key": keys.public_pem(key).decode()}
    if instance.get("image_delta_version"):
        delta["version"] = str(instance["image_delta_version"])
    LOG.info("Node %s: write_image with the delta %s", task.node.uuid, state["url"])
    return dict(image_info, delta=delta)


def fall_back(task: Task, exc: BaseException) -> bool:
    """After write_image failed: True (and recorded) when it was the delta's attempt,
    so the caller starts write_image again with the full image."""
    info = dict(task.node.driver_internal_info or {})
    state = dict(info.get(INFO_KEY) or {})
    if state.get("state") != "trying":
        return False
    reason = errors.error_text(exc)
    state.update(state="failed", error=reason, failed_at=time.time())
    info[INFO_KEY] = state
    task.update(driver_internal_info=info)
    LOG.warning("Node %s: delta failed: %s; falling back to the full image",
                task.node.uuid, reason)
    return True


def finished(task: Task, checksum: dict, agent) -> dict:
    """write_image succeeded: the node's driver_internal_info remembering the image
    now on the disk and the delta's fate, for the caller's next UPDATE.

    An agent that does not know ``image_info["delta"]`` (a stock IPA) writes the full
    image and says nothing about a delta: that is recorded as ``ignored``.
    """
    info = dict(task.node.driver_internal_info or {})
    info[DEPLOYED_KEY] = f"{checksum['os_hash_algo']}:{checksum['os_hash_value']}"
    state = info.get(INFO_KEY)
    if state and state.get("state") == "trying":
        last = agent.last_command()
        result = ((last.result if last else None) or {}).get("deploy_result") or {}
        applied = isinstance(result, dict) and isinstance(result.get("delta"), dict)
        info[INFO_KEY] = dict(state, state="applied" if applied else "ignored")
        LOG.info("Node %s: delta %s %s", task.node.uuid, state.get("url"),
                 "applied" if applied else "ignored by the agent (full image written)")
    return info
