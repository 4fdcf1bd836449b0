"""Install an offered update into the passive slot (spec §1.1-1.2, AOSP "Life of an A/B
update"), never making bootable anything that did not verify.

1. The offer's signature is checked before any byte is fetched: a full image's
   ``MetalcastSignature`` (wire/image_signature.py) binds its SHA-256, size and
   version to the trusted update key; a delta's header carries its own signature.
2. The passive slot is marked unbootable (priority 0, no tries, not successful): a
   crash from here on leaves firmware booting the active slot.
3. Full image: streamed into the slot, hashed on the fly, resumable from a checkpoint
   (slotwrite.py). Delta: the payload is fetched to the state dir, its SHA-256 checked,
   and applied with the ACTIVE slot as source in one pass (slotdelta.py: signature,
   data and every operation's bytes checked against their signed digests) - or, for
   a delta from the version the passive slot holds (``Offer.base == "passive"``), in
   place: every byte of the result checked in one read of the slot before the first
   write, then only the changed ranges written, read back and checked.
4. The whole-slot SHA-256 must equal the signed one (full image) - or every operation
   digest matched (delta) - before flatcar-postinst's ``cgpt add -S0 -T1`` +
   ``cgpt prioritize`` (slots.SlotDisk.mark_for_trial) in one atomic GPT rewrite.

Any failure raises UpdateEngineError with the update_engine code to report; the slot
stays unbootable.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ed25519

from ramdisk_agent.errors import AgentError, UpdateEngineError
from ramdisk_agent.host.update import slotdelta
from ramdisk_agent.host.update.slotdev import SlotLayout, SlotRef, slot_path
from ramdisk_agent.host.update.slotwrite import stream_into
from ramdisk_agent.host.update.state import Offer
from ramdisk_agent.ramdisk.delta import deploy as delta_deploy
from ramdisk_agent.ramdisk.download import DownloadOptions
from ramdisk_agent.wire import image_signature
from ramdisk_agent.wire.errors import WireError

LOG = logging.getLogger(__name__)
HASH_MISMATCH, SIZE_MISMATCH, VERIFICATION_ERROR = 10, 11, 12
SET_BOOTABLE_ERROR, DELTA_EXECUTION_ERROR = 6, 28
DELTA_FILE = "payload.delta"
TRIES = 1          # flatcar-postinst: one try, then gptprio falls back


class Installer:
    def __init__(self, layout: SlotLayout, key: ed25519.Ed25519PublicKey | None,
                 scratch_dir: str,
                 options: DownloadOptions | None = None, host: str = ""):
        self.layout, self._key, self.scratch_dir = layout, key, scratch_dir
        self.options, self.host = options or DownloadOptions(), host

    @property
    def key(self) -> ed25519.Ed25519PublicKey:
        if self._key is None:
            raise UpdateEngineError("no update key is configured: set UPDATE_KEY= to the "
                                    "appliance's 'metalcast image pubkey'", VERIFICATION_ERROR)
        return self._key

    def install(self, offer: Offer, active: SlotRef, passive: SlotRef, *, resume_from: int = 0,
                checkpoint: Callable[[int], None] = lambda offset: None,
                progress: Callable[[float], None] = lambda fraction: None) -> None:
        """Write and verify ``offer`` into ``passive``, then make it the next boot."""
        if offer.slot != passive.number:
            raise UpdateEngineError(f"the offer was for partition {offer.slot}, the passive "
                                    f"slot is {passive.number}: starting over", 1)
        if not offer.is_delta:
            self._check_signature(offer)
            if offer.size > passive.size:
                raise UpdateEngineError(f"version {offer.version} is {offer.size} bytes, "
                                        f"slot {passive.label} holds {passive.size}",
                                        SIZE_MISMATCH)
        self.layout.gpt.mark_unbootable(passive.number)
        if offer.is_delta:
            self._delta(offer, active, passive, progress)
        else:
            self._full(offer, passive, resume_from, checkpoint, progress)
        try:
            self.layout.gpt.mark_for_trial(passive.number, tries=TRIES)
        except AgentError as exc:
            raise UpdateEngineError(f"could not make slot {passive.label} bootable: "
                                    f"{exc.message}", SET_BOOTABLE_ERROR) from None
        LOG.info("Host %s: version %s verified in slot %s (partition %d): one try, "
                 "priority above the running slot", self.host, offer.version, passive.label,
                 passive.number)

    def _check_signature(self, offer: Offer) -> None:
        try:
            image_signature.verify(self.key, bytes.fromhex(offer.signature or ""),
                                   bytes.fromhex(offer.sha256), offer.size, offer.version)
        except (WireError, ValueError) as exc:
            raise UpdateEngineError(f"version {offer.version} refused: {exc}",
                                    VERIFICATION_ERROR) from None

    def _full(self, offer: Offer, passive: SlotRef, resume_from: int,
              checkpoint: Callable[[int], None], progress: Callable[[float], None]) -> None:
        with slot_path(self.layout.disk, passive) as device:
            if resume_from:
                LOG.info("Host %s: resuming version %s at byte %d of %d", self.host,
                         offer.version, resume_from, offer.size)
            written = stream_into(offer.url, device, offer.size, start=resume_from,
                                  options=self.options, checkpoint=checkpoint,
                                  progress=lambda done: progress(done / offer.size))
        if written.sha256 != offer.sha256:
            checkpoint(0)
            raise UpdateEngineError(f"version {offer.version}: the slot's SHA-256 is "
                                    f"{written.sha256}, the signed one {offer.sha256}",
                                    HASH_MISMATCH)
        LOG.info("Host %s: wrote %d bytes of %s in %.1fs (%.0f MB/s, direct=%s)", self.host,
                 written.size, offer.version, written.seconds,
                 written.size / max(written.seconds, 1e-9) / 1e6, written.direct_io)

    def _delta(self, offer: Offer, active: SlotRef, passive: SlotRef,
               progress: Callable[[float], None]) -> None:
        if offer.size > passive.size + delta_deploy.HEADER_ROOM:
            raise UpdateEngineError(f"the delta to {offer.version} is {offer.size} bytes, "
                                    f"more than the slot it writes: refused", SIZE_MISMATCH)
        os.makedirs(self.scratch_dir, mode=0o700, exist_ok=True)
        payload = os.path.join(self.scratch_dir, DELTA_FILE)
        spec = delta_deploy.DeltaSpec(offer.url, self.key, offer.size, offer.version)
        try:
            delta_deploy.fetch(spec, payload, offer.size, self.options)
            if _sha256_file(payload) != offer.sha256:
                raise UpdateEngineError(f"the delta to {offer.version} does not match "
                                        "its SHA-256", HASH_MISMATCH)
            progress(0.5)
            self._apply(payload, offer, active, passive, progress)
        except (AgentError, WireError, OSError) as exc:
            if isinstance(exc, UpdateEngineError):
                raise
            message = exc.message if isinstance(exc, AgentError) else str(exc)
            raise UpdateEngineError(f"the delta to {offer.version} failed: {message}",
                                    DELTA_EXECUTION_ERROR) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(payload)
        progress(1.0)


    def _apply(self, payload: str, offer: Offer, active: SlotRef, passive: SlotRef,
               progress: Callable[[float], None]) -> None:
        def half(done: float) -> None:
            progress(0.5 + done / 2)
        if offer.base == "passive":        # the passive slot holds the delta's source
            with slot_path(self.layout.disk, passive) as target:
                slotdelta.apply_in_place(payload, target, self.key, offer.version, half)
            return
        with slot_path(self.layout.disk, active) as source, \
                slot_path(self.layout.disk, passive) as target:
            slotdelta.apply_into(payload, source, target, self.key, offer.version, half)


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()

