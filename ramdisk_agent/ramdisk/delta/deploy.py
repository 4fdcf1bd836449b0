"""Delta deploys on the agent: ``write_image`` with ``image_info["delta"]``.

The conductor (conductor/drivers/deploy/delta.py) adds to Ironic's ``image_info``::

    "delta": {
        "url":        "http(s)://.../v2.delta"   payload URL (required)
        "public_key": "-----BEGIN PUBLIC KEY..." Ed25519 key the manifest must verify
                                                 with: PEM, or 64 hex digits (required)
        "size":       12345                      exact payload size in bytes (optional)
        "version":    "v2"                       must equal the manifest's version text
                                                 when given (optional)
    }

The payload is downloaded to a scratch file (HttpStream: retries, Range resume),
never more than ``size`` bytes or, without it, than the disk plus the largest
header: a hostile server cannot fill the ramdisk. It is then applied in place onto
the root disk by :func:`ramdisk_agent.ramdisk.delta.apply.apply`, which checks the
signature, the data, and every unchanged range of the disk before it writes.

Any failure raises :class:`DeltaDeployError` ("delta failed: ..."), so the step
fails and the conductor falls back to the full image of the same ``image_info``.
A failure before the first write leaves the disk untouched (it still holds the
base image); after writes began the first MiB is zeroed, as for a full image, so a
half-updated disk never boots and is never reported as deployed.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time

from cryptography.hazmat.primitives.asymmetric import ed25519

from ramdisk_agent.errors import AgentError, DeltaDeployError, InvalidContent
from ramdisk_agent.ramdisk.delta import apply as delta_apply
from ramdisk_agent.ramdisk.download import DownloadOptions, HttpStream
from ramdisk_agent.ramdisk.imagewrite import device_size, wipe_start
from ramdisk_agent.wire import delta_format as fmt
from ramdisk_agent.wire.errors import DeltaError

LOG = logging.getLogger(__name__)
CHUNK = 1 << 20
#: Header room beyond the disk size when the payload size is not given.
HEADER_ROOM = fmt.MAX_MANIFEST_BYTES + (1 << 20)


@dataclasses.dataclass
class DeltaSpec:
    """``image_info["delta"]``, checked once."""

    url: str
    public_key: ed25519.Ed25519PublicKey
    size: int | None = None
    version: str | None = None

    @classmethod
    def from_image_info(cls, info: dict) -> DeltaSpec:
        delta = info.get("delta")
        if not isinstance(delta, dict) or not isinstance(delta.get("url"), str) or \
                not delta["url"].startswith(("http://", "https://")):
            raise InvalidContent("image_info.delta needs an http(s) url")
        if not isinstance(delta.get("public_key"), str):
            raise InvalidContent("image_info.delta needs the public_key (PEM) of the signer")
        size = delta.get("size")
        if size is not None and (not isinstance(size, int) or size <= 0):
            raise InvalidContent(f"image_info.delta.size must be a positive integer, "
                                 f"not {size!r}")
        try:
            key = fmt.load_public_key(delta["public_key"].encode())
        except DeltaError as exc:
            raise DeltaDeployError(f"delta failed: {exc}") from None
        version = delta.get("version")
        return cls(delta["url"], key, size, None if version in (None, "") else str(version))


class _Progress:
    """Logs each stage at 0 % and every further 25 % (one line per event)."""

    def __init__(self, node_uuid: str):
        self.node_uuid, self.stage, self.shown = node_uuid, "", -1
        self.writing = False    #: True once apply() is about to write to the disk

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.writing = self.writing or stage == "write"
        pct = done * 100 // max(total, 1)
        if stage != self.stage:
            self.stage, self.shown = stage, -1
        if pct // 25 > self.shown:
            self.shown = pct // 25
            LOG.info("Node %s: delta %s %d%% (%d of %d bytes)", self.node_uuid, stage, pct,
                     done, total)


def fetch(spec: DeltaSpec, path: str, limit: int, options: DownloadOptions) -> int:
    """Download the payload to ``path``; its size. Refuses more than ``limit`` bytes."""
    if spec.size is not None:
        limit = min(limit, spec.size)
    buffer = memoryview(bytearray(CHUNK))
    size = 0
    with HttpStream(spec.url, options) as stream, open(path, "wb") as out:
        if stream.length is not None and stream.length > limit:
            raise DeltaDeployError(f"delta failed: payload {spec.url} is {stream.length} "
                                   f"bytes, more than the {limit} allowed")
        _check_space(path, stream.length or 0)
        while got := stream.readinto(buffer):
            size += got
            if size > limit:
                raise DeltaDeployError(f"delta failed: payload {spec.url} is larger than "
                                       f"the {limit} bytes allowed")
            out.write(buffer[:got])
    if spec.size is not None and size != spec.size:
        raise DeltaDeployError(f"delta failed: payload {spec.url} is {size} bytes, "
                               f"expected {spec.size}")
    return size


def _check_space(path: str, needed: int) -> None:
    free = shutil.disk_usage(os.path.dirname(path)).free
    if needed > free:
        raise DeltaDeployError(f"delta failed: the payload needs {needed} bytes of scratch "
                               f"space, {os.path.dirname(path)} has {free}")


def write_delta(image_info: dict, disk: str, options: DownloadOptions, node_uuid: str,
                scratch_dir: str | None = None) -> dict:
    """Fetch and apply the delta of ``image_info`` onto ``disk``; the step's figures."""
    spec = DeltaSpec.from_image_info(image_info)
    progress = _Progress(node_uuid)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="metalcast-delta-", dir=scratch_dir) as tmp:
            payload = os.path.join(tmp, "payload.delta")
            size = fetch(spec, payload, device_size(disk) + HEADER_ROOM, options)
            fetched = time.monotonic()
            LOG.info("Node %s: delta payload %s fetched (%d bytes in %.2fs)", node_uuid,
                     spec.url, size, fetched - started)
            result = delta_apply.apply(payload, disk, None, spec.public_key, progress,
                                       version=spec.version)
    except BaseException as exc:
        _fail(disk, node_uuid, progress.writing, exc)
        if isinstance(exc, DeltaDeployError):
            raise
        if isinstance(exc, AgentError):     # download errors
            raise DeltaDeployError(f"delta failed: {exc.message}") from None
        if isinstance(exc, (DeltaError, OSError)):
            raise DeltaDeployError(f"delta failed: {exc}") from None
        raise
    return {"version": spec.version, "url": spec.url, "payload_bytes": size,
            "operations": result.operations, "verified_bytes": result.verified_bytes,
            "written_bytes": result.written_bytes,
            "download_seconds": round(fetched - started, 3),
            "apply_seconds": round(result.seconds, 3), "phases": result.phases}


def _fail(disk: str, node_uuid: str, writing: bool, exc: BaseException) -> None:
    """Log the failure; zero the first MiB if the disk may be half-written."""
    if writing:
        LOG.error("Node %s: delta failed after writes began (%s); wiping the first MiB "
                  "of %s", node_uuid, exc, disk)
        wipe_start(disk)
    else:
        LOG.error("Node %s: delta failed before any write (%s); %s is unchanged",
                  node_uuid, exc, disk)
