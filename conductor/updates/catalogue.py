"""The image catalogue: full images stored content-addressed, signed, and their deltas.

Payloads live in ``<data>/updates/payloads/<sha256 hex>`` (a full image and a delta
alike; the name is the content's hash, so one file serves every row that has those
bytes). An upload streams to a scratch file in the same directory while it is hashed,
then is renamed to its hash: a cut upload leaves nothing behind. Each image is signed
with the appliance's Ed25519 update key (ramdisk_agent/wire/image_signature.py).
When an image is uploaded to a channel, a delta from each earlier image of that
channel is queued and built by one background thread (conductor/updates/
delta_build.py); its state (pending, building, ready, error) is in update_deltas.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import queue
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from conductor import errors
from conductor.db.updates import Delta, Image, UpdateRows
from conductor.updates import delta_build, policy
from ramdisk_agent.wire import image_signature

LOG = logging.getLogger(__name__)
#: metalcast's own Omaha application id (the host agent's default too).
METALCAST_APPID = "{7d6a52c5-3e0b-4a5c-9a8e-6d6574616c63}"
CHUNK = 1 << 20
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
APPID = re.compile(r"\{?[A-Za-z0-9-]{1,62}\}?")
#: Deltas are built from at most this many earlier images of a channel.
MAX_DELTA_SOURCES = 4


def check_name(value: object, what: str) -> str:
    """A version, channel or group name: 1-64 of letters, digits and ``._+-``."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise errors.InvalidParameter(
            f"Invalid {what} {str(value)[:80]!r}: use 1-64 letters, digits, '.', '_', "
            "'+' or '-', starting with a letter or digit.")
    return value


def check_appid(value: object) -> str:
    if not isinstance(value, str) or not APPID.fullmatch(value):
        raise errors.InvalidParameter(
            f"Invalid application id {str(value)[:80]!r}: a GUID such as "
            f"{METALCAST_APPID} is expected.")
    return value.lower()


class Catalogue:
    """Images and deltas: the files in ``root`` and their rows."""

    def __init__(self, rows: UpdateRows, root: Path, key, on_change: Callable[[], None]):
        self.rows, self.root, self.key = rows, Path(root), key
        self.on_change = on_change
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def path(self, sha256: str) -> Path:
        """The payload file named ``sha256`` (NotFound for anything but 64 hex digits
        or a file that is not there)."""
        if not SHA256_HEX.fullmatch(sha256):
            raise errors.NotFound(f"No payload {sha256[:80]!r}.")
        path = self.root / sha256
        if not path.is_file():
            raise errors.NotFound(f"No payload {sha256}.")
        return path

    # -- upload ---------------------------------------------------------------------
    def upload(self, stream: BinaryIO, appid: str, version: str,
               channel: str | None = None) -> Image:
        appid, version = check_appid(appid), check_name(version, "version")
        if channel is not None:
            check_name(channel, "channel")
        if self.rows.image(appid, version) is not None:
            raise errors.Conflict(f"Version {version} of {appid} exists already: delete "
                                  "it first or upload under another version.")
        sha256, size = self._store(stream)
        signature = image_signature.sign(self.key, bytes.fromhex(sha256), size, version)
        if not self.rows.add_image(dict(appid=appid, version=version, channel=channel,
                                        sha256=sha256, size=size,
                                        signature=base64.b64encode(signature).decode())):
            self._drop_unused(sha256)
            raise errors.Conflict(f"Version {version} of {appid} exists already.")
        LOG.info("Image %s version %s stored (%d bytes, sha256 %s)", appid, version, size,
                 sha256)
        if channel is not None:
            self.rows.ensure_channel(appid, channel)
            self.rows.set_channel(appid, channel, version)
            self._queue_deltas(appid, version, channel)
        self.on_change()
        image = self.rows.image(appid, version)
        assert image is not None
        return image

    def _store(self, stream: BinaryIO) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            if size == 0:
                raise errors.InvalidParameter("The image is empty: send the image file "
                                              "as the request body.")
            os.replace(tmp, self.root / digest.hexdigest())
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            if errors.is_disk_full(exc):
                raise errors.InsufficientStorage(path=str(self.root)) from None
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest.hexdigest(), size

    def _queue_deltas(self, appid: str, version: str, channel: str) -> None:
        earlier = sorted((i for i in self.rows.images(appid)
                          if i.channel == channel and policy.below(i.version, version)),
                         key=lambda i: policy.version_key(i.version))
        for image in earlier[-MAX_DELTA_SOURCES:]:
            self.rows.add_delta(appid, image.version, version)
        for delta in self.rows.deltas(appid, "pending"):
            self._queue.put(delta.id)

    # -- delete -----------------------------------------------------------------------
    def delete(self, appid: str, version: str) -> None:
        image = self.rows.image(appid, version)
        if image is None:
            raise errors.NotFound(f"No version {version} of {appid}.")
        dropped = [d.sha256 for d in self.rows.deltas(appid) if d.sha256 and
                   version in (d.from_version, d.to_version)]
        deleted, held = self.rows.delete_image(appid, version)
        if held:
            raise errors.Conflict(
                f"Version {version} is the current version of channel "
                f"{', '.join(held)}: set the channel to another version first "
                f"(metalcast channel set {held[0]} VERSION).")
        for sha256 in [image.sha256, *dropped]:
            self._drop_unused(sha256)
        self.on_change()

    def _drop_unused(self, sha256: str) -> None:
        if not self.rows.sha256_in_use(sha256):
            (self.root / sha256).unlink(missing_ok=True)

    # -- the delta builder ------------------------------------------------------------
    def start(self) -> None:
        for delta in self.rows.deltas():
            if delta.state in ("pending", "building"):   # cut short by a restart
                self._queue.put(delta.id)
        self._thread = threading.Thread(target=self._run, name="delta-builder",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while (delta_id := self._queue.get()) is not None:
            delta = next((d for d in self.rows.deltas() if d.id == delta_id), None)
            if delta is None or delta.state == "ready":
                continue
            try:
                self.build(delta)
            except Exception as exc:
                LOG.exception("Delta %s %s -> %s failed", delta.appid,
                              delta.from_version, delta.to_version)
                self.rows.set_delta(delta.id, state="error", error=str(exc)[:1000])

    def build(self, delta: Delta) -> None:
        """Build one delta now (the worker's step; tests call it directly too)."""
        old = self.rows.image(delta.appid, delta.from_version)
        new = self.rows.image(delta.appid, delta.to_version)
        if old is None or new is None:
            self.rows.set_delta(delta.id, state="error", error="an image was deleted")
            return
        self.rows.set_delta(delta.id, state="building")
        out = self.root / f".delta-{delta.id}"
        try:
            delta_build.build(self.root / old.sha256, self.root / new.sha256, out,
                              self.key, version=new.version)
            sha256, size = self._hash(out)
            os.replace(out, self.root / sha256)
        finally:
            out.unlink(missing_ok=True)
        self.rows.set_delta(delta.id, state="ready", sha256=sha256, size=size, error=None)
        LOG.info("Delta %s %s -> %s ready (%d bytes)", delta.appid, delta.from_version,
                 delta.to_version, size)
        self.on_change()

    @staticmethod
    def _hash(path: Path) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return digest.hexdigest(), size
